"""Distributed training with the shared ``gan`` options: 2 gloo processes train the weights of the
1-process run on the same global batch for DF-GAN and every classic GAN family (GAN-INT-CLS,
StackGAN, StackGAN++ with and without HDGAN-style discriminators, HDGAN, AttnGAN, MirrorGAN),
each with a non-default combination of ``gan.*`` options; together they cover every loss
(``wgan-gp``'s interpolation weights are the global batch's draws), ``gan.d_clip``,
``gan.d_every`` / ``gan.g_every``, cosine and linear schedules with warm-up, ``gan.grad_clip_d`` /
``gan.grad_clip_g`` (the clip acts on the averaged gradient: the logged pre-clip norms of the two
runs are equal) and ``gan.d_norm=layer`` / ``none``.

All the 2-process runs share one torchrun (one start-up). Besides the weights (tolerance: that of
``tests/test_distributed.py``, relative to the distance training moved each tensor), each run
checks that its options took effect on both runs: the Adam step counts of ``d_every`` /
``g_every``, the last learning rate of a schedule, D's weights inside ``[-d_clip, d_clip]`` and a
gradient norm above the clip limit.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from test_distributed import (BIAS_BEFORE_BATCHNORM, TOLERANCE, assert_same, family_overrides, initial_weights,
                              torchrun, train_here, weights)

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

STEPS = 3  # train.max_steps of every run (family_overrides)
CLIP = 1e-3  # gan.grad_clip_*: far below every gradient norm here, so each clipped update is rescaled
# run name -> (task, its options); together: every gan.loss but the families' official ones, and every option
RUNS = {
    "dfgan_wgangp": ("dfgan", {"gan.loss": "wgan-gp", "gan.grad_clip_d": CLIP, "gan.grad_clip_g": CLIP,
                               "gan.lr_schedule_g": "cosine", "gan.warmup_g": 2,
                               "gan.lr_schedule_d": "linear", "gan.warmup_d": 2, "gan.lr_end": 0.1}),
    "dfgan_r1": ("dfgan", {"gan.loss": "r1", "gan.gp_lambda": 1.0, "gan.g_every": 2}),
    "dfgan_lsgan": ("dfgan", {"gan.loss": "lsgan", "gan.d_every": 2}),
    "gan_int_cls": ("gan_int_cls", {"gan.loss": "wgan-gp", "gan.d_norm": "layer", "gan.grad_clip_d": CLIP,
                                    "gan.grad_clip_g": CLIP}),
    "stackgan": ("stackgan", {"gan.loss": "r1", "gan.d_norm": "layer", "gan.d_every": 2,
                              "gan.lr_schedule_d": "cosine", "gan.warmup_d": 2}),
    "stackganpp": ("stackganpp", {"gan.loss": "hinge", "gan.g_every": 2, "gan.grad_clip_d": CLIP}),
    "stackganpp_hdgan": ("stackganpp", {"model.hdgan": True, "gan.loss": "wgan-gp", "gan.d_norm": "none",
                                        "gan.lr_schedule_g": "linear", "gan.warmup_g": 2, "gan.grad_clip_g": CLIP}),
    "hdgan": ("hdgan", {"gan.loss": "wgan", "gan.d_clip": 0.01, "gan.g_every": 2, "gan.lr_schedule_d": "linear",
                        "gan.warmup_d": 3}),
    "hdgan_magp": ("hdgan", {"gan.loss": "ma-gp", "gan.d_norm": "layer", "gan.grad_clip_d": CLIP}),
    "attngan": ("attngan", {"gan.loss": "lsgan", "gan.d_norm": "layer", "gan.lr_schedule_g": "cosine",
                            "gan.warmup_g": 2, "gan.grad_clip_g": CLIP}),
    "mirrorgan": ("mirrorgan", {"gan.loss": "wgan", "gan.d_clip": 0.01, "gan.grad_clip_d": CLIP, "gan.d_every": 2}),
}

# HDGAN's generator (not in tests/test_distributed.py; first compared here): a Linear bias just before
# BatchNorm1d and a residual block's last BatchNorm shift, which the next BatchNorm removes (nearest
# upsampling, reflection padding and convolution keep a per-channel constant constant), have zero
# gradients up to rounding; Adam moves them by noise (0 to +-lr per element, of either sign) on
# either run, and the running mean of that next BatchNorm follows their shift: compared for being
# finite only, as BIAS_BEFORE_BATCHNORM.
NO_GRADIENT = {"netG/vec_to_tensor.out.0.bias", "netG/scale_4.0.res_block.1.2.bias", "netG/scale_8.1.2.running_mean"}


def run_overrides(name: str, data: Path, damsm: Path, out: Path, stream: Path) -> list[str]:
    task, opts = RUNS[name]
    return family_overrides(task, data, damsm, out, stream) + [f"{k}={v}" for k, v in opts.items()]


# ----------------------------------------------------------------------------- what each option must leave
def is_d(key: str) -> bool:
    return key.startswith(("netD", "netC/"))


def updates_of(every: int) -> list[int]:
    return [s for s in range(STEPS) if s % every == 0]


def expected_lr(task: str, opts: dict, role: str) -> float | None:
    """The learning rate of ``role``'s last update under the run's schedule (None: no schedule)."""
    from t2igan.config import load_config
    from t2igan.families import gan_options as go

    r = role.lower()
    sched, warm = opts.get(f"gan.lr_schedule_{r}", "constant"), opts.get(f"gan.warmup_{r}", 0)
    if sched == "constant" and warm == 0:
        return None
    cfg = load_config(None, [], task=task)
    step = updates_of(opts.get(f"gan.{r}_every", 1))[-1]
    f = go.lr_factor(sched, step, decay_steps=STEPS, end=opts.get("gan.lr_end", 0.0), warmup=warm)
    return (cfg.optim.lr_g if role == "G" else cfg.optim.lr_d) * f


def check_options(name: str, run: Path) -> None:
    """The options of ``RUNS[name]`` acted on the run in ``run`` (real values, not just no error)."""
    from t2igan.core.weights import load_trainer_state

    task, opts = RUNS[name]
    optims = load_trainer_state(run / "checkpoint" / "trainer_state.pt")["optimizers"]
    for opt_name, state in optims.items():
        role = "G" if opt_name == "G" else "D"
        steps = {int(s["step"]) for s in state["state"].values()}
        assert steps == {len(updates_of(opts.get(f"gan.{role.lower()}_every", 1)))}, (name, opt_name, steps)
        lr = expected_lr(task, opts, role)
        if lr is not None:
            assert state["param_groups"][0]["lr"] == pytest.approx(lr, rel=1e-9), (name, opt_name)
    if "gan.d_clip" in opts:
        c, w = opts["gan.d_clip"], weights(run)
        clipped = [v for k, v in w.items() if is_d(k) and v.dtype.is_floating_point and "running_" not in k]
        assert clipped and max(v.abs().max().item() for v in clipped) <= c, name
        assert sum(v.numel() for v in clipped if v.abs().max() == c) > 0, name  # the clamp was reached
    last = json.loads((run / "train_summary.json").read_text())["monitor"]["last"]
    for role in ("g", "d"):
        if f"gan.grad_clip_{role}" in opts:
            assert last[f"grad_norm_{role.upper()}"] > 10 * opts[f"gan.grad_clip_{role}"], (name, last)


def test_gan_options_two_processes_equal_one(tiny_data, tiny_damsm, tmp_path):
    """3 steps of every run of RUNS on 2 processes (one torchrun) = on 1, options in effect on both."""
    stream = tmp_path / "stream_base"
    train_here("stream", family_overrides("stream", tiny_data, tiny_damsm, stream))
    runs = [[RUNS[n][0], run_overrides(n, tiny_data, tiny_damsm, tmp_path / f"{n}_two", stream)] for n in RUNS]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    torchrun(None, [], worker=tmp_path / "runs.json")
    for name, (task, opts) in RUNS.items():
        two = tmp_path / f"{name}_two"
        summary = json.loads((two / "train_summary.json").read_text())
        assert summary["processes"] == 2 and summary["step"] == STEPS, name
        one = tmp_path / f"{name}_one"
        init = initial_weights(task, run_overrides(name, tiny_data, tiny_damsm, tmp_path / f"{name}_init", stream))
        train_here(task, run_overrides(name, tiny_data, tiny_damsm, one, stream))
        for run in (one, two):
            check_options(name, run)
        w1, w2 = weights(one), weights(two)
        noise = (BIAS_BEFORE_BATCHNORM | NO_GRADIENT) & w1.keys()
        assert all(torch.isfinite(w2[k]).all() for k in noise)
        w1, w2 = ({k: v for k, v in w.items() if k not in noise} for w in (w1, w2))
        try:
            assert_same(w1, w2, init, tol=TOLERANCE.get(task, 5e-3))
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
        # the clip acts on the averaged gradient: the pre-clip norms of both runs are those of the global batch
        last1, last2 = (json.loads((r / "train_summary.json").read_text())["monitor"]["last"] for r in (one, two))
        for k in ("grad_norm_G", "grad_norm_D"):
            if k in last1:
                assert math.isclose(last1[k], last2[k], rel_tol=1e-4, abs_tol=1e-6), (name, k, last1[k], last2[k])
