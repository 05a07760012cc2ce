"""The typed config machinery every family uses: dataclasses <-> YAML, dotted overrides, and
the sections all run configs share (``data``, ``optim``, ``train``, ``image``).

A family declares its run config (``task``, its own sections) in its own module under
:mod:`t2igan.families`; :func:`t2igan.config.load_config` finds it through the registry.
Loading is strict: an unknown key, a value of the wrong type or a number outside its field's
declared range is a :class:`ConfigError` naming the key.

Every numeric field declares its allowed values where it is declared, with :func:`positive`,
:func:`at_least` or :func:`in_range` (a ``dataclasses.field`` whose ``metadata["range"]`` is a
:class:`Range`); :func:`from_dict` checks every such field of what it builds, the defaults it
keeps included, and refuses NaN and infinity in every float field.
"""
from __future__ import annotations

import dataclasses
import math
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


# ----------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric config field: ``lo`` .. ``hi`` (None: unbounded), each end
    closed unless ``lo_open`` / ``hi_open``. Floats must also be finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def describe(self, integer: bool = False) -> str:
        """``'must be >= 1'``, ``'must be a finite number in [0, 1)'``, ``'must be 1 or 2'`` ..."""
        lo, hi, lo_open, hi_open = self.lo, self.hi, self.lo_open, self.hi_open
        if integer:  # an open end of an integer field reads as the closed one: > 0 -> >= 1
            if lo is not None and lo_open:
                lo, lo_open = math.floor(lo) + 1, False
            if hi is not None and hi_open:
                hi, hi_open = math.ceil(hi) - 1, False
        what = "must be " if integer else "must be a finite number "
        if lo is not None and hi is not None:
            if integer and lo == hi:
                return f"must be {_num(lo)}"
            if integer and hi == lo + 1:
                return f"must be {_num(lo)} or {_num(hi)}"
            return f"{what}in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
        if lo is not None:
            return f"{what}{'>' if lo_open else '>='} {_num(lo)}"
        if hi is not None:
            return f"{what}{'<' if hi_open else '<='} {_num(hi)}"
        return "must be a finite number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def ranged(default: float, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> Any:
    """A dataclass field with ``default`` whose values must lie in the given :class:`Range`."""
    r = Range(lo, hi, lo_open, hi_open)
    if not r.contains(default):
        raise ValueError(f"default {default!r} is out of its own range ({r.describe(isinstance(default, int))})")
    return field(default=default, metadata={"range": r})


def positive(default: float) -> Any:
    """``> 0`` (an integer field: ``>= 1``)."""
    return ranged(default, 0, lo_open=True)


def at_least(default: float, lo: float) -> Any:
    """``>= lo``."""
    return ranged(default, lo)


def in_range(default: float, lo: float, hi: float, *, hi_open: bool = False) -> Any:
    """``lo <= value <= hi`` (``< hi`` with ``hi_open``)."""
    return ranged(default, lo, hi, hi_open=hi_open)


def field_range(f: dataclasses.Field) -> Range | None:
    """The declared :class:`Range` of a dataclass field (``metadata["range"]``: a Range or a
    closed ``(lo, hi)`` pair), or None."""
    r = f.metadata.get("range")
    if r is None or isinstance(r, Range):
        return r
    lo, hi = r
    return Range(lo, hi)


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Raise a one-line :class:`ConfigError` for the first numeric field of ``cfg`` (and of its
    nested sections) outside its declared range, or a float field that is NaN or infinite."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v, key = getattr(cfg, f.name), prefix + f.name
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            check_ranges(v, key + ".")
            continue
        if isinstance(v, (list, tuple)) and field_range(f) is not None:  # a list of numbers: every element
            r = field_range(f)
            for i, x in enumerate(v):
                if isinstance(x, (int, float)) and not isinstance(x, bool) and not r.contains(x):
                    integer = isinstance(x, int)
                    raise ConfigError(f"config key '{key}': element {i} = {x!r} is out of range ({r.describe(integer)})")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        r = field_range(f)
        if r is None:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"config key '{key}': {v!r} is not a finite number")
        elif not r.contains(v):
            integer = int in (hints[f.name], *typing.get_args(hints[f.name]))  # int or int | None
            raise ConfigError(f"config key '{key}': {v!r} is out of range ({r.describe(integer)})")


# ----------------------------------------------------------------------------- shared sections
@dataclass
class DataConfig:
    root: str = "data/synthflowers64"  # dataset directory in the t2igan folder format
    split: str = "train"  # split trained on
    image_size: int = at_least(64, 8)  # final (largest) image side
    num_scales: int = positive(1)  # multi-scale targets: image_size / 2**k for k < num_scales
    max_words: int = positive(18)  # captions are cut to this many tokens (AttnGAN: 18)
    min_word_count: int = positive(1)  # words seen fewer times in training captions map to <unk>
    flip: bool = True  # random horizontal flip
    crop: bool = True  # resize to image_size*76/64 then random crop (StackGAN/AttnGAN protocol)
    workers: int = at_least(0, 0)  # DataLoader worker processes


@dataclass
class ImageEncoderConfig:
    """Image encoder of DAMSM. Official: Inception-v3 (ImageNet); here a small CNN trained
    from scratch, since pretrained weights cannot be assumed present."""

    width: int = positive(64)  # base channels of the CNN
    image_size: int = at_least(64, 8)  # input side the encoder is trained on


@dataclass
class OptimConfig:
    lr_g: float = positive(1e-4)  # generator / text encoder learning rate
    lr_d: float = positive(4e-4)  # discriminator learning rate (DF-GAN: 4e-4)
    beta1: float = in_range(0.0, 0, 1, hi_open=True)
    beta2: float = in_range(0.9, 0, 1, hi_open=True)
    weight_decay: float = at_least(0.0, 0)
    grad_clip: float = at_least(0.0, 0)  # clip grad norm (0 = off); DAMSM official: 0.25
    gp_weight: float = at_least(2.0, 0)  # DF-GAN matching-aware gradient penalty weight (p=6, k=2)
    gp_power: float = positive(6.0)


@dataclass
class TrainConfig:
    out_dir: str = "runs/run"  # run directory: checkpoints, samples, logs
    batch_size: int = positive(32)
    max_steps: int = positive(10000)  # stop after this many optimiser steps
    max_minutes: float = at_least(0.0, 0)  # also stop after this wall-clock time (0 = no limit)
    max_cpu_minutes: float = at_least(0.0, 0)  # also stop after this much CPU time of the process, all its threads (0 = no limit)
    seed: int = in_range(0, 0, 2**32 - 1)  # numpy's seed range
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = at_least(0, 0)  # torch CPU threads (0 = torch default)
    ema_decay: float = in_range(0.999, 0, 1, hi_open=True)  # EMA of the generator (0 = off); warmed up as min(decay, (1+k)/(10+k))
    ema_start: int = at_least(0, 0)  # the EMA copies the generator until this step, then averages
    log_every: int = positive(50)
    sample_every: int = at_least(500, 0)  # sample grid for the fixed captions
    ckpt_every: int = at_least(1000, 0)  # (0 = only at the end)
    snapshot_every: int = at_least(0, 0)  # also keep a copy of the exported pipeline every N steps in snapshots/ (0 = off)
    progress: bool = True
    eval_every: int = at_least(0, 0)  # evaluate the EMA generator every N steps into RUN/eval_history.jsonl (0 = off)
    eval_samples: int = at_least(200, 2)  # samples of the test split per evaluation during training
    eval_evaluator: str = ""  # attribute evaluator folder for those evaluations ("" = R-precision only)
    sample_captions: list[str] = field(default_factory=list)  # fixed captions for grids (empty: first test captions)
    # fast paths (docs/training.md "Fast paths", docs/performance.md); the defaults are the reference path
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or CUDA) | fp16 (autocast + GradScaler, CUDA)
    channels_last: bool = False  # NHWC weights and images
    compile: bool = False  # torch.compile the family's compilable forward modules
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: no C++ compiler needed)
    adam: str = "default"  # Adam implementation: default | foreach | fused
    fused_upsample: bool = False  # DF-GAN generator: upsample + 3x3 conv as one transposed conv (same function)
    accumulate: int = positive(1)  # gradient accumulation: each update over this many micro-batches of batch_size / accumulate rows (1 = off; must divide batch_size)


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
            try:
                return float(value)
            except OverflowError:  # an int beyond the float range
                raise ConfigError(f"config key '{key}': {value!r} is not a finite number") from None
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
    """Build dataclass ``cls`` from a (nested) dict; unknown keys, wrong types and numbers
    outside their field's range (:func:`check_ranges`, defaults included) raise.

    Keys absent from ``data`` keep their values in ``base`` (default: ``cls()``), so a
    partial section such as ``optim: {lr_g: 1e-3}`` keeps the *task's* defaults for the
    other keys of that section, not the plain section class's.
    """
    cfg = _build(cls, data, prefix, base)
    check_ranges(cfg, prefix)
    return cfg


def _build(cls: type, data: Any, prefix: str = "", base: Any = None) -> Any:
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
            kwargs[k] = _build(hints[k], v, prefix=prefix + k + ".", base=getattr(base, k))
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
