"""search/: the sweep — hypotheses as Ray Tune trials, ASHA, MLflow, reports — and the CLI."""
