"""The shared GAN training options (``gan.*``, t2igan/families/gan_options.py): each changes the
step in the expected way on a fixed batch, the family defaults are the official step, and bad
values are refused in one line.

A fixed batch: the trainer's first batch with seeds fixed before it and before the step, so two
runs that differ in one option start from the same weights, data and noise; D's raw outputs on
the real pair are computed from those initial weights before the step, and the step's logged
terms are checked against the formulas applied to them.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from t2igan import T2IError
from t2igan.config import load_config
from t2igan.families import gan_options as go
from t2igan.train.run import build_training

from conftest import tiny_overrides
from test_families import SMALL

GAN_FAMILIES = ("dfgan", "gan_int_cls", "stackgan", "stackganpp", "attngan", "mirrorgan")


@pytest.fixture(scope="module")
def stream(tiny_data, tiny_damsm, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "s"
    o = {**SMALL["stream"], "data.crop": False, "text_encoder": str(tiny_damsm)}
    build_training(load_config(None, tiny_overrides(tiny_data, out, **o), task="stream"), resume=False).fit()
    return out


@pytest.fixture()
def make(tiny_data, tiny_damsm, tmp_path, request):
    """make(task, **overrides) -> (trainer, its fixed first batch), ready to step."""
    def build(task: str, name: str = "run", **extra):
        o = {**SMALL[task], "data.crop": False, "text_encoder": str(tiny_damsm), **extra}
        if task == "mirrorgan":
            o["stream"] = str(request.getfixturevalue("stream"))
        tr = build_training(load_config(None, tiny_overrides(tiny_data, tmp_path / name, **o), task=task), resume=False)
        for m in tr.task.modules.values():
            m.to(tr.device)
        tr.task.to_device(tr.device)
        tr.setup_fast_paths()
        torch.manual_seed(0)
        return tr, tr.to_batch(next(tr.batches()), 0)
    return build


def step(tr, batch, s: int = 0) -> dict[str, float]:
    torch.manual_seed(1)
    for m in tr.task.modules.values():
        m.train()
    return {k: float(v) for k, v in tr.task.train_step(batch, s).items()}


def snapshot(tr) -> dict:
    return copy.deepcopy({"modules": {k: m.state_dict() for k, m in tr.task.modules.items()},
                          "optimizers": {k: o.state_dict() for k, o in tr.task.optimizers.items()}})


def restore(tr, state: dict) -> None:
    for k, m in tr.task.modules.items():
        m.load_state_dict(state["modules"][k])
    for k, o in tr.task.optimizers.items():
        o.load_state_dict(copy.deepcopy(state["optimizers"][k]))


@torch.no_grad()
def real_logits(tr, batch) -> torch.Tensor:
    """D's raw outputs on the real, matching pairs with the current weights (train mode, as in the step)."""
    t = tr.task
    if tr.cfg.task == "dfgan":
        _, sent, _ = t.text.batch(batch)
        return t.netC(t.netD(batch.images[-1]), sent)
    _, sent, _ = t.encode(batch)
    return t.netD(batch.images[-1], sent)


# ----------------------------------------------------------------------------- the formulas
def test_adversarial_terms_are_the_formulas():
    x = torch.tensor([-2.0, -0.5, 0.3, 1.7])
    sp = torch.nn.functional.softplus
    want = {"bce": (sp(-x).mean(), sp(x).mean(), sp(-x).mean()),
            "hinge": ((1 - x).clamp(min=0).mean(), (1 + x).clamp(min=0).mean(), -x.mean()),
            "lsgan": ((x - 1).pow(2).mean(), x.pow(2).mean(), (x - 1).pow(2).mean()),
            "wgan": (-x.mean(), x.mean(), -x.mean())}
    for kind, (real, fake, g) in want.items():
        for role, v in (("real", real), ("fake", fake), ("g", g)):
            assert go.adversarial(kind, x, role).item() == pytest.approx(v.item(), rel=1e-6), (kind, role)


def _quadratic_critic(w):
    """critic(x) = (w . x)^2 / 2 per image: its gradient is (w . x) w, of norm |w . x| ||w||."""
    return lambda x: 0.5 * (x * w).flatten(1).sum(1).pow(2)


def test_wgan_gp_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    real, fake, w = (torch.randn(4, 3, 2, 2, generator=g) for _ in range(3))
    w = w[:1]
    eps = torch.rand(4, 1, 1, 1, generator=g)
    gp = go.wgan_gp(_quadratic_critic(w), real, fake, 10.0, eps)
    xh = eps * real + (1 - eps) * fake
    norm = (xh * w).flatten(1).sum(1).abs() * w.norm()
    assert gp.item() == pytest.approx((10.0 * (norm - 1).pow(2).mean()).item(), rel=1e-5)
    assert gp.requires_grad is False or gp.grad_fn is not None  # it is differentiable (create_graph)


def test_r1_and_ma_gp_equal_hand_computations():
    g = torch.Generator().manual_seed(1)
    real, w = torch.randn(4, 3, 2, 2, generator=g), torch.randn(1, 3, 2, 2, generator=g)
    r1 = go.r1_penalty(_quadratic_critic(w), real, 10.0)
    sq = ((real * w).flatten(1).sum(1) * w.norm()).pow(2)
    assert r1.item() == pytest.approx((5.0 * sq.mean()).item(), rel=1e-5)
    cond, v = torch.randn(4, 5, generator=g), torch.randn(5, generator=g)
    ma = go.ma_gp(lambda x, c: (x * w).flatten(1).sum(1) + c @ v, real, cond, 2.0, 6.0)
    assert ma.item() == pytest.approx(2.0 * (w.pow(2).sum() + v.pow(2).sum()).sqrt().pow(6).item(), rel=1e-5)


@pytest.mark.parametrize("kind,step,want", [
    ("constant", 7, 1.0), ("step", 9, 0.25), ("step", 3, 1.0),  # 2 steps per epoch, halving every 2 epochs
    ("linear", 5, 1 - 0.9 * 0.5), ("linear", 20, 0.1),
    ("cosine", 5, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))), ("cosine", 0, 1.0), ("cosine", 12, 0.1)])
def test_each_schedule_is_its_formula(kind, step, want):
    f = go.lr_factor(kind, step, steps_per_epoch=2, step_epochs=2, decay_steps=10, end=0.1)
    assert f == pytest.approx(want)
    assert go.lr_factor(kind, step, steps_per_epoch=2, step_epochs=2, decay_steps=10, end=0.1, warmup=8) == \
        pytest.approx(want * min(1.0, (step + 1) / 8))


# ----------------------------------------------------------------------------- the step, per option
@pytest.mark.parametrize("task", ["gan_int_cls", "dfgan"])
def test_official_is_the_default_and_each_loss_swaps_the_terms(task, make):
    tr, batch = make(task, "official")
    x = real_logits(tr, batch).float()
    base = step(tr, batch)
    official = go.BASE_LOSS[tr.task.loss_kind]
    assert official == ("bce" if task == "gan_int_cls" else "hinge")
    assert base["d_real"] == pytest.approx(go.adversarial(official, x, "real").item(), rel=1e-5)
    tr2, b = make(task, "swap", **{"gan.loss": "bce" if task == "gan_int_cls" else "ma-gp"})
    start = snapshot(tr2)
    assert step(tr2, b) == base  # naming the official loss is the official step, bit for bit
    for loss in ("hinge", "lsgan", "wgan", "bce"):
        if loss == official:
            continue
        restore(tr2, start)  # the initial weights and optimiser state again; gan.loss=LOSS
        tr2.task.loss_kind = go.check_options(go.GANOptions(loss=loss), "")
        assert torch.equal(real_logits(tr2, b), x.to(real_logits(tr2, b).dtype))  # same weights and batch
        logs = step(tr2, b)
        assert logs["d_real"] == pytest.approx(go.adversarial(loss, x, "real").item(), rel=1e-5), loss
        assert logs["d_loss"] != pytest.approx(base["d_loss"], rel=1e-4), loss


def test_wgan_gp_adds_its_penalty_to_the_critic_loss(make):
    plain, b = make("gan_int_cls", "wgan", **{"gan.loss": "wgan", "gan.d_norm": "layer"})
    gp, b2 = make("gan_int_cls", "wgan-gp", **{"gan.loss": "wgan-gp", "gan.d_norm": "layer", "gan.gp_lambda": 10.0})
    a, c = step(plain, b), step(gp, b2)
    assert c["d_real"] == pytest.approx(a["d_real"], rel=1e-6)  # the same critic outputs ...
    assert c["d_penalty"] > 0  # ... plus the penalty, which is in the loss
    assert c["d_loss"] == pytest.approx(c["d_real"] + 0.5 * (c["d_wrong"] + c["d_fake"]) + c["d_penalty"], rel=1e-5)
    assert a["d_real"] == pytest.approx(-a["d_out_real"], rel=1e-5)  # the WGAN critic term is -mean D(real)


@pytest.mark.parametrize("task", GAN_FAMILIES)
def test_every_family_takes_a_penalty_loss(task, make):
    extra = {"gan.loss": "r1"} if task == "dfgan" else {"gan.loss": "wgan-gp", "gan.d_norm": "layer"}
    tr, batch = make(task, **extra)
    logs = step(tr, batch)
    assert logs["d_penalty"] > 0 and all(math.isfinite(v) for v in logs.values())
    assert {"grad_norm_G", "grad_norm_D", "d_out_real", "d_out_fake"} <= logs.keys()


def test_a_gradient_penalty_refuses_batchnorm_in_d_and_d_norm_swaps_it(make):
    with pytest.raises(T2IError) as e:
        make("gan_int_cls", "bn", **{"gan.loss": "wgan-gp"})
    assert "\n" not in str(e.value) and "gan.d_norm=layer" in str(e.value) and "BatchNorm" in str(e.value)
    keep, _ = make("gan_int_cls", "keep")
    n_bn = len(go.batchnorms(keep.task.netD))
    layer, _ = make("gan_int_cls", "layer", **{"gan.loss": "wgan-gp", "gan.d_norm": "layer"})
    none, _ = make("gan_int_cls", "none", **{"gan.d_norm": "none"})
    assert n_bn > 0 and not go.batchnorms(layer.task.netD) and not go.batchnorms(none.task.netD)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in layer.task.netD.modules()) == n_bn
    assert go.batchnorms(layer.task.netG)  # the generator keeps its BatchNorm
    with pytest.raises(T2IError, match="no BatchNorm to replace"):
        make("dfgan", "dfnorm", **{"gan.d_norm": "layer"})


def test_weight_clipping_bounds_d(make):
    tr, batch = make("gan_int_cls", "clip", **{"gan.loss": "wgan", "gan.d_clip": 0.01})
    step(tr, batch)
    assert max(p.abs().max().item() for p in tr.task.netD.parameters()) <= 0.01
    free, b = make("gan_int_cls", "free", **{"gan.loss": "wgan"})
    step(free, b)
    assert max(p.abs().max().item() for p in free.task.netD.parameters()) > 0.01


def _adam_steps(opt) -> int:
    return max(int(s["step"]) for s in opt.state.values()) if opt.state else 0


@pytest.mark.parametrize("task,ratio,want_d,want_g", [("gan_int_cls", {"gan.g_every": 3}, 4, 2),
                                                      ("gan_int_cls", {"gan.d_every": 2}, 2, 4),
                                                      ("dfgan", {"gan.g_every": 2}, 4, 2)])
def test_the_update_ratio_counts_optimiser_steps(task, ratio, want_d, want_g, make):
    tr, batch = make(task, **ratio)
    for s in range(4):
        step(tr, batch, s)
    assert _adam_steps(tr.task.optimizers["D"]) == want_d and _adam_steps(tr.task.optimizers["G"]) == want_g


def test_gradient_clipping_bounds_each_update(make):
    # step 1 with g_every=2 has no G update, so D's gradients after it are those of its own (clipped) update
    tr, batch = make("gan_int_cls", "dclip", **{"gan.grad_clip_d": 1e-3, "gan.g_every": 2})
    logs = step(tr, batch, 1)
    d_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in tr.task.netD.parameters() if p.grad is not None]))
    assert logs["grad_norm_D"] > 1e-2 and d_norm.item() == pytest.approx(1e-3, rel=1e-3)  # clipped from the logged norm
    tr, batch = make("gan_int_cls", "gclip", **{"gan.grad_clip_g": 1e-3})
    logs = step(tr, batch)
    g_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in tr.task.netG.parameters() if p.grad is not None]))
    assert logs["grad_norm_G"] > 1e-2 and g_norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_schedules_set_g_and_d_learning_rates_separately(make):
    tr, batch = make("dfgan", "sched", **{"gan.lr_schedule_g": "cosine", "gan.lr_decay_steps": 10, "gan.lr_end": 0.1,
                                          "gan.lr_schedule_d": "linear", "gan.warmup_d": 8})
    step(tr, batch, 5)
    o = tr.cfg.optim
    g_lr, d_lr = (tr.task.optimizers[k].param_groups[0]["lr"] for k in ("G", "D"))
    assert g_lr == pytest.approx(o.lr_g * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert d_lr == pytest.approx(o.lr_d * (1 - 0.9 * 0.5) * 6 / 8)
    # StackGAN: its own halving (model.lr_decay_epoch) times the gan schedule
    tr, batch = make("stackgan", "stack", **{"model.lr_decay_epoch": 1, "gan.lr_schedule_g": "step", "gan.lr_step_epochs": 2})
    spe = tr.task.steps_per_epoch
    step(tr, batch, 4 * spe)
    assert tr.task.optimizers["G"].param_groups[0]["lr"] == pytest.approx(tr.cfg.optim.lr_g * 0.5 ** 4 * 0.5 ** 2)
    assert tr.task.optimizers["D"].param_groups[0]["lr"] == pytest.approx(tr.cfg.optim.lr_d * 0.5 ** 4)


@pytest.mark.parametrize("key,value,says", [
    ("gan.loss", "wgan_gp", "gan.loss must be one of"), ("gan.d_norm", "batch", "gan.d_norm must be one of"),
    ("gan.lr_schedule_d", "exp", "gan.lr_schedule_d must be one of"), ("gan.g_every", 0, "gan.g_every"),
    ("gan.lr_end", 1.5, "gan.lr_end"), ("gan.d_clip", -1, "gan.d_clip"), ("gan.wgan", 1, "unknown config key 'gan.wgan'")])
def test_bad_values_are_one_line(key, value, says, make, tmp_path):
    with pytest.raises(T2IError) as e:
        make("gan_int_cls", "bad", **{key: value})
    assert "\n" not in str(e.value) and says in str(e.value)
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- the stability monitor
def test_the_monitor_warns_once_and_records_the_step(make, capsys):
    tr, _ = make("gan_int_cls", "mon", **{"train.max_steps": 4, "gan.won_loss": 100.0, "gan.won_steps": 2,
                                          "gan.collapse_diversity": 10.0, "gan.collapse_after": 3})
    summary = tr.fit()
    err = capsys.readouterr().err
    assert summary["monitor"]["d_won_at"] == 2 and summary["monitor"]["g_collapsed_at"] == 3
    assert err.count("D has won") == 1 and err.count("generator collapsed") == 1
    saved = json.loads((tr.run / "train_summary.json").read_text())
    assert saved["monitor"]["d_won_at"] == 2 and "grad_norm_D" in saved["monitor"]["last"]
    assert "d_gap" in saved["monitor"]["last"] and saved["monitor"]["last"]["diversity"] < 10.0
    quiet, _ = make("gan_int_cls", "quiet", **{"train.max_steps": 2, "gan.loss": "wgan", "gan.won_loss": 100.0,
                                               "gan.won_steps": 1})
    assert quiet.fit()["monitor"]["d_won_at"] is None  # not checked for the unbounded critic loss


def test_penalties_under_fp16_loss_scaling_unscale_their_gradients():
    """The AMP recipe: the gradient of the scaled critic output, times 1 / scale, is the unscaled
    gradient, so each penalty equals its fp32 value; without the unscale it would be far off."""
    g = torch.Generator().manual_seed(2)
    real, fake, w = (torch.randn(4, 3, 2, 2, generator=g) for _ in range(3))
    w = w[:1]
    eps = torch.rand(4, 1, 1, 1, generator=g)
    cond, v = torch.randn(4, 5, generator=g), torch.randn(5, generator=g)
    inv = torch.amp.GradScaler("cpu", init_scale=1024.0).scale(torch.ones(())).reciprocal()  # 1 / 1024
    crit, crit2 = _quadratic_critic(w), (lambda x, c: (x * w).flatten(1).sum(1) + c @ v)
    cases = ((lambda s: go.wgan_gp(crit, real, fake, 10.0, eps, inv_scale=s), lambda k: go.wgan_gp(lambda x: k * crit(x), real, fake, 10.0, eps)),
             (lambda s: go.r1_penalty(crit, real, 10.0, inv_scale=s), lambda k: go.r1_penalty(lambda x: k * crit(x), real, 10.0)),
             (lambda s: go.ma_gp(crit2, real, cond, 2.0, 6.0, inv_scale=s), lambda k: go.ma_gp(lambda x, c: k * crit2(x, c), real, cond, 2.0, 6.0)))
    for scaled, plain in cases:
        want = plain(1.0).item()
        assert inv.item() == pytest.approx(1 / 1024)
        assert scaled(inv).item() == pytest.approx(want, rel=1e-5)
        assert scaled(None).item() == want  # no scaler: the fp32 path, unchanged
        assert plain(1024.0).item() != pytest.approx(want, rel=1e-2)  # the scaled gradients, not unscaled
