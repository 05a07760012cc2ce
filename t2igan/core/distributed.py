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


def init_distributed(world: World, device: torch.device) -> bool:
    """Join the process group (nccl on CUDA, gloo on CPU) unless already joined; True when joined here
    (the caller then leaves it at the end; a group someone else made stays theirs)."""
    import torch.distributed as dist

    if not world.distributed or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    return True


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


def all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` (e.g. gradients) over the processes, in place, with one all-reduce of
    their flattened concatenation (the reduction DistributedDataParallel makes)."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for t, s in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(s)


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every process (what DistributedDataParallel does at start)."""
    import torch.distributed as dist

    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def shard_randn(world: World, rows: int, *size: int, device=None, rand: bool = False) -> torch.Tensor:
    """This process's rows of a ``(rows * world.size, *size)`` draw of the global batch (normal, or
    uniform with ``rand``): the same numbers whatever the number of processes."""
    fn = torch.rand if rand else torch.randn
    if not world.distributed:
        return fn(rows, *size, device=device)
    return fn(rows * world.size, *size, device=device)[world.rank::world.size]


def global_roll(x: torch.Tensor, world: World) -> torch.Tensor:
    """``torch.roll(x, 1, 0)`` of the global batch, this process's rows (row i gets the global row
    before it): no gradient through the gathered rows of the other processes."""
    if not world.distributed:
        return torch.roll(x, 1, 0)
    full = all_gather_rows(x.detach(), world)
    rows = torch.arange(x.size(0), device=x.device) * world.size + world.rank
    return full[(rows - 1) % full.size(0)]
