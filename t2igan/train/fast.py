"""Fast-path switches of the trainer and the processes of a distributed run.

Every switch is a ``train.*`` config key whose default is the plain reference path:

- ``train.precision``: ``fp32`` | ``bf16`` (autocast, CPU or CUDA) | ``fp16`` (autocast with a
  GradScaler, CUDA only). Losses and the gradient penalty are computed in float32.
- ``train.channels_last``: NHWC weights and images (cuDNN / oneDNN prefer it).
- ``train.compile``: ``torch.compile`` the forward modules a family lists as compilable
  (networks under a double backward, such as DF-GAN's discriminator, are not).
- ``train.adam``: ``default`` | ``foreach`` | ``fused`` Adam.
- ``train.fused_upsample``: blocks with a ``fused_upsample`` attribute (DF-GAN's ``GBlock``)
  compute upsample + convolution on the low-resolution input (same function, fewer FLOPs).

A family's step reads ``self.precision`` (a :class:`Precision`) and calls its forward modules
through the callables the trainer installs with ``step.wrap(fn)`` (DDP and/or compile).
"""
from __future__ import annotations

import torch
from torch import nn

from t2igan import T2IError
from t2igan.core.distributed import Precision, World, init_distributed, world_from_env  # noqa: F401  (the trainer's)
from t2igan.models import dfgan

PRECISIONS = ("fp32", "bf16", "fp16")
ADAMS = ("default", "foreach", "fused")


def check(tc, device: torch.device) -> None:
    """Refuse switch values that cannot work, naming the key. (Switches a family's step does not
    honour are refused by :func:`t2igan.families.base.check_switches`.)"""
    if tc.precision not in PRECISIONS:
        raise T2IError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {tc.precision!r}")
    if tc.precision == "fp16" and device.type != "cuda":
        raise T2IError("train.precision=fp16 needs a CUDA device (use bf16 on CPU)")
    if tc.adam not in ADAMS:
        raise T2IError(f"train.adam must be one of {', '.join(ADAMS)}, got {tc.adam!r}")


def to_channels_last(module: nn.Module) -> nn.Module:
    """NHWC weights for every 4-d parameter (in place: the optimisers keep the same Parameters)."""
    return module.to(memory_format=torch.channels_last)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch of all processes
    (``nn.SyncBatchNorm`` takes only GPU tensors; this one serves gloo/CPU runs). Same
    parameters and buffers as ``nn.BatchNorm2d``, so checkpoints do not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        C = x.size(1)
        xf = x.float()
        dims = (0, *range(2, x.dim()))  # all but the channels
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([x.numel() / C])])
        tot = all_reduce(local)  # (2C + 1,), gradients summed back over the processes
        n = tot[-1]
        mean = tot[:C] / n
        var = (tot[C:2 * C] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), m)
        shape = (1, C) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class GlobalBatchNorm1d(GlobalBatchNorm2d):
    """:class:`GlobalBatchNorm2d` for ``nn.BatchNorm1d`` inputs (B, C) or (B, C, L)."""

    def _check_input_dim(self, input):
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch statistics over all processes: ``nn.SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm2d`
    on CPU. Children are replaced in place; parameters and buffers are the same tensors."""
    if device.type == "cuda":
        for name, child in list(module.named_children()):
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return module
    for name, child in list(module.named_children()):
        if type(child) in (nn.BatchNorm2d, nn.BatchNorm1d):
            cls = GlobalBatchNorm2d if type(child) is nn.BatchNorm2d else GlobalBatchNorm1d
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var, new.num_batches_tracked = child.running_mean, child.running_var, child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module


def prepare_module(module: nn.Module, tc) -> nn.Module:
    """The per-module fast paths (in place): ``train.channels_last`` and ``train.fused_upsample``.
    Applied to every module of a step and to the trainer's EMA copy of the generator."""
    if tc.channels_last:
        to_channels_last(module)
    if tc.fused_upsample:
        dfgan.set_fused_upsample(module)
    return module


def prepare_step(task, tc, device: torch.device, world: World | None = None) -> None:
    """Apply the ``train.*`` fast paths and the process setup to a family's step (its modules
    already on ``device``): channels_last, fused upsampling, precision, global BatchNorm, DDP, torch.compile."""
    world = world or World()
    for m in task.modules.values():
        prepare_module(m, tc)
    task.precision = Precision(tc.precision, device)
    task.world = world
    if world.distributed:
        from t2igan.core.distributed import broadcast_module

        for m in task.modules.values():  # in place: the same Parameters stay in the optimisers
            sync_batchnorm(m, device)
            if getattr(task, "manual_sync", False):  # no DDP wrapper to broadcast rank 0's weights
                broadcast_module(m)

    def wrap(name: str, m: nn.Module):
        if world.distributed and any(p.requires_grad for p in m.parameters()):
            from torch.nn.parallel import DistributedDataParallel

            m = DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
        if tc.compile and name in getattr(task, "compilable", ()):
            m = torch.compile(m, backend=tc.compile_backend)
        return m

    task.wrap(wrap)
