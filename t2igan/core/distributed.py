"""The processes of a distributed (torchrun) run and the step's mixed precision.

A family's step holds a :class:`World` (its rank among the processes) and a
:class:`Precision` (autocast and loss scaling); the trainer sets both. The row-gathering
helpers give every process the global batch in the order of
:class:`~t2igan.data.dataset.EpochBatchSampler`'s strided shards.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


class Precision:
    """Autocast and (for fp16) loss scaling, in one place for every family's step."""

    def __init__(self, mode: str = "fp32", device: torch.device | str = "cpu"):
        self.mode = mode
        self.device_type = torch.device(device).type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler(self.device_type) if mode == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def inv_scale(self) -> torch.Tensor | None:
        """1 / the loss scale as a tensor (no host sync), or None without scaling."""
        if self.scaler is None:
            return None
        if self.scaler._scale is None:  # lazily created on the first scale()
            self.scaler.scale(torch.zeros((), device=self.device_type))
        return self.scaler._scale.double().reciprocal().float()

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()


@dataclass
class World:
    """This process's place in a (torchrun) distributed run; rank 0 of 1 when not distributed."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(world: World, device: torch.device) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU) unless already joined."""
    import torch.distributed as dist

    if not world.distributed or dist.is_initialized():
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)


def all_gather_rows(x: torch.Tensor, world: World) -> torch.Tensor:
    """Rows of every rank in global batch order (no gradient).

    Rank r holds global rows r, r + W, r + 2W, ... (the strided shard of
    :class:`~t2igan.data.dataset.EpochBatchSampler`); the result interleaves them back.
    """
    if not world.distributed:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world.size)]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts, 1).reshape(-1, *x.shape[1:])  # (b, W, ...) -> (b*W, ...): row k*W + r


def all_gather_rows_autograd(x: torch.Tensor, world: World) -> torch.Tensor:
    """:func:`all_gather_rows` with gradients sent back to the rank that computed each row."""
    if not world.distributed:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.stack(all_gather(x.contiguous()), 1).reshape(-1, *x.shape[1:])
