"""Distributed training: `t2igan train` under torchrun (2 CPU processes, gloo) gives the
parameters of the same run on one process, and resumes on a different number of processes;
every GAN family (and STREAM) trains on 2 processes to the weights of the 1-process run on the
same global batch (their noise, conditioning-augmentation noise, mismatched pairs, BatchNorm
statistics, DAMSM and caption losses are those of the global batch; the gradients averaged).

Tolerance: the 2-process gradients are averages of two half-batch means and the batch
statistics are summed across processes, so they differ from the one-process figures by
float rounding (~1e-7 relative); Adam divides by sqrt(v) and after 3 steps the parameters
agree to ~1e-5. A wrong mismatched-caption pairing, noise draw or gradient scale differs by
~lr = 1e-4..4e-4 per step, far above the tolerance used (rtol 1e-3, atol 2e-5).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # the worker of test_every_gan_family_two_processes_equal_one (under torchrun)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def torchrun(config: Path | None, overrides: list[str], nproc: int = 2, worker: Path | None = None,
             script: str | None = None, extra: tuple = ()) -> None:
    """`t2igan train CONFIG ...` under torchrun, as a user runs it (or, with ``worker``, the runs it
    lists trained one after the other in the same two processes: one start-up for all). ``script``:
    the test file whose ``--worker`` reads ``worker`` (default this one's :func:`_worker`); ``extra``:
    more arguments for it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    what = ([script or __file__, "--worker", str(worker), *map(str, extra)] if worker
            else ["-m", "t2igan.cli", "train", str(config), *overrides])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *what]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def train_here(task: str, overrides: list[str], resume: bool = False) -> None:
    """The same run on this one process (no interpreter start-up: that dominates at this size)."""
    from t2igan.train.run import build_training
    from t2igan.config import load_config

    threads = torch.get_num_threads()
    try:
        build_training(load_config(None, overrides, task=task), resume=resume).fit()
    finally:
        torch.set_num_threads(threads)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "modules.safetensors"))


def initial_weights(task: str, overrides: list[str]) -> dict[str, torch.Tensor]:
    """The seeded initial weights of a run (built in this process, not trained)."""
    from t2igan.train.run import build_training
    from t2igan.config import load_config

    tr = build_training(load_config(None, overrides, task=task), resume=False)
    return {f"{n}/{k}": v.detach().clone() for n, m in tr.task.modules.items() for k, v in m.state_dict().items()}


def assert_same(a: dict, b: dict, init: dict, tol: float = 5e-3) -> None:
    """Per tensor, |a - b| is below ``tol`` times the distance training moved it (|a - init|).

    Adam (beta1 = 0 for DF-GAN) divides each gradient by its running RMS, so an element whose
    gradients nearly cancel turns float-rounding differences into visible ones; measured
    against the update, the 2-process runs agree to ~1e-3 (worst tensor) and ~1e-5 (typical),
    while a wrong pairing, noise draw or gradient scale moves it by O(1)."""
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.is_floating_point:
            moved = (a[k] - init[k]).norm()
            assert (a[k] - b[k]).norm() <= tol * moved + 1e-7, (k, (a[k] - b[k]).norm().item(), moved.item())
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.fixture()
def config(tmp_path) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump({"task": "dfgan"}))
    return p


def test_dfgan_two_processes_equal_one(tiny_data, tiny_damsm, tmp_path, config):
    common = {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "text_encoder": str(tiny_damsm), "train.max_steps": 3,
              "train.threads": 1}
    init = initial_weights("dfgan", tiny_overrides(tiny_data, tmp_path / "init", **common))
    torchrun(config, tiny_overrides(tiny_data, tmp_path / "two", **common))
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["step"] == 3
    train_here("dfgan", tiny_overrides(tiny_data, tmp_path / "one", **common))
    two, one = weights(tmp_path / "two"), weights(tmp_path / "one")
    assert all(v.abs().max() > 0 for k, v in one.items() if k.endswith(".gamma"))  # it trained: gamma starts at 0
    assert_same(one, two, init)
    # the 2-process checkpoint resumed on 1 process = the 1-process run resumed
    more = {**common, "train.max_steps": 5}
    train_here("dfgan", tiny_overrides(tiny_data, tmp_path / "two", **more), resume=True)
    train_here("dfgan", tiny_overrides(tiny_data, tmp_path / "one", **more), resume=True)
    assert_same(weights(tmp_path / "one"), weights(tmp_path / "two"), init)


@pytest.mark.slow  # ~30 s: a torchrun start-up of its own
def test_damsm_two_processes_equal_one(tiny_data, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"task": "damsm"}))
    common = {"text.embed_dim": 16, "text.word_dim": 8, "text.dropout": 0.0, "image.width": 4,
              "image.image_size": 32, "train.max_steps": 3, "train.threads": 1}
    init = initial_weights("damsm", tiny_overrides(tiny_data, tmp_path / "init", **common))
    torchrun(config, tiny_overrides(tiny_data, tmp_path / "two", **common))
    train_here("damsm", tiny_overrides(tiny_data, tmp_path / "one", **common))
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert any("running_var" in k for k in one)  # BatchNorm statistics of the global batch are compared too
    assert_same(one, two, init)


# ----------------------------------------------------------------------------- every GAN family
FAMILY_RUNS = ("gan_int_cls", "stackgan", "stackganpp", "attngan", "stream", "mirrorgan")


def family_overrides(task: str, data: Path, damsm: Path, out: Path, stream: Path | None = None) -> list[str]:
    from test_families import SMALL

    o = {**SMALL[task], "data.crop": False, "text_encoder": str(damsm), "train.max_steps": 3, "train.threads": 1}
    if task == "mirrorgan":
        o["stream"] = str(stream)
    return tiny_overrides(data, out, **o)


# A bias added just before a BatchNorm has a zero gradient up to rounding (the normalisation removes
# any constant); Adam's division by sqrt(v) turns that rounding into steps of +-lr of random sign, so
# these tensors move by noise on either run and are compared only for being finite.
BIAS_BEFORE_BATCHNORM = {"netD/projector.projection.0.bias", "caption_cnn/linear.bias"}
# AttnGAN's DAMSM loss (sharp softmaxes: exp(5 * cosine), scale 10) raises the rounding of the
# generator's gradient to ~1e-5 relative at step 0 (measured; D's: ~1e-6), which Adam amplifies in
# small-gradient elements to ~1e-2 of the distance moved after 3 steps; a wrong negative set or
# gradient scale moves the weights by O(1) of it.
TOLERANCE = {"attngan": 3e-2}


def test_every_gan_family_two_processes_equal_one(tiny_data, tiny_damsm, tmp_path):
    """3 steps of each family on 2 processes (one torchrun) = on 1. AttnGAN's DAMSM loss is on
    (its default, the global batch's captions as negatives), BatchNorm everywhere (global statistics)."""
    stream = tmp_path / "stream_base"
    train_here("stream", family_overrides("stream", tiny_data, tiny_damsm, stream))
    runs = {t: family_overrides(t, tiny_data, tiny_damsm, tmp_path / f"{t}_two", stream) for t in FAMILY_RUNS}
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    torchrun(tmp_path, [], worker=tmp_path / "runs.json")
    for t in FAMILY_RUNS:
        summary = json.loads((tmp_path / f"{t}_two" / "train_summary.json").read_text())
        assert summary["processes"] == 2 and summary["step"] == 3, t
        one = family_overrides(t, tiny_data, tiny_damsm, tmp_path / f"{t}_one", stream)
        init = initial_weights(t, family_overrides(t, tiny_data, tiny_damsm, tmp_path / f"{t}_init", stream))
        train_here(t, one)
        w1, w2 = weights(tmp_path / f"{t}_one"), weights(tmp_path / f"{t}_two")
        assert any("running_var" in k for k in w1), t  # BatchNorm statistics of the global batch are compared too
        noise = BIAS_BEFORE_BATCHNORM & w1.keys()
        assert all(torch.isfinite(w2[k]).all() for k in noise)
        keep = lambda w: {k: v for k, v in w.items() if k not in noise}  # noqa: E731
        assert_same(keep(w1), keep(w2), init, tol=TOLERANCE.get(t, 5e-3))


def _worker(runs: Path) -> None:
    from t2igan.config import load_config
    from t2igan.train.run import build_training

    import torch.distributed as dist

    dist.init_process_group("gloo")  # one group for all the runs (the trainer leaves a group it did not make)
    listed = json.loads(runs.read_text())  # {task: overrides}, or [[task, overrides], ...] to train a task twice
    for task, overrides in (listed.items() if isinstance(listed, dict) else listed):
        build_training(load_config(None, overrides, task=task), resume=False).fit()
    dist.destroy_process_group()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]))
