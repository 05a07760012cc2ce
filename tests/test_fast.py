"""Fast-path switches (train.precision / channels_last / compile / adam): each trains, each
stays close to the fp32 reference, and impossible values are refused."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from t2igan import T2IError
from t2igan.config import load_config
from t2igan.data.dataset import Batch
from t2igan.models import dfgan
from t2igan.train import fast

from conftest import dfgan_config, tiny_overrides


def fit(cfg):
    from t2igan.train.run import build_training

    threads = torch.get_num_threads()
    try:
        return build_training(cfg, resume=False).fit()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("switch", [
    {"train.precision": "bf16"},
    {"train.channels_last": True},
    {"train.adam": "foreach"},
    {"train.adam": "fused"},
    {"train.fused_upsample": True},
    # the C++ toolchain is not assumed; tracing takes ~20 s on 2 cores
    pytest.param({"train.compile": True, "train.compile_backend": "aot_eager"}, marks=pytest.mark.slow),
])
def test_dfgan_switch_trains(tiny_data, tiny_damsm, tmp_path, switch):
    s = fit(dfgan_config(tiny_data, tiny_damsm, tmp_path / "run", **switch))
    assert s["step"] == 2
    from safetensors.torch import load_file

    flat = load_file(str(tmp_path / "run" / "checkpoint" / "modules.safetensors"))
    assert all(torch.isfinite(v).all() for v in flat.values())
    assert all(v.is_contiguous() for v in flat.values())  # saved NCHW whatever the training layout


def test_damsm_bf16_channels_last_trains(tiny_data, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "d", **{
        "text.embed_dim": 16, "text.word_dim": 8, "image.width": 4, "image.image_size": 32,
        "train.precision": "bf16", "train.channels_last": True}), task="damsm")
    s = fit(cfg)
    assert s["step"] == 2
    logs = json.loads((tmp_path / "d" / "train_summary.json").read_text())
    assert logs["images_per_s"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs CUDA")
def test_dfgan_fp16_trains(tiny_data, tiny_damsm, tmp_path):
    s = fit(dfgan_config(tiny_data, tiny_damsm, tmp_path / "run", **{"train.precision": "fp16", "train.device": "cuda"}))
    assert s["step"] == 2


@pytest.mark.parametrize("key,value,match", [
    ("train.precision", "fp8", "train.precision must be one of"),
    ("train.adam", "lion", "train.adam must be one of"),
    ("train.precision", "fp16", "fp16 needs a CUDA device"),
])
def test_bad_switch_refused(tiny_data, tiny_damsm, tmp_path, key, value, match):
    if key == "train.precision" and value == "fp16" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    from t2igan.train.run import build_training

    with pytest.raises(T2IError, match=match):
        build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "bad", **{key: value, "train.device": "cpu"}), resume=False)


def _step_pair(tiny_data, tiny_damsm, tmp_path):
    """A DF-GAN step and one batch, for comparing one update under two settings."""
    from t2igan.train.run import build_training

    tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "ref"), resume=False)
    raw = next(tr.batches())
    return tr, tr.to_batch(raw, 0)


def _one_step(tr, batch: Batch, precision: str, channels_last: bool):
    step = copy.deepcopy(tr.task)
    step.wrap(lambda name, m: m)
    if channels_last:
        for m in step.modules.values():
            fast.to_channels_last(m)
        batch = Batch(images=[x.contiguous(memory_format=torch.channels_last) for x in batch.images],
                      tokens=batch.tokens, lengths=batch.lengths, wrong_tokens=batch.wrong_tokens,
                      wrong_lengths=batch.wrong_lengths, index=batch.index)
    step.precision = fast.Precision(precision, "cpu")
    torch.manual_seed(0)
    logs = step.train_step(batch, 0)
    torch.manual_seed(1)
    with torch.no_grad(), step.precision.autocast():
        img = step.netG(torch.randn(4, step.cfg.model.nz), torch.randn(4, step.netG.cond_dim)).float()
    return {k: float(v) for k, v in logs.items()}, img


def test_channels_last_and_bf16_close_to_fp32(tiny_data, tiny_damsm, tmp_path):
    tr, batch = _step_pair(tiny_data, tiny_damsm, tmp_path)
    ref_logs, ref_img = _one_step(tr, batch, "fp32", False)
    cl_logs, cl_img = _one_step(tr, batch, "fp32", True)
    bf_logs, bf_img = _one_step(tr, batch, "bf16", False)
    for k in ref_logs:  # the losses of the step (computed before its updates) and the updated G's images
        assert cl_logs[k] == pytest.approx(ref_logs[k], rel=1e-4, abs=1e-5), k
        assert bf_logs[k] == pytest.approx(ref_logs[k], rel=5e-2, abs=2e-2), k
    torch.testing.assert_close(cl_img, ref_img, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bf_img, ref_img, rtol=0, atol=5e-2)  # bf16: 8 mantissa bits
    assert (bf_img - ref_img).abs().max() > 0  # autocast really ran in bf16


@pytest.mark.parametrize("cin,cout,h", [(4, 4, 1), (6, 3, 4), (3, 5, 7)])
def test_upsample_conv_is_upsample_then_conv(cin, cout, h):
    """The transposed-convolution form of nearest 2x upsampling + 3x3 conv is the same function
    (float64: equal to rounding), including the borders (zero padding)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, 3, 1, 1).double()
    x = torch.randn(2, cin, h, h, dtype=torch.float64)
    ref = conv(torch.nn.functional.interpolate(x, scale_factor=2))
    torch.testing.assert_close(dfgan.upsample_conv3x3(x, conv), ref, rtol=0, atol=1e-12)


def test_fused_upsample_generator_same_function_and_gradients():
    torch.manual_seed(0)
    ref = dfgan.NetG(ngf=4, nz=8, cond_dim=6, imsize=32).double()
    with torch.no_grad():  # away from the identity initialisation of the affines
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    fused = copy.deepcopy(ref)
    assert dfgan.set_fused_upsample(fused) == len(fused.GBlocks)
    assert all(b.fused_upsample for b in fused.GBlocks) and not any(b.fused_upsample for b in ref.GBlocks)
    noise, sent = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    outs = []
    for g in (ref, fused):
        y = g(noise, sent)
        y.square().sum().backward()
        outs.append((y, {n: p.grad for n, p in g.named_parameters()}))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=1e-12)
    for n, grad in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][n], grad, rtol=1e-10, atol=1e-10, msg=n)


def test_fused_upsample_switch_reaches_generator_and_ema(tiny_data, tiny_damsm, tmp_path):
    from t2igan.train.run import build_training

    tr = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "f", **{"train.fused_upsample": True}), resume=False)
    tr.setup_fast_paths()
    for g in (tr.task.netG, tr.ema):
        assert [b.fused_upsample for b in g.GBlocks] == [True] * len(g.GBlocks)
    ref = build_training(dfgan_config(tiny_data, tiny_damsm, tmp_path / "r"), resume=False)
    ref.setup_fast_paths()
    assert not any(b.fused_upsample for b in ref.task.netG.GBlocks)


def test_fused_upsample_refused_without_such_blocks(tiny_data, tmp_path):
    from t2igan.train.run import build_training

    out = tmp_path / "d"
    cfg = load_config(None, tiny_overrides(tiny_data, out, **{
        "text.embed_dim": 16, "text.word_dim": 8, "image.width": 4, "image.image_size": 32,
        "train.fused_upsample": True}), task="damsm")
    with pytest.raises(T2IError, match="train.fused_upsample=true: the damsm step does not support it"):
        build_training(cfg, resume=False)
    assert not out.exists()  # nothing written


def test_global_batchnorm_equals_batchnorm_on_one_process():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    g = fast.GlobalBatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(g(x), bn(x))  # not distributed: plain BatchNorm


def test_mismatched_pairs_follow_the_official_order():
    """The D step pairs image i+1 with caption i (official code: real features rolled by one)."""
    torch.manual_seed(0)
    netD, netC = dfgan.NetD(4, 32), dfgan.NetC(4, 8)
    imgs, sent = torch.randn(5, 3, 32, 32), torch.randn(5, 8)
    f = netD(imgs)
    official = netC(torch.cat((f[1:], f[:1]), 0), sent)
    ours = netC(f, sent[(torch.arange(5) - 1) % 5]).roll(-1, 0)
    torch.testing.assert_close(ours, official, rtol=0, atol=0)
