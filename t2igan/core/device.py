"""The torch device a command runs on."""
from __future__ import annotations

import torch

from t2igan import T2IError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present, this process's GPU in a torchrun run), ``cpu``, ``cuda`` or
    ``cuda:N``; a CUDA device on a machine without CUDA is an error naming it."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise T2IError(f"unknown device {name!r} (auto | cpu | cuda | cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise T2IError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev
