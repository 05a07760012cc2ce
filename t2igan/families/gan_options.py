"""Training options every GAN family shares: the ``gan`` section of its run config.

Each family's defaults are its official behaviour (``gan.loss: official`` is the family's own
loss, one D and one G update per step, constant learning rates, no clipping), so a preset trains
exactly as before; every other value swaps a part of the step:

- ``gan.loss``: ``bce`` (non-saturating, the classic families), ``hinge``, ``lsgan`` (HDGAN),
  ``wgan`` (critic; pair it with ``gan.d_clip=0.01``), ``wgan-gp`` (WGAN + gradient penalty on
  random interpolates of real and fake images, Gulrajani et al. 2017), ``r1`` (bce + R1 penalty on
  real images, Mescheder et al. 2018), ``ma-gp`` (hinge + DF-GAN's matching-aware penalty on real,
  matching pairs; weight/power ``optim.gp_weight`` / ``optim.gp_power``).
- ``gan.d_norm``: the discriminators' BatchNorm kept (``keep``), swapped for LayerNorm
  (``layer``: ``GroupNorm(1, C)``, normalising each image over C, H, W) or removed (``none``).
  A gradient penalty is taken per image, which BatchNorm breaks by mixing the batch: a penalty
  loss with BatchNorm in D is refused in one line.
- ``gan.d_clip``: clamp every discriminator weight to [-c, c] after each D update (WGAN).
- ``gan.d_every`` / ``gan.g_every``: D updates on steps that are multiples of ``d_every``, G on
  multiples of ``g_every`` (``g_every=5``: 5 D steps per G step, each on its own batch, as WGAN's
  n_critic; ``g_every=2``: G every other step).
- ``gan.grad_clip_g`` / ``gan.grad_clip_d``: clip the gradient norm of each update (0 = off).
- ``gan.lr_schedule_g`` / ``gan.lr_schedule_d``: :func:`lr_factor` times ``optim.lr_g`` / ``lr_d``;
  ``gan.warmup_g`` / ``gan.warmup_d``: linear warm-up steps.
- the stability monitor (read by the trainer): ``gan.won_loss`` / ``gan.won_steps``,
  ``gan.collapse_diversity`` / ``gan.collapse_after``, ``gan.monitor_every``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from t2igan import T2IError
from t2igan.core.config import at_least, in_range, positive
from t2igan.models.blocks import scaled_grad
from t2igan.models.dfgan import matching_aware_gp

LOSSES = ("official", "bce", "hinge", "lsgan", "wgan", "wgan-gp", "r1", "ma-gp")
BASE_LOSS = {"bce": "bce", "hinge": "hinge", "lsgan": "lsgan", "wgan": "wgan", "wgan-gp": "wgan", "r1": "bce",
             "ma-gp": "hinge"}  # the adversarial terms of each loss
PENALTY = {"wgan-gp": "gp", "r1": "r1", "ma-gp": "ma-gp"}  # its gradient penalty on D, if any
SCHEDULES = ("constant", "step", "linear", "cosine")
NORMS = ("keep", "layer", "none")


@dataclass
class GANOptions:
    """Options every GAN family shares (module docstring); defaults: the family's official step."""

    loss: str = "official"  # official | bce | hinge | lsgan | wgan | wgan-gp | r1 | ma-gp
    gp_lambda: float = at_least(10.0, 0)  # wgan-gp penalty weight (Gulrajani: 10) and R1's gamma (penalty gamma/2 E||grad D||^2)
    d_norm: str = "keep"  # keep | layer | none: the discriminators' BatchNorm (a gradient penalty refuses batch)
    d_clip: float = at_least(0.0, 0)  # clamp D weights to [-c, c] after each D update (WGAN: 0.01); 0 = off
    d_every: int = positive(1)  # D updates on steps that are multiples of this
    g_every: int = positive(1)  # G updates on steps that are multiples of this (n D steps per G step: g_every=n)
    grad_clip_g: float = at_least(0.0, 0)  # clip G's gradient norm (0 = off)
    grad_clip_d: float = at_least(0.0, 0)  # clip each D's gradient norm (0 = off)
    lr_schedule_g: str = "constant"  # constant | step | linear | cosine (times optim.lr_g)
    lr_schedule_d: str = "constant"  # the same for optim.lr_d
    lr_step_epochs: int = positive(100)  # step: halve the learning rate every this many epochs
    lr_decay_steps: int = at_least(0, 0)  # linear / cosine: steps from the start to the end value (0 = train.max_steps)
    lr_end: float = in_range(0.0, 0, 1)  # linear / cosine: final factor of the base learning rate
    warmup_g: int = at_least(0, 0)  # linear warm-up of G's learning rate over this many steps (0 = off)
    warmup_d: int = at_least(0, 0)  # the same for D
    monitor_every: int = at_least(0, 0)  # diversity check of a fixed-noise batch every N steps (0 = at each log step)
    won_loss: float = at_least(0.05, 0)  # warn "D has won" when d_loss stays below this ...
    won_steps: int = positive(200)  # ... for this many consecutive steps (not checked for wgan losses)
    collapse_diversity: float = at_least(0.01, 0)  # warn "G collapsed" when the fixed-noise batch's diversity falls below this ...
    collapse_after: int = at_least(500, 0)  # ... from this step on (a fresh generator's BatchNorm statistics are not yet its own)


def check_options(g: GANOptions, official: str) -> str:
    """Refuse unknown choices in one line; return the loss in effect (``official`` resolved)."""
    for key, value, allowed in (("loss", g.loss, LOSSES), ("d_norm", g.d_norm, NORMS),
                                ("lr_schedule_g", g.lr_schedule_g, SCHEDULES), ("lr_schedule_d", g.lr_schedule_d, SCHEDULES)):
        if value not in allowed:
            raise T2IError(f"gan.{key} must be one of {', '.join(allowed)}, got {value!r}")
    return official if g.loss == "official" else g.loss


# ----------------------------------------------------------------------------- losses
def adversarial(kind: str, logits: torch.Tensor, role: str) -> torch.Tensor:
    """One adversarial term of ``kind`` (bce | hinge | lsgan | wgan) on raw D outputs (float32).

    ``role``: ``real`` (D: push up), ``fake`` (D: push down) or ``g`` (the generator's term)."""
    x = logits.float()
    if kind == "bce":
        target = 0.0 if role == "fake" else 1.0
        return nn.functional.binary_cross_entropy_with_logits(x, torch.full_like(x, target))
    if kind == "lsgan":
        return (x - 1).pow(2).mean() if role != "fake" else x.pow(2).mean()
    if kind == "hinge":
        if role == "g":
            return -x.mean()
        return nn.functional.relu(1.0 - x).mean() if role == "real" else nn.functional.relu(1.0 + x).mean()
    if kind == "wgan":
        return -x.mean() if role != "fake" else x.mean()
    raise ValueError(kind)


def matching_aware_d(kind: str, pred_real, pred_mis, pred_fake, penalty, penalty_name: str):
    """D's loss of a matching-aware GAN (DF-GAN, GALIP): real pairs + (fakes + mismatched pairs) / 2
    (+ the gradient penalty), each term ``adversarial(kind, ...)`` (hinge: the official one).
    Returns (d_loss, logs)."""
    d_real, d_mis, d_fake = (adversarial(kind, x, r) for x, r in
                             ((pred_real, "real"), (pred_mis, "fake"), (pred_fake, "fake")))
    d_loss = d_real + (d_fake + d_mis) / 2.0
    if penalty is not None:
        d_loss = d_loss + penalty
    logs = {"d_loss": d_loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach(), "d_mis": d_mis.detach()}
    if penalty is not None:
        logs[penalty_name] = penalty.detach()
    return d_loss, logs


def per_image(out) -> torch.Tensor:
    """A critic's outputs (a tensor or a tuple of heads, each (B,) or (B, ...)) as one score per image (B,)."""
    heads = out if isinstance(out, (tuple, list)) else (out,)
    return sum(h.float().reshape(h.size(0), -1).mean(1) for h in heads)


def wgan_gp(critic, real: torch.Tensor, fake: torch.Tensor, weight: float, eps: torch.Tensor,
            inv_scale: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: ``weight * mean((||d critic(x) / d x||_2 - 1)^2)`` at ``x = eps * real + (1 - eps) * fake``.

    ``eps``: (B, 1, 1, 1) uniform draws; ``critic(x) -> scores (B,)``; ``inv_scale``: 1 / the fp16 loss
    scale (``Precision.inv_scale()``; None in fp32 / bf16)."""
    x = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (g,) = scaled_grad(critic(x).sum(), x, inv_scale)
    return weight * (g.float().flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(critic, real: torch.Tensor, gamma: float, inv_scale: torch.Tensor | None = None) -> torch.Tensor:
    """R1: ``gamma / 2 * mean(||d critic(x) / d x||^2)`` on real images (``inv_scale``: as :func:`wgan_gp`)."""
    x = real.detach().requires_grad_(True)
    (g,) = scaled_grad(critic(x).sum(), x, inv_scale)
    return 0.5 * gamma * g.float().pow(2).flatten(1).sum(1).mean()


def ma_gp(critic, real: torch.Tensor, cond: torch.Tensor, weight: float, power: float,
          inv_scale: torch.Tensor | None = None) -> torch.Tensor:
    """DF-GAN's matching-aware GP on (real image, its condition): ``weight * mean(||grad||^power)``
    of the gradient with respect to both; ``critic(x, c) -> scores (B,)``; ``inv_scale``: as :func:`wgan_gp`.
    DF-GAN's own :func:`t2igan.models.dfgan.matching_aware_gp` on fresh leaves."""
    x, c = real.detach().requires_grad_(True), cond.detach().float().requires_grad_(True)
    return matching_aware_gp(critic(x, c), x, c, weight, power, inv_scale)


# ----------------------------------------------------------------------------- discriminator norms
def batchnorms(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def swap_norm(module: nn.Module, mode: str) -> int:
    """Replace every BatchNorm of ``module`` (in place): ``layer`` -> ``GroupNorm(1, C)`` (LayerNorm over
    C, H, W of each image; ``LayerNorm(C)`` for BatchNorm1d), ``none`` -> Identity. Returns how many."""
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if mode == "none":
                new = nn.Identity()
            elif isinstance(child, nn.BatchNorm1d):
                new = nn.LayerNorm(child.num_features)
            else:
                new = nn.GroupNorm(1, child.num_features)
            setattr(module, name, new)
            n += 1
        else:
            n += swap_norm(child, mode)
    return n


def prepare_discriminators(opts: GANOptions, loss: str, discriminators: dict[str, nn.Module]) -> None:
    """Apply ``gan.d_norm`` and refuse a gradient penalty with BatchNorm left in a discriminator."""
    if opts.d_norm != "keep":
        if sum(swap_norm(d, opts.d_norm) for d in discriminators.values()) == 0:
            raise T2IError(f"gan.d_norm={opts.d_norm}: the discriminators ({', '.join(discriminators)}) have no "
                           "BatchNorm to replace; leave it at keep")
    if loss in PENALTY:
        for name, d in discriminators.items():
            bns = batchnorms(d)
            if bns:
                raise T2IError(f"gan.loss={loss}: its gradient penalty is taken per image, but {name} has BatchNorm "
                               f"({bns[0]}, which mixes the batch): set gan.d_norm=layer (LayerNorm) or gan.d_norm=none")


@torch.no_grad()
def clip_weights(params, c: float) -> None:
    """WGAN weight clipping: every parameter clamped to [-c, c] in place."""
    for p in params:
        p.clamp_(-c, c)


# ----------------------------------------------------------------------------- learning-rate schedules
def lr_factor(kind: str, step: int, *, steps_per_epoch: int = 1, step_epochs: int = 100, decay_steps: int = 1,
              end: float = 0.0, warmup: int = 0) -> float:
    """Factor of the base learning rate at ``step`` (0-based, the update about to be made).

    constant: 1; step: ``0.5 ** (epoch // step_epochs)`` with ``epoch = step // steps_per_epoch``;
    linear: ``1 - (1 - end) * min(1, step / decay_steps)``; cosine:
    ``end + (1 - end) * (1 + cos(pi * min(1, step / decay_steps))) / 2``; times a linear warm-up
    ``min(1, (step + 1) / warmup)`` when ``warmup > 0``."""
    if kind == "constant":
        f = 1.0
    elif kind == "step":
        f = 0.5 ** ((step // max(1, steps_per_epoch)) // step_epochs)
    elif kind == "linear":
        f = 1.0 - (1.0 - end) * min(1.0, step / max(1, decay_steps))
    elif kind == "cosine":
        f = end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, decay_steps))))
    else:
        raise ValueError(kind)
    if warmup > 0:
        f *= min(1.0, (step + 1) / warmup)
    return f
