"""cluster/: beyond one machine: Ray cluster helpers and configs, DeepSpeed-sharded trials."""

from cluster.sharded import concurrent_sharded_trials, run_sharded_trial

__all__ = ["concurrent_sharded_trials", "run_sharded_trial"]
