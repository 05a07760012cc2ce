"""Trainer: smoke runs, checkpoints, resume, refusal to clobber."""
import json

import pytest
import torch
from safetensors.torch import load_file

from t2igan import T2IError
from t2igan.train.run import build_training
from t2igan.data.dataset import EpochBatchSampler, augment, multiscale

from conftest import dfgan_config


def test_damsm_smoke(tiny_damsm):
    s = json.loads((tiny_damsm / "train_summary.json").read_text())
    assert s["step"] == 2 and s["task"] == "damsm"
    assert (tiny_damsm / "pipeline" / "text_encoder" / "model.safetensors").is_file()
    assert (tiny_damsm / "pipeline" / "image_encoder" / "config.json").is_file()
    assert list((tiny_damsm / "logs").iterdir())


def test_dfgan_smoke(tiny_dfgan):
    s = json.loads((tiny_dfgan / "train_summary.json").read_text())
    assert s["step"] == 2 and s["images_per_s"] > 0
    assert (tiny_dfgan / "samples" / "step_0000002.png").is_file()
    flat = load_file(str(tiny_dfgan / "checkpoint" / "modules.safetensors"))
    assert any(k.startswith("netG/") for k in flat) and any(k.startswith("netC/") for k in flat)
    assert all(torch.isfinite(v).all() for v in flat.values())
    snaps = sorted(p.name for p in (tiny_dfgan / "snapshots").iterdir())
    assert snaps == ["step_0000001", "step_0000002"]
    assert json.loads((tiny_dfgan / "snapshots" / "step_0000001" / "snapshot.json").read_text())["step"] == 1


def test_resume_matches_uninterrupted_run(tiny_data, tiny_damsm, tmp_path):
    full = dfgan_config(tiny_data, tiny_damsm, tmp_path / "full", **{"train.max_steps": 4})
    build_training(full, resume=False).fit()
    half = dfgan_config(tiny_data, tiny_damsm, tmp_path / "half", **{"train.max_steps": 2})
    build_training(half, resume=False).fit()
    rest = dfgan_config(tiny_data, tiny_damsm, tmp_path / "half", **{"train.max_steps": 4})
    tr = build_training(rest, resume=True)
    summary = tr.fit()
    assert summary["step"] == 4 and summary["steps_this_run"] == 2
    a = load_file(str(tmp_path / "full" / "checkpoint" / "modules.safetensors"))
    b = load_file(str(tmp_path / "half" / "checkpoint" / "modules.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    ea = load_file(str(tmp_path / "full" / "checkpoint" / "ema.safetensors"))
    eb = load_file(str(tmp_path / "half" / "checkpoint" / "ema.safetensors"))
    for k in ea:
        torch.testing.assert_close(ea[k], eb[k], rtol=1e-5, atol=1e-6, msg=k)
    hist = json.loads((tmp_path / "half" / "train_summary.json").read_text())["runs"]
    assert [r["step"] for r in hist] == [2, 4]


def test_refuses_to_overwrite_a_run(tiny_data, tiny_damsm, tiny_dfgan):
    cfg = dfgan_config(tiny_data, tiny_damsm, tiny_dfgan)
    before = (tiny_dfgan / "checkpoint" / "modules.safetensors").read_bytes()
    with pytest.raises(T2IError, match="already holds a checkpoint; pass --resume"):
        build_training(cfg, resume=False)
    assert (tiny_dfgan / "checkpoint" / "modules.safetensors").read_bytes() == before


def test_resume_without_checkpoint(tiny_data, tiny_damsm, tmp_path):
    with pytest.raises(T2IError, match="no checkpoint"):
        build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "new"), resume=True)


def test_sampler_is_deterministic_and_resumable():
    ncap = [10] * 50
    a = EpochBatchSampler(ncap, 8, seed=3)
    it = iter(a)
    first = [next(it) for _ in range(9)]  # crosses the epoch boundary (6 steps per epoch)
    b = iter(EpochBatchSampler(ncap, 8, seed=3, start_step=4))
    assert [next(b) for _ in range(5)] == first[4:]
    for batch in first:
        for i, j, wi, wj in batch:
            assert wi != i and 0 <= j < 10 and 0 <= wj < 10
    # two replicas split each global batch between them
    r0 = next(iter(EpochBatchSampler(ncap, 8, seed=3, rank=0, num_replicas=2)))
    r1 = next(iter(EpochBatchSampler(ncap, 8, seed=3, rank=1, num_replicas=2)))
    assert sorted(r0 + r1) == sorted(first[0])


def test_augment_and_multiscale():
    x = torch.randint(0, 256, (4, 3, 76, 76), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    y = augment(x, 64, crop=True, flip=True, generator=g)
    assert y.shape == (4, 3, 64, 64) and y.min() >= -1 and y.max() <= 1
    y2 = augment(x, 64, crop=True, flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)
    scales = multiscale(y, 3)
    assert [s.shape[-1] for s in scales] == [16, 32, 64]


def test_ema_decay_schedule():
    from t2igan.train.trainer import ema_decay_at

    assert ema_decay_at(5, 0.999, start=10) == 0.0  # copy before start
    assert ema_decay_at(11, 0.999, start=10) == pytest.approx(2 / 11)
    assert ema_decay_at(10 + 100, 0.999, start=10) == pytest.approx(101 / 110)
    assert ema_decay_at(10 ** 6, 0.999, start=0) == 0.999


def test_dfgan_damsm_weight_schedule():
    """Warm-up from 0, hold, then a linear decay to damsm_lambda_end that is kept afterwards."""
    from types import SimpleNamespace

    from t2igan.families.dfgan import DFGANLossConfig
    from t2igan.families.dfgan import DFGANStep

    def weights(**kw):
        task = SimpleNamespace(cfg=SimpleNamespace(loss=DFGANLossConfig(damsm_lambda=5.0, **kw)))
        return [DFGANStep.damsm_weight(task, s) for s in range(8)]

    assert weights() == [5.0] * 8
    assert weights(damsm_warmup=2, damsm_decay_steps=4, damsm_lambda_end=1.0) == [2.5, 5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0]
    assert weights(damsm_decay_steps=2, damsm_lambda_end=3.0) == [4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]


def test_dfgan_damsm_loss_on_generator(tiny_data, tiny_damsm, tmp_path):
    """The optional AttnGAN DAMSM term: logged, finite, ramped in, and it changes G's update."""
    from t2igan.families.dfgan import DFGANStep

    cfg = dfgan_config(tiny_data, tiny_damsm, tmp_path / "r", **{"loss.damsm_lambda": 5.0, "loss.damsm_warmup": 4})
    tr = build_training(cfg, resume=False)
    assert isinstance(tr.task, DFGANStep) and tr.task.image_encoder is not None
    # the same run named by its encoder spec ("damsm:RUN", as in the text-encoder docs)
    spec = dfgan_config(tiny_data, tiny_damsm, tmp_path / "s", **{"loss.damsm_lambda": 5.0, "text_encoder": f"damsm:{tiny_damsm}"})
    assert build_training(spec, resume=False).task.image_encoder is not None
    assert [tr.task.damsm_weight(s) for s in range(5)] == [1.25, 2.5, 3.75, 5.0, 5.0]
    tr.fit()
    logs = json.loads((tmp_path / "r" / "train_summary.json").read_text())
    assert logs["step"] == 2
    with_term = load_file(str(tmp_path / "r" / "checkpoint" / "modules.safetensors"))
    build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "p"), resume=False).fit()
    plain = load_file(str(tmp_path / "p" / "checkpoint" / "modules.safetensors"))
    # same seed, same data order: D's first update is identical, G's differs through the DAMSM gradient
    g_keys = [k for k in plain if k.startswith("netG/")]
    assert any(not torch.equal(with_term[k], plain[k]) for k in g_keys)
    assert all(torch.isfinite(v).all() for v in with_term.values())


def test_dfgan_damsm_loss_needs_image_encoder(tiny_data, tiny_damsm, tmp_path):
    import shutil

    enc = tmp_path / "enc"
    shutil.copytree(tiny_damsm / "pipeline", enc)
    shutil.rmtree(enc / "image_encoder")
    cfg = dfgan_config(tiny_data, tiny_damsm, tmp_path / "r", **{"loss.damsm_lambda": 1.0, "text_encoder": str(enc)})
    with pytest.raises(T2IError, match="image_encoder"):
        build_training(cfg, resume=False)
