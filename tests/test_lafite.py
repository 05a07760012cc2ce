"""LAFITE (t2igan/models/lafite.py, t2igan/families/lafite.py) with a tiny random CLIP (tests/clip_fixture.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import first_step, tiny_overrides

from t2igan import T2IError
from t2igan.config import load_config
from t2igan.families.lafite import contrastive_loss, fake_view, perturb
from t2igan.models import lafite
from t2igan.pipeline import Pipeline
from t2igan.train.run import build_training

pytest.importorskip("transformers", reason="LAFITE needs CLIP (pip install 't2igan[clip]')")

CAPS = ["this flower has red petals", "a purple flower with five round petals"]
SMALL = {"model.z_dim": 16, "model.w_dim": 16, "model.map_num": 2, "model.channel_base": 128, "model.channel_max": 8,
         "model.fts_dim": 16, "data.image_size": 16, "train.batch_size": 4}  # 16 px fakes go on CLIP's 32 px canvas


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from clip_fixture import tiny_clip_dir

    return tiny_clip_dir(tmp_path_factory.mktemp("clip"), image_size=32, patch_size=8, width=32, layers=2, proj=16)


def lafite_config(data, clip_dir, out, **extra):
    return load_config(None, tiny_overrides(data, out, **{"clip": str(clip_dir), **SMALL, **extra}), task="lafite")


def tiny_nets(f_dim=8, size=32):
    g = lafite.Generator(z_dim=8, w_dim=8, f_dim=f_dim, img_resolution=size, channel_base=128, channel_max=8,
                         map_num=2, fts_dim=8)
    d = lafite.Discriminator(img_resolution=size, f_dim=f_dim, channel_base=128, channel_max=8)
    return g, d


# ----------------------------------------------------------------------------- networks
def test_shapes_and_stylegan2_names():
    g, d = tiny_nets()
    z, s = torch.randn(4, 8), F.normalize(torch.randn(4, 8), dim=1)
    x = g(z, s)
    assert x.shape == (4, 3, 32, 32) and g.num_ws == 1 + 2 * 3 + 1
    logits, fts = d(x, s)
    assert logits.shape == (4, 1) and fts.shape == (4, 8)
    keys = set(g.state_dict())
    for k in ["mapping.fc0.weight", "mapping.fc1.bias", "mapping.w_avg", "synthesis.b4.const", "synthesis.b4.conv1.weight",
              "synthesis.b8.conv0.weight", "synthesis.b8.conv0.pre_0.weight", "synthesis.b8.conv0.pre_1.weight",
              "synthesis.b8.conv0.affine_0.weight", "synthesis.b8.conv0.noise_strength", "synthesis.b8.conv0.noise_const",
              "synthesis.b32.torgb.affine_0.bias", "synthesis.b32.conv1.bias"]:
        assert k in keys, k
    assert g.synthesis.b8.conv0.affine_0.weight.shape == (g.synthesis.b4.conv1.weight.shape[0], 8 + 8)  # [w, fts] -> in channels
    dkeys = set(d.state_dict())
    for k in ["b32.fromrgb.weight", "b32.conv0.weight", "b32.conv1.weight", "b32.skip.weight", "b16.conv0.weight",
              "b8.skip.weight", "b4.conv.weight", "b4.fc.weight", "b4.fts.weight", "b4.out.weight"]:
        assert k in dkeys, k
    assert "b16.fromrgb.weight" not in dkeys and "b32.skip.bias" not in dkeys
    g.eval()  # eval: constant noise, so the output is a function of (z, sent)
    assert torch.equal(g(z, s), g(z, s))


def test_modulated_conv_equals_explicit_per_sample_conv():
    torch.manual_seed(0)
    x, w, st = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    f = lafite.setup_filter()
    ref = []
    for b in range(3):  # each sample's own weight: scaled over the input channels, each output filter to unit norm
        wb = w * st[b].view(1, 4, 1, 1)
        wb = wb / wb.square().sum([1, 2, 3], keepdim=True).add(1e-8).sqrt()
        ref.append(F.conv2d(x[b:b + 1], wb, padding=1))
    ref = torch.cat(ref)
    for fused in (True, False):
        out = lafite.modulated_conv2d(x, w, st, padding=1, fused_modconv=fused)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    up = [lafite.modulated_conv2d(x, w, st, up=2, padding=1, resample_filter=f, fused_modconv=fu) for fu in (True, False)]
    assert up[0].shape == (3, 5, 16, 16)
    torch.testing.assert_close(up[0], up[1], rtol=1e-5, atol=1e-5)
    # without demodulation (ToRGB): the plain per-sample convolution
    nd = lafite.modulated_conv2d(x, w, st, padding=1, demodulate=False)
    torch.testing.assert_close(nd, torch.cat([F.conv2d(x[b:b + 1], w * st[b].view(1, 4, 1, 1), padding=1) for b in range(3)]),
                               rtol=1e-5, atol=1e-5)
    # the [1,3,3,1] resampling keeps a constant image constant (away from the border)
    c = torch.ones(1, 1, 8, 8)
    assert torch.allclose(lafite.upsample2d(c, f)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))
    assert torch.allclose(lafite.downsample2d(c, f)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))


def test_projection_per_sample_and_official_batch_sum():
    torch.manual_seed(0)
    ep = lafite.DiscriminatorEpilogue(8, 4, f_dim=6)
    x, s = torch.randn(4, 8, 4, 4), F.normalize(torch.randn(4, 6), dim=1)
    ls, f = ep(x, s)
    ep.projection = "batch"
    lb, _ = ep(x, s)
    proj = (f * s).sum(1, keepdim=True)
    base = ls - proj
    torch.testing.assert_close(lb, base + proj.sum(), rtol=1e-5, atol=1e-5)  # the same scalar added to every logit
    with pytest.raises(ValueError, match="projection"):
        lafite.DiscriminatorEpilogue(8, 4, f_dim=6, projection="other")


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_contrastive_loss_equals_hand_computation(lam):
    torch.manual_seed(1)
    a, b, temp = torch.randn(3, 5), torch.randn(3, 5), 0.5
    cos = [[float(F.cosine_similarity(a[i], b[j], dim=0)) for j in range(3)] for i in range(3)]

    def hand(form):
        e = [[math.exp(math.exp(c / temp)) if form == "official" else math.exp(c / temp) for c in row] for row in cos]
        total = 0.0
        for i in range(3):
            row = e[i][i] / sum(e[i])
            col = e[i][i] / sum(e[k][i] for k in range(3))
            if form == "official":
                row, col = row * temp, col * temp
            total += lam * math.log(row) + (1 - lam) * math.log(col)
        return -total / 3

    for form in ("official", "corrected"):
        assert contrastive_loss(a, b, temp, lam, form).item() == pytest.approx(hand(form), rel=1e-5)
    assert contrastive_loss(a, b, 0.0, lam).item() == pytest.approx(-sum(cos[i][i] for i in range(3)) / 3, rel=1e-5)


def test_perturbation_and_fake_view():
    f, n = F.normalize(torch.randn(4, 6), dim=1), F.normalize(torch.randn(4, 6), dim=1)
    p = perturb(f, n, 0.75)
    torch.testing.assert_close(p, F.normalize(0.25 * f + 0.75 * n, dim=1))
    torch.testing.assert_close(p.norm(dim=1), torch.ones(4))
    img = torch.zeros(2, 3, 16, 16)
    canvas = fake_view(img, 32, 0.5)  # smaller than CLIP's input: on a white canvas
    assert canvas.shape == (2, 3, 32, 32) and canvas.sum() == 3 * 2 * (32 * 32 - 16 * 16)
    crop = fake_view(torch.zeros(2, 3, 64, 64), 32, 0.5)
    assert 32 <= crop.size(-1) < 64 and crop.size(-1) == crop.size(-2)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("mix", [0.0, 1.0])
def test_two_steps_export_and_pipeline(tiny_data, tiny_clip, tmp_path, mix):
    out = tmp_path / f"run{mix}"
    tr = build_training(lafite_config(tiny_data, tiny_clip, out, **{"lafite.mixing_prob": mix}), resume=False)
    assert (tr.task.text is None) == (mix == 1.0)
    summary = tr.fit()
    assert summary["step"] == 2
    logs = tr.task.train_step(tr.to_batch(next(tr.batches()), 2), 0)  # step 0: the lazy R1 step too
    for k in ("g_loss", "g_adv", "g_itc", "g_itd", "d_loss", "d_itd", "r1_penalty"):
        assert torch.isfinite(logs[k]), k
    pipe = Pipeline.from_pretrained(out)
    assert pipe.family == "lafite" and pipe.title == "LAFITE" and pipe.info["language_free"] == (mix == 1.0)
    a, b = pipe.generate(CAPS, seed=5, n=2), pipe.generate(CAPS, seed=5, n=2)
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)
    # the same images as the trained EMA generator on the normalised CLIP text features
    sent = F.normalize(tr.task.clip.encode_text(CAPS), dim=-1).repeat_interleave(2, 0)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = tr.ema.eval()(z, sent).float().add(1).div(2).clamp(0, 1)
    torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-5)


def test_clip_frozen_and_itc_gradient_reaches_G_through_it(tiny_data, tiny_clip, tmp_path):
    tr = build_training(lafite_config(tiny_data, tiny_clip, tmp_path / "run"), resume=False)
    step = tr.task
    before = {k: v.clone() for k, v in step.clip.model.state_dict().items()}
    batch = tr.to_batch(next(tr.batches()), 0)
    step.train_step(batch, 0)
    after = step.clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in step.clip.model.parameters())
    # itc alone: its gradient reaches G only through the CLIP image tower
    fts, _ = step.conditions(batch, batch.images[-1])
    step.G.zero_grad(set_to_none=True)
    fake = step.run_G(torch.randn(4, 16), fts)
    step.contra(step.clip_fake(fake), fts).backward()
    grads = [p.grad for p in step.G.synthesis.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in step.clip.model.parameters())


def _one_step(data, clip_dir, out, **switch):
    tr = build_training(lafite_config(data, clip_dir, out, **switch), resume=False)
    return first_step(tr)


def test_fast_paths_channels_last_same_step_and_bf16_finite(tiny_data, tiny_clip, tmp_path):
    ref = _one_step(tiny_data, tiny_clip, tmp_path / "ref")
    nhwc = _one_step(tiny_data, tiny_clip, tmp_path / "nhwc", **{"train.channels_last": True})
    for k in ("g_loss", "g_itc", "d_loss", "r1_penalty"):
        assert nhwc[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-5), k  # the same function in another memory layout
    bf16 = _one_step(tiny_data, tiny_clip, tmp_path / "bf16", **{"train.precision": "bf16"})
    assert all(math.isfinite(v) for v in bf16.values()) and bf16["g_loss"] != ref["g_loss"]


class CaptionFree:
    """A batch with images only: reading anything about its captions fails the test."""

    def __init__(self, images):
        self.images = images

    def __getattr__(self, name):
        raise AssertionError(f"the step read batch.{name}")


def test_language_free_never_reads_captions(tiny_data, tiny_clip, tmp_path):
    cache = tiny_data / ".cache" / "text_embeddings"
    listing = lambda: sorted(cache.rglob("*")) if cache.exists() else []
    before = listing()
    tr = build_training(lafite_config(tiny_data, tiny_clip, tmp_path / "lf", **{"lafite.mixing_prob": 1.0}), resume=False)
    step = tr.task
    assert step.text is None and listing() == before  # no text conditioning, no caption embedded for a cache

    def refuse(*a, **k):
        raise AssertionError("a caption was encoded")

    step.encoder.encode = refuse
    step.clip.encode_text = refuse
    logs = step.train_step(CaptionFree(tr.to_batch(next(tr.batches()), 0).images), 0)
    assert torch.isfinite(logs["g_loss"]) and torch.isfinite(logs["d_loss"])
    # with captions the same batch is refused: the check above does detect a read
    tr0 = build_training(lafite_config(tiny_data, tiny_clip, tmp_path / "cap"), resume=False)
    with pytest.raises(AssertionError, match="the step read batch"):
        tr0.task.train_step(CaptionFree(tr0.to_batch(next(tr0.batches()), 0).images), 0)


@pytest.mark.parametrize("key,value,match", [
    ("lafite.contrastive", "exp", "lafite.contrastive must be one of official, corrected"),
    ("lafite.fake_view", "zoom", "lafite.fake_view must be one of"),
    ("model.projection", "mean", "model.projection must be one of sample, batch"),
    ("lafite.mixing_prob", 1.5, "lafite.mixing_prob"),
    ("lafite.temp", -1, "lafite.temp"),
    ("data.image_size", 48, "data.image_size=48"),
    ("text_encoder", "minilm", "text_encoder='minilm'"),
    ("clip", "/nonexistent/clip", "not found: /nonexistent/clip"),
])
def test_bad_values_are_one_line_errors(tiny_data, tiny_clip, tmp_path, key, value, match):
    out = tmp_path / "bad"
    with pytest.raises(T2IError, match=match) as e:
        build_training(lafite_config(tiny_data, tiny_clip, out, **{key: value}), resume=False)
    assert "\n" not in str(e.value)
    assert not out.exists() or not any(out.iterdir())
