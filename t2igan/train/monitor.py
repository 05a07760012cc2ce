"""The live stability monitor of a GAN run (``gan.*`` monitor keys, docs/training.md "Stability monitor").

Per step, on the device (no host sync): how many consecutive steps D's loss ``d_loss`` has stayed
below ``gan.won_loss``, and the first step at which that run reached ``gan.won_steps`` ("D has
won"; not checked for the unbounded ``wgan`` / ``wgan-gp`` critic losses). At each log step (or
every ``gan.monitor_every`` steps): the D(real) - D(fake) gap of the step's raw outputs (the
step's ``d_out_real`` / ``d_out_fake`` logs), the gradient norms of G and D (its ``grad_norm_G`` /
``grad_norm_D``) and the diversity of a fixed-noise batch: 8 images of the raw generator for the
first sample caption with the run's seed, the per-pixel standard deviation over the 8 averaged
over pixels (images in [-1, 1]; 0 = every noise gives the same image). A diversity below
``gan.collapse_diversity`` from step ``gan.collapse_after`` on is "G collapsed" (earlier, the
generator's BatchNorm running statistics, used by the eval-mode samples, are not yet its own). Each warning is one line, once; the steps go into
``train_summary.json`` under ``monitor``.
"""
from __future__ import annotations

import sys

import torch

DIVERSITY_SAMPLES = 8


class StabilityMonitor:
    def __init__(self, opts, loss_kind: str, task, caption: str | None, seed: int, log_every: int, device):
        """``opts``: the run's gan section (None: not a GAN run, the monitor is off); ``loss_kind``: the
        loss in effect; ``task``: the step (its ``sample``); ``caption``: for the diversity batch."""
        self.opts, self.task, self.caption, self.seed = opts, task, caption, seed
        self.on = opts is not None
        self.check_won = self.on and not loss_kind.startswith("wgan")
        self.every = (opts.monitor_every or log_every) if self.on else 0
        self.run = torch.zeros((), dtype=torch.long, device=device)  # consecutive steps with d_loss < won_loss
        self.first = torch.full((), -1, dtype=torch.long, device=device)  # step at which the run reached won_steps
        self.d_won_at: int | None = None
        self.g_collapsed_at: int | None = None
        self.diversity: float | None = None
        self.last: dict[str, float] = {}

    def update(self, logs: dict, step: int) -> None:
        """After step ``step`` (1-based count of steps done), on the device."""
        if not self.check_won or "d_loss" not in logs or not torch.is_tensor(logs["d_loss"]):
            return
        below = (logs["d_loss"].detach().float() < self.opts.won_loss).to(self.run.device)
        self.run = (self.run + 1) * below
        hit = (self.run >= self.opts.won_steps) & (self.first < 0)
        self.first = torch.where(hit, torch.full_like(self.first, step), self.first)

    @torch.no_grad()
    def fixed_noise_diversity(self) -> float | None:
        if self.caption is None:
            return None
        imgs = self.task.sample([self.caption], self.seed, DIVERSITY_SAMPLES, None)
        if imgs is None:
            return None
        return float(imgs.float().std(0).mean())

    def check(self, vals: dict[str, float], step: int) -> dict[str, float]:
        """At a log step (``vals``: the reduced logs): the monitor's scalars; prints each warning once."""
        if not self.on:
            return {}
        out = {}
        if "d_out_real" in vals and "d_out_fake" in vals:
            out["d_gap"] = vals["d_out_real"] - vals["d_out_fake"]
        if self.every and step % self.every == 0 or self.diversity is None:
            self.diversity = self.fixed_noise_diversity()
        if self.diversity is not None:
            out["diversity"] = self.diversity
            if (self.g_collapsed_at is None and step >= self.opts.collapse_after
                    and self.diversity < self.opts.collapse_diversity):
                self.g_collapsed_at = step
                warn(f"step {step}: the generator collapsed: the diversity of a fixed-noise batch is "
                     f"{self.diversity:.4f} < gan.collapse_diversity={self.opts.collapse_diversity}")
        if self.check_won and self.d_won_at is None:
            first = int(self.first)
            if first >= 0:
                self.d_won_at = first
                warn(f"step {first}: D has won: d_loss < gan.won_loss={self.opts.won_loss} for "
                     f"gan.won_steps={self.opts.won_steps} steps in a row")
        self.last = {**{k: vals[k] for k in ("grad_norm_G", "grad_norm_D") if k in vals}, **out}
        return out

    def flags(self) -> str:
        return ",".join(n for n, s in (("D won", self.d_won_at), ("G collapsed", self.g_collapsed_at)) if s is not None)

    def summary(self) -> dict | None:
        if not self.on:
            return None
        return {"d_won_at": self.d_won_at, "g_collapsed_at": self.g_collapsed_at,
                "last": {k: round(v, 6) for k, v in self.last.items()}}


def warn(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {msg}", file=sys.stderr)
