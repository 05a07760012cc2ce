"""Shared fixtures: tiny SynthFlowers data and tiny trained runs, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

THREADS = min(2, os.cpu_count() or 1)
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _same_threads_for_every_test():
    """A test (or a trainer it runs: train.threads) that sets torch's thread count does not carry it into
    the next test: float reductions, and so the last bits of outputs, depend on it."""
    yield
    torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("T2IGAN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set T2IGAN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from t2igan.data.synth import write_synthflowers

    root = tmp_path_factory.mktemp("data") / "sf32"
    write_synthflowers(root, n=120, size=32, seed=0, workers=1, progress=False)
    return root


def first_step(tr) -> dict[str, float]:
    """The logs of step 0 of a built trainer ``tr``, prepared as ``fit`` prepares it (modules and frozen
    parts on the device, fast paths on), on the first batch, with fixed seeds for the batch and the step."""
    for m in tr.task.modules.values():
        m.to(tr.device)
    tr.task.to_device(tr.device)
    tr.setup_fast_paths()
    torch.manual_seed(0)
    batch = tr.to_batch(next(tr.batches()), 0)
    torch.manual_seed(1)
    return {k: float(v) for k, v in tr.task.train_step(batch, 0).items()}


def tiny_overrides(data: Path, out: Path, **extra) -> list[str]:
    o = {
        "data.root": str(data), "data.image_size": 32, "train.out_dir": str(out), "train.batch_size": 8,
        "train.max_steps": 2, "train.progress": False, "train.log_every": 1, "train.sample_every": 0,
        "train.ckpt_every": 0, "train.threads": 0,
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


@pytest.fixture(scope="session")
def tiny_damsm(tiny_data, tmp_path_factory) -> Path:
    from t2igan.train.run import build_training
    from t2igan.config import load_config

    out = tmp_path_factory.mktemp("runs") / "damsm"
    cfg = load_config(None, tiny_overrides(tiny_data, out, **{"text.embed_dim": 32, "text.word_dim": 16,
                                                              "image.width": 8, "image.image_size": 32}), task="damsm")
    build_training(cfg, resume=False).fit()
    return out


def dfgan_config(tiny_data, tiny_damsm, out, **extra):
    from t2igan.config import load_config

    return load_config(None, tiny_overrides(tiny_data, out, **{"model.ngf": 4, "model.ndf": 4, "model.nz": 8,
                                                               "text_encoder": str(tiny_damsm), **extra}), task="dfgan")


@pytest.fixture(scope="session")
def tiny_dfgan(tiny_data, tiny_damsm, tmp_path_factory) -> Path:
    from t2igan.train.run import build_training

    out = tmp_path_factory.mktemp("runs") / "dfgan"
    build_training(dfgan_config(tiny_data, tiny_damsm, out, **{"train.sample_every": 1, "train.snapshot_every": 1}), resume=False).fit()
    return out
