"""Weights on disk: safetensors + config.json per component, trainer state apart.

Components follow the Hugging Face directory convention (``save_pretrained`` /
``from_pretrained``): ``DIR/config.json`` holds the constructor arguments and ``kind``,
``DIR/model.safetensors`` the state dict. Loading is strict and every failure is one
:class:`T2IError` line naming the file. Directories are written to a temporary sibling and
moved into place, so an interrupted save never damages the previous copy.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from t2igan import T2IError
from t2igan.core.fs import recover_dir, replace_dir  # noqa: F401  (re-exported: weights.replace_dir)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def fresh_tmp(final: Path) -> Path:
    """An empty ``final.tmp`` to write the next copy of ``final`` into.

    A swap of ``final`` interrupted between its two renames is undone first (``final.old``, the
    last complete copy, goes back to ``final``), so the leftover ``final.tmp`` deleted here is a
    half-finished save and never the only complete copy."""
    recover_dir(final)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise T2IError(f"missing file: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise T2IError(f"{path}: not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise T2IError(f"{path}: expected a JSON object")
    return data


def state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def save_component(module: nn.Module, directory: str | os.PathLike, kind: str, config: dict) -> None:
    """Write ``module`` (weights + constructor config) into ``directory`` (created)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(state_dict_cpu(module), str(d / WEIGHTS), metadata={"kind": kind})
    write_json(d / CONFIG, {"kind": kind, **config})


def read_component(directory: str | os.PathLike, kind: str | tuple[str, ...]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read (config without 'kind', state dict) of a component, checking its kind."""
    d = Path(directory)
    if not d.is_dir():
        raise T2IError(f"model folder not found: {d}")
    cfg = read_json(d / CONFIG)
    kinds = (kind,) if isinstance(kind, str) else kind
    if cfg.get("kind") not in kinds:
        raise T2IError(f"{d / CONFIG}: expected a {' or '.join(kinds)} component, found kind={cfg.get('kind')!r}")
    return {k: v for k, v in cfg.items() if k != "kind"}, load_weights(d / WEIGHTS)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise T2IError(f"weights file missing: {p}")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise T2IError(f"{p}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``; any missing, unexpected, mis-shaped or other-dtype key is an
    error, and so are NaN or infinite weights (a diverged or damaged checkpoint)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise T2IError(f"{source}: weights do not match the model ({what}{' ...' if len(missing or extra) > 3 else ''})")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise T2IError(f"{source}: '{k}' has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
        if own[k].dtype != v.dtype:  # load_state_dict would cast silently (e.g. float16 weights into float32)
            raise T2IError(f"{source}: '{k}' is {str(v.dtype).removeprefix('torch.')}, the model expects "
                           f"{str(own[k].dtype).removeprefix('torch.')} (convert the checkpoint explicitly)")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise T2IError(f"{source}: '{k}' holds NaN or infinite values (a diverged or damaged checkpoint)")
    module.load_state_dict(state, strict=True)


def save_trainer_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_trainer_state(path: Path) -> dict:
    if not path.is_file():
        raise T2IError(f"no trainer state to resume from: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/foreign files
        raise T2IError(f"{path}: not a readable trainer state ({e.__class__.__name__})") from None
