"""What rank 0 of a sharded trial sends: new metric lines once each, a resumable state."""

import torch

from alignment.train import TrainState
from cluster.shard_worker import _RankReports, load_train_state, save_train_state


def test_train_state_round_trips_through_a_checkpoint_file(tmp_path):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    optimizer.param_groups[0]["params"][0].grad = torch.ones(2)
    optimizer.step()
    state = TrainState(3, {"basis.generator": torch.randn(4, 4)}, optimizer.state_dict(),
                       {"basis.generator": torch.zeros(4, 4)}, 0.75, 2, [{"step": 2, "dev_iia": 0.75}])
    save_train_state(state, tmp_path / "state.pt")
    loaded = load_train_state(tmp_path / "state.pt")
    assert (loaded.step, loaded.best_dev_iia, loaded.best_step, loaded.history) == (3, 0.75, 2, state.history)
    torch.testing.assert_close(loaded.intervention["basis.generator"], state.intervention["basis.generator"])
    assert loaded.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)


def test_each_metrics_line_is_sent_once_and_only_when_complete(tmp_path):
    (tmp_path / "config.json").write_text('{"layer": 1}\n')
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 0}\n{"step": 1}\n{"ste')
    reports = _RankReports(0, tmp_path, checkpoints=False)
    first = reports._news()
    assert first == {"config_json": '{"layer": 1}\n', "metrics_lines": '{"step": 0}\n{"step": 1}\n'}
    with open(metrics, "a") as out:
        out.write('p": 2}\n')
    assert reports._news() == {"metrics_lines": '{"step": 2}\n'}
    assert reports._news() == {"metrics_lines": ""}


def test_a_worker_failure_surfaces_as_the_workers_own_exception():
    from ray.train import WorkerGroupError

    from alignment.train import TrialDiverged
    from cluster.sharded import worker_error

    diverged = TrialDiverged("loss became nan at step 3")
    wrapped = WorkerGroupError("rank 0 and 1 failed", {1: TrialDiverged("rank 1"), 0: diverged})
    assert worker_error(wrapped) is diverged
    other = RuntimeError("controller")
    assert worker_error(other) is other
