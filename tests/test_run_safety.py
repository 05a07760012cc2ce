"""A training run folder is never lost: an interrupted directory swap is undone, a folder with
earlier outputs is refused without --resume / --overwrite, --overwrite replaces the old run only
once the new one is complete, and RUN/.lock keeps a second process out."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from t2igan import T2IError
from t2igan.cli import main
from t2igan.core import fs
from t2igan.core import weights as ckpt
from t2igan.train import trainer as trainer_mod
from t2igan.train.run import build_training

from conftest import dfgan_config, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
LOCK, STAGE, REPLACED, COMPLETE = ".lock", ".overwrite", ".replaced", ".complete.json"  # names in a run folder


def read_lock(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ----------------------------------------------------------------------------- helpers
def dfgan_overrides(tiny_data, tiny_damsm, out, **extra) -> list[str]:
    """The overrides of conftest.dfgan_config, for `t2igan train CONFIG ...`."""
    return tiny_overrides(tiny_data, out, **{"model.ngf": 4, "model.ndf": 4, "model.nz": 8,
                                             "text_encoder": str(tiny_damsm), **extra})


@pytest.fixture()
def config(tmp_path) -> Path:
    p = tmp_path / "dfgan.yaml"
    p.write_text(yaml.safe_dump({"task": "dfgan"}))
    return p


def tree(run: Path) -> dict[str, bytes]:
    """Every file under ``run`` (relative path -> bytes)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def error_line(err: str) -> str:
    """The one ``error:`` line of a refused command (other stderr lines may only be notes)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert all(ln.startswith(("error:", "note:")) for ln in lines), err
    return errors[0]


def assert_same_weights(a_run: Path, b_run: Path) -> None:
    for name in ("modules.safetensors", "ema.safetensors"):
        a = load_file(str(a_run / "checkpoint" / name))
        b = load_file(str(b_run / "checkpoint" / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def step_of(run: Path) -> int:
    return int(ckpt.load_trainer_state(run / "checkpoint" / "trainer_state.pt")["step"])


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tiny_damsm, tmp_path_factory) -> Path:
    """A 4-step run without interruption (the reference for resumed runs)."""
    out = tmp_path_factory.mktemp("ref") / "full"
    build_training(dfgan_config(tiny_data, tiny_damsm, out, **{"train.max_steps": 4}), resume=False).fit()
    return out


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(p.pid, 0)
    return p.pid


# ----------------------------------------------------------------------------- fs helpers
def test_replace_dir_and_fresh_tmp_keep_the_last_complete_copy(tmp_path):
    """After a crash between the renames (final.old + a partial final.tmp, no final), the next
    save restores final.old before it discards final.tmp, and replace_dir never deletes the only
    complete copy."""
    final = tmp_path / "checkpoint"
    old, tmp = tmp_path / "checkpoint.old", tmp_path / "checkpoint.tmp"
    old.mkdir()
    (old / "w").write_text("complete")
    tmp.mkdir()
    (tmp / "w").write_text("parti")
    fresh = ckpt.fresh_tmp(final)
    assert (final / "w").read_text() == "complete" and not old.exists()
    assert fresh == tmp and list(tmp.iterdir()) == []  # the partial copy is not trusted
    # replace_dir with only final.old on disk: the old copy survives until the new one is in place
    os.replace(final, old)
    (tmp / "w").write_text("new")
    fs.replace_dir(tmp, final)
    assert (final / "w").read_text() == "new" and not old.exists() and not tmp.exists()
    # recover_dir: nothing to do when final exists; a lone final.tmp is never promoted
    assert fs.recover_dir(final) is None
    shutil.rmtree(final)
    tmp.mkdir()
    assert fs.recover_dir(final) is None and not final.exists()


# ----------------------------------------------------------------------------- the crash window
def simulate_crash_between_renames(run: Path) -> None:
    """What a crash between `checkpoint -> checkpoint.old` and `checkpoint.tmp -> checkpoint`
    leaves: the complete old copy and a partial new one."""
    os.replace(run / "checkpoint", run / "checkpoint.old")
    tmp = run / "checkpoint.tmp"
    tmp.mkdir()
    real = (run / "checkpoint.old" / "modules.safetensors").read_bytes()
    (tmp / "modules.safetensors").write_bytes(real[: len(real) // 3])


def test_crash_window_resume_recovers_and_matches_uninterrupted(tiny_data, tiny_damsm, tmp_path, uninterrupted):
    run = tmp_path / "half"
    build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 2}), resume=False).fit()
    simulate_crash_between_renames(run)
    summary = build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 4}), resume=True).fit()
    assert summary["step"] == 4 and summary["steps_this_run"] == 2
    assert_same_weights(uninterrupted, run)
    assert not (run / "checkpoint.old").exists() and not (run / "checkpoint.tmp").exists()
    assert [r["step"] for r in json.loads((run / "train_summary.json").read_text())["runs"]] == [2, 4]


def test_crash_window_plain_rerun_is_refused_and_destroys_nothing(tiny_data, tiny_damsm, tmp_path, config, capsys):
    run = tmp_path / "half"
    over = dfgan_overrides(tiny_data, tiny_damsm, run)
    assert main(["train", str(config), *over]) == 0
    simulate_crash_between_renames(run)
    before = tree(run)
    capsys.readouterr()
    assert main(["train", str(config), *over]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(run) in line and "--resume" in line and "--overwrite" in line
    after = tree(run)
    # every file is still there, byte for byte; the old checkpoint is back in its place
    for rel, data in before.items():
        moved = rel.replace("checkpoint.old", "checkpoint", 1) if rel.startswith("checkpoint.old") else rel
        assert after.get(rel, after.get(moved)) == data, rel
    assert set(after) == {rel.replace("checkpoint.old", "checkpoint", 1) for rel in before}
    assert step_of(run) == 2


def test_injected_crash_between_the_two_renames(tiny_data, tiny_damsm, tmp_path, uninterrupted, monkeypatch):
    """The process dies (here: raises) between the two os.replace calls of the checkpoint swap at
    step 4; the step-2 checkpoint survives, the lock is released, --resume continues from it."""
    real_replace = os.replace

    class CrashingOs:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            src, dst = Path(src), Path(dst)
            if src.name == "checkpoint.tmp" and dst.name == "checkpoint" and (dst.parent / "checkpoint.old").exists():
                raise RuntimeError("injected crash between the renames")
            return real_replace(src, dst)

    run = tmp_path / "crash"
    tr = build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 4, "train.ckpt_every": 2}),
                        resume=False)
    monkeypatch.setattr(fs, "os", CrashingOs())
    with pytest.raises(RuntimeError, match="injected crash"):
        tr.fit()
    monkeypatch.undo()
    assert not (run / "checkpoint").exists() and (run / "checkpoint.old" / "trainer_state.pt").is_file()
    assert not (run / LOCK).exists()  # released on the way out
    with pytest.raises(T2IError, match="already holds a checkpoint; pass --resume"):  # restored, then refused
        build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 4}), resume=False)
    assert step_of(run) == 2
    summary = build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 4}), resume=True).fit()
    assert summary["step"] == 4 and summary["steps_this_run"] == 2
    assert_same_weights(uninterrupted, run)


# ----------------------------------------------------------------------------- refusal without a flag
@pytest.mark.parametrize("damage", ["none", "checkpoint deleted", "only config and logs"])
def test_plain_rerun_on_earlier_outputs_is_refused_byte_identical(tiny_data, tiny_damsm, tmp_path, config, capsys, damage):
    run = tmp_path / "run"
    over = dfgan_overrides(tiny_data, tiny_damsm, run, **{"train.sample_every": 1, "train.snapshot_every": 1})
    assert main(["train", str(config), *over]) == 0
    if damage == "checkpoint deleted":
        shutil.rmtree(run / "checkpoint")
    elif damage == "only config and logs":  # e.g. a run killed before its first save
        for p in run.iterdir():
            if p.name not in ("config.yaml", "logs"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    before = tree(run)
    mtimes = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    assert main(["train", str(config), *over]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(run) in line and "--overwrite" in line and "--resume" in line
    assert tree(run) == before
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == mtimes
    if damage != "none":
        assert main(["train", str(config), *over, "--resume"]) == 2
        assert "no checkpoint" in error_line(capsys.readouterr().err)
        assert tree(run) == before


# ----------------------------------------------------------------------------- --overwrite
def test_overwrite_replaces_the_run_once_complete(tiny_data, tiny_damsm, tmp_path, config, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, run, **{"train.sample_every": 1})]) == 0
    old = tree(run)
    new_over = dfgan_overrides(tiny_data, tiny_damsm, run, **{"train.max_steps": 3})
    # a new run that fails before it is complete leaves the old one as it was
    monkeypatch.setattr(trainer_mod.Trainer, "write_samples", lambda self: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        main(["train", str(config), *new_over, "--overwrite"])
    monkeypatch.undo()
    assert {k: v for k, v in tree(run).items() if not k.startswith(STAGE)} == old
    assert not (run / LOCK).exists()
    # the complete new run replaces every old output
    capsys.readouterr()
    assert main(["train", str(config), *new_over, "--overwrite"]) == 0
    assert str(run) in capsys.readouterr().out
    names = sorted(p.name for p in run.iterdir())
    assert names == ["checkpoint", "config.yaml", "logs", "pipeline", "samples", "train_summary.json"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["captions.txt", "step_0000003.png"]
    s = json.loads((run / "train_summary.json").read_text())
    assert s["step"] == 3 and [r["step"] for r in s["runs"]] == [3]
    assert s["pipeline"] == str(run / "pipeline") and s["samples"] == str(run / "samples" / "step_0000003.png")
    assert step_of(run) == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 3
    # the same as a fresh run of that config elsewhere
    fresh = tmp_path / "fresh"
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, fresh, **{"train.max_steps": 3})]) == 0
    assert_same_weights(fresh, run)
    assert len(list((run / "logs").iterdir())) == 1  # the old event file went with the old run


def test_overwrite_interrupted_while_moving_in_is_finished_on_next_start(tiny_data, tiny_damsm, tmp_path, monkeypatch):
    run = tmp_path / "run"
    build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.sample_every": 1, "train.snapshot_every": 1}),
                   resume=False).fit()
    real_replace = os.replace
    calls = []

    class CrashingOs:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            calls.append(Path(dst).name)
            if len(calls) == 9:  # part-way: some old outputs moved aside, some new ones moved in
                raise KeyboardInterrupt
            return real_replace(src, dst)

    tr = build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 3}), resume=False, overwrite=True)
    monkeypatch.setattr(trainer_mod, "os", CrashingOs())
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    monkeypatch.undo()
    assert (run / STAGE / COMPLETE).is_file() and (run / REPLACED).is_dir()
    assert not (run / LOCK).exists()
    # the next start (here a refused plain run) finishes the move under the lock
    with pytest.raises(T2IError, match="already holds a checkpoint"):
        build_training(dfgan_config(tiny_data, tiny_damsm, run, **{"train.max_steps": 3}), resume=False)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "config.yaml", "logs", "pipeline", "samples",
                                                     "train_summary.json"]
    assert step_of(run) == 3 and json.loads((run / "train_summary.json").read_text())["step"] == 3
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["captions.txt", "step_0000003.png"]


def test_overwrite_and_resume_guards(tiny_data, tiny_damsm, tmp_path, config, capsys):
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, other), "--overwrite"]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(other) in line and "does not look like a run folder" in line
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, other)]) == 2
    assert str(other) in error_line(capsys.readouterr().err)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, other), "--overwrite", "--resume"]) == 2
    assert "exclude each other" in error_line(capsys.readouterr().err)
    # --overwrite on a new folder is a plain run
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, tmp_path / "new"), "--overwrite"]) == 0
    assert step_of(tmp_path / "new") == 2


# ----------------------------------------------------------------------------- the lock
def test_two_processes_on_one_folder(tiny_data, tiny_damsm, tmp_path, config):
    run = tmp_path / "run"
    over = dfgan_overrides(tiny_data, tiny_damsm, run, **{"train.max_steps": 10 ** 6, "train.max_minutes": 2,
                                                          "train.log_every": 10})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "t2igan.cli", "train", str(config), *over]
    log1 = tmp_path / "first.log"
    with open(log1, "w") as f:
        first = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    second = None
    try:
        deadline = time.monotonic() + 120
        while not ((run / LOCK).is_file() and (run / "logs").is_dir()
                   and read_lock(run / LOCK).get("pid") == first.pid):
            assert first.poll() is None, log1.read_text()
            assert time.monotonic() < deadline, log1.read_text()
            time.sleep(0.1)
        lock = read_lock(run / LOCK)
        assert lock["host"] == socket.gethostname()
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = second.communicate(timeout=100)
        assert second.returncode == 2, out + err
        line = error_line(err)
        assert str(run) in line and f"PID {first.pid}" in line
        assert first.poll() is None  # the first is undisturbed
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, log1.read_text()
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    s = json.loads((run / "train_summary.json").read_text())
    assert s["stopped_by"] == "interrupted" and s["step"] >= 1
    assert step_of(run) == s["step"] and (run / "pipeline" / "model_index.json").is_file()
    assert not (run / LOCK).exists()


def test_stale_lock_is_taken_over(tiny_data, tiny_damsm, tmp_path, config, capsys):
    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid()
    (run / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, run)]) == 0
    err = capsys.readouterr().err
    assert "took over the stale lock" in err and f"PID {pid}" in err
    assert step_of(run) == 2 and not (run / LOCK).exists()
    # and on a finished run whose last save was interrupted: --resume takes it over (one note) and repairs
    (run / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    simulate_crash_between_renames(run)
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, run, **{"train.max_steps": 3}), "--resume"]) == 0
    err = capsys.readouterr().err
    assert err.count("took over the stale lock") == 1 and "restored" in err
    assert step_of(run) == 3 and not (run / LOCK).exists()


def test_live_lock_refuses_before_anything_is_written(tiny_data, tiny_damsm, tmp_path, config, capsys):
    """A lock whose PID is alive on this host (here: pytest's parent) refuses the folder, even
    without an flock held on it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    before = tree(run)
    assert main(["train", str(config), *dfgan_overrides(tiny_data, tiny_damsm, run)]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(run) in line and f"PID {os.getppid()}" in line
    assert tree(run) == before


def test_only_rank_0_locks_and_repairs(tmp_path):
    """Under torchrun the other ranks take no lock and write nothing: they wait for rank 0's
    repair of an interrupted swap, then read the repaired folder."""
    from t2igan.core.distributed import World

    run = tmp_path / "run"
    (run / "checkpoint.old").mkdir(parents=True)
    (run / "checkpoint.old" / "trainer_state.pt").write_text("x")
    done = []
    waiter = threading.Thread(target=lambda: done.append(trainer_mod.open_run_folder(run, World(rank=1, size=2))), daemon=True)
    waiter.start()
    time.sleep(0.5)
    assert not done and not (run / LOCK).exists() and not (run / "checkpoint").exists()  # rank 1 waits, writes nothing
    lock = trainer_mod.open_run_folder(run, World(rank=0, size=2))
    assert lock.held and read_lock(run / LOCK)["pid"] == os.getpid()
    waiter.join(timeout=10)
    assert done == [None] and (run / "checkpoint" / "trainer_state.pt").is_file()
    lock.release()
    assert not (run / LOCK).exists()


def test_evaluator_run_folder_is_not_replaced_without_overwrite(tiny_data, tmp_path, capsys):
    """The evaluator (its own loop) swaps its whole folder in when saved: a plain run on a
    non-empty folder is refused, --overwrite replaces it."""
    out = tmp_path / "evaluator"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    over = [f"data.root={tiny_data}", "data.image_size=32", "train.batch_size=8", "train.max_steps=1",
            "train.progress=false", "train.threads=0", "model.width=8", "model.feature_dim=16", f"train.out_dir={out}"]
    cfg = str(ROOT / "configs" / "evaluator_synth64.yaml")
    assert main(["train", cfg, *over]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(out) in line and "--overwrite" in line
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"] and (out / "metrics.json").read_text() == "{}"
    assert main(["train", cfg, *over, "--overwrite"]) == 0
    assert (out / "metrics.json").read_text() != "{}"
