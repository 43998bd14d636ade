import json
import threading

from alignment.config import InterventionConfig, TrainConfig
from alignment.timing import Phases, phase, read_phases, recording
from alignment.train import train
from tests.unit.alignment.test_frozen_paths import interchange_for


def test_phases_add_up_only_inside_recording(tmp_path):
    outside = Phases()
    with phase("lost"):  # nothing is recording: a no-op
        pass
    phases = Phases()
    with recording(phases):
        for _ in range(3):
            with phase("step"):
                pass
        with phase("eval"):
            pass
    with phase("after"):
        pass
    assert phases.counts == {"step": 3, "eval": 1}
    assert list(phases.seconds) == ["step", "eval"] and all(s >= 0 for s in phases.seconds.values())
    assert outside.counts == {}
    phases.write(tmp_path / "timings.json")
    assert read_phases(tmp_path / "timings.json") == json.loads((tmp_path / "timings.json").read_text())
    assert read_phases(tmp_path / "timings.json")["step"]["count"] == 3
    assert read_phases(tmp_path / "missing.json") == {}


def test_another_thread_records_into_its_own_phases():
    mine, theirs = Phases(), Phases()

    def other() -> None:
        with recording(theirs), phase("theirs"):
            pass

    with recording(mine):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        with phase("mine"):
            pass
    assert mine.counts == {"mine": 1} and theirs.counts == {"theirs": 1}


def test_train_counts_every_step_and_evaluation(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    answers = interchange.frozen.table.input_ids.new_tensor(
        sorted({int(x) for x in (*pairs.pairs.labels.tolist(), *pairs.pairs.base_labels.tolist())}))
    phases = Phases()
    with recording(phases):
        train(interchange, pairs, pairs, answers, InterventionConfig(),
              TrainConfig(batch_size=4, max_steps=7, eval_every=3, log_every=1))
    assert phases.counts == {"step": 7, "dev_eval": 3}  # evaluations at steps 3, 6 and the last
