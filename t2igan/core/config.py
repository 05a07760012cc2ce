"""The typed config machinery every family uses: dataclasses <-> YAML, dotted overrides, and
the sections all run configs share (``data``, ``optim``, ``train``, ``image``).

A family declares its run config (``task``, its own sections) in its own module under
:mod:`t2igan.families`; :func:`t2igan.config.load_config` finds it through the registry.
Loading is strict: an unknown key or a value of the wrong type is a :class:`ConfigError`
naming the key.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from t2igan import T2IError


class ConfigError(T2IError):
    pass


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# ----------------------------------------------------------------------------- shared sections
@dataclass
class DataConfig:
    root: str = "data/synthflowers64"  # dataset directory in the t2igan folder format
    split: str = "train"  # split trained on
    image_size: int = 64  # final (largest) image side
    num_scales: int = 1  # multi-scale targets: image_size / 2**k for k < num_scales
    max_words: int = 18  # captions are cut to this many tokens (AttnGAN: 18)
    min_word_count: int = 1  # words seen fewer times in training captions map to <unk>
    flip: bool = True  # random horizontal flip
    crop: bool = True  # resize to image_size*76/64 then random crop (StackGAN/AttnGAN protocol)
    workers: int = 0  # DataLoader worker processes


@dataclass
class ImageEncoderConfig:
    """Image encoder of DAMSM. Official: Inception-v3 (ImageNet); here a small CNN trained
    from scratch, since pretrained weights cannot be assumed present."""

    width: int = 64  # base channels of the CNN
    image_size: int = 64  # input side the encoder is trained on


@dataclass
class OptimConfig:
    lr_g: float = 1e-4  # generator / text encoder learning rate
    lr_d: float = 4e-4  # discriminator learning rate (DF-GAN: 4e-4)
    beta1: float = 0.0
    beta2: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # clip grad norm (0 = off); DAMSM official: 0.25
    gp_weight: float = 2.0  # DF-GAN matching-aware gradient penalty weight (p=6, k=2)
    gp_power: float = 6.0


@dataclass
class TrainConfig:
    out_dir: str = "runs/run"  # run directory: checkpoints, samples, logs
    batch_size: int = 32
    max_steps: int = 10000  # stop after this many optimiser steps
    max_minutes: float = 0.0  # also stop after this wall-clock time (0 = no limit)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0 = torch default)
    ema_decay: float = 0.999  # EMA of the generator (0 = off); warmed up as min(decay, (1+k)/(10+k))
    ema_start: int = 0  # the EMA copies the generator until this step, then averages
    log_every: int = 50
    sample_every: int = 500  # sample grid for the fixed captions
    ckpt_every: int = 1000
    snapshot_every: int = 0  # also keep a copy of the exported pipeline every N steps in snapshots/ (0 = off)
    progress: bool = True
    eval_every: int = 0  # evaluate the EMA generator every N steps into RUN/eval_history.jsonl (0 = off)
    eval_samples: int = 200  # samples of the test split per evaluation during training
    eval_evaluator: str = ""  # attribute evaluator folder for those evaluations ("" = R-precision only)
    sample_captions: list[str] = field(default_factory=list)  # fixed captions for grids (empty: first test captions)
    # fast paths (docs/training.md "Fast paths", docs/performance.md); the defaults are the reference path
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or CUDA) | fp16 (autocast + GradScaler, CUDA)
    channels_last: bool = False  # NHWC weights and images
    compile: bool = False  # torch.compile the family's compilable forward modules
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: no C++ compiler needed)
    adam: str = "default"  # Adam implementation: default | foreach | fused
    fused_upsample: bool = False  # DF-GAN generator: upsample + 3x3 conv as one transposed conv (same function)


# ----------------------------------------------------------------------------- conversion
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; the only conversions are int -> float
    and a numeric string such as ``1e-4`` -> float."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list else tuple(items)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key + ".")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads '1e-4' (no dot) as a string
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, prefix: str = "", base: Any = None) -> Any:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys and wrong types raise.

    Keys absent from ``data`` keep their values in ``base`` (default: ``cls()``), so a
    partial section such as ``optim: {lr_g: 1e-3}`` keeps the *task's* defaults for the
    other keys of that section, not the plain section class's.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (valid keys of '{prefix.rstrip('.') or cls.__name__}': "
            f"{', '.join(sorted(names))})"
        )
    base = cls() if base is None else base
    kwargs = {}
    for k, v in data.items():
        if dataclasses.is_dataclass(hints[k]):
            kwargs[k] = from_dict(hints[k], v, prefix=prefix + k + ".", base=getattr(base, k))
        else:
            kwargs[k] = _coerce(v, hints[k], prefix + k)
    return dataclasses.replace(base, **kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides to a plain dict (values parsed as YAML scalars)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    os.replace(tmp, p)
