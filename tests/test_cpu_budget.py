"""train.max_cpu_minutes: a run stops on the CPU time of its own process (a budget that does not
shrink when other jobs share the machine), snapshots and train_summary.json record that CPU time,
and the time spent in evaluations during training (train.eval_every) is not charged to it."""
from __future__ import annotations

import json
import time

import pytest

from t2igan import T2IError
from t2igan.train.run import build_training

from conftest import dfgan_config


def burn(seconds: float) -> None:
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass


def summary(run):
    return json.loads((run / "train_summary.json").read_text())["runs"][-1]


def test_stops_on_cpu_time_and_records_it(tiny_data, tiny_damsm, tmp_path):
    run = tmp_path / "run"
    cfg = dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 10 ** 6, "train.max_minutes": 0,
                                                      "train.max_cpu_minutes": 0.01, "train.snapshot_every": 1})
    build_training(cfg, resume=False).fit()
    s = summary(run)
    assert s["stopped_by"] == "max_cpu_minutes"
    assert 0.6 <= s["cpu_seconds"] < 30 and 1 <= s["step"] < 10 ** 6
    snaps = [json.loads(p.read_text()) for p in sorted((run / "snapshots").glob("*/snapshot.json"))]
    assert [x["step"] for x in snaps] == list(range(1, s["step"] + 1))
    cpu = [x["cpu_minutes"] for x in snaps]
    assert cpu == sorted(cpu) and cpu[-1] <= s["cpu_seconds"] / 60 + 0.01
    # a resumed run continues the CPU clock of the first in its snapshots
    cfg2 = dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": s["step"] + 1, "train.max_minutes": 0,
                                                       "train.snapshot_every": 1})
    build_training(cfg2, resume=True).fit()
    last = json.loads((run / "snapshots" / f"step_{s['step'] + 1:07d}" / "snapshot.json").read_text())
    assert last["cpu_minutes"] >= cpu[-1]
    # the budget is the run's, not the invocation's: a resume past it takes one step and stops
    cfg3 = dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 10 ** 6, "train.max_cpu_minutes": 0.01, "train.max_minutes": 0,
                                                       "train.snapshot_every": 1})
    build_training(cfg3, resume=True).fit()
    s3 = summary(run)
    assert s3["stopped_by"] == "max_cpu_minutes" and s3["step"] == s["step"] + 2


def test_evaluations_during_training_are_not_charged(tiny_data, tiny_damsm, tmp_path, monkeypatch):
    import t2igan.eval.during_training as dt

    calls = []
    monkeypatch.setattr(dt, "eval_hook", lambda trainer: calls.append(trainer.step) or burn(0.5))
    common = {"train.max_steps": 3, "train.max_minutes": 0}
    build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "warm", **common), resume=False).fit()  # one-time set-up costs
    build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "plain", **common), resume=False).fit()
    build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "evals", **common, **{"train.eval_every": 1}),
                   resume=False).fit()
    assert calls == [1, 2, 3]  # 1.5 s of CPU burnt in the hook
    plain, evals = summary(tmp_path / "plain")["cpu_seconds"], summary(tmp_path / "evals")["cpu_seconds"]
    assert abs(evals - plain) < 0.75, (plain, evals)


def test_out_of_range_is_refused(tiny_data, tiny_damsm, tmp_path):
    with pytest.raises(T2IError, match="max_cpu_minutes"):
        dfgan_config(tiny_data, tiny_damsm, tmp_path / "r", **{"train.max_cpu_minutes": -1})
