"""Typed run configurations: dataclasses <-> YAML, with dotted command-line overrides.

A run config is one dataclass per task (``dfgan``, ``damsm``, ``evaluator``) whose
sections are dataclasses too. Loading is strict: an unknown key, a missing ``task`` or a
value of the wrong type is a :class:`ConfigError` naming the key.

    cfg = load_config("configs/dfgan_synth64.yaml", ["train.batch_size=32"])
    save_config(cfg, "runs/x/config.yaml")
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


# ----------------------------------------------------------------------------- sections
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
class TextEncoderConfig:
    """The DAMSM bi-LSTM text encoder (AttnGAN's RNN_ENCODER)."""

    embed_dim: int = 256  # nef: sentence/word feature size (DAMSM.EMBEDDING_DIM)
    word_dim: int = 300  # ninput: word embedding size
    num_layers: int = 1  # LSTM layers
    dropout: float = 0.5  # dropout on word embeddings


@dataclass
class ImageEncoderConfig:
    """Image encoder of DAMSM. Official: Inception-v3 (ImageNet); here a small CNN trained
    from scratch, since pretrained weights cannot be assumed present."""

    width: int = 64  # base channels of the CNN
    image_size: int = 64  # input side the encoder is trained on


@dataclass
class DAMSMLossConfig:
    gamma1: float = 4.0  # attention sharpness over words (TRAIN.SMOOTH.GAMMA1)
    gamma2: float = 5.0  # word-region aggregation (GAMMA2)
    gamma3: float = 10.0  # similarity scale (GAMMA3)


@dataclass
class DFGANConfig:
    """DF-GAN generator/discriminator sizes (official code: NetG/NetD/NetC arguments)."""

    ngf: int = 32  # generator base width (official 256x256: 32)
    ndf: int = 32  # discriminator base width
    nz: int = 100  # noise size
    ch_size: int = 3  # image channels


@dataclass
class EvaluatorConfig:
    width: int = 48  # base channels of the attribute evaluator CNN
    feature_dim: int = 256  # penultimate feature size (FID-SF/KID-SF space)


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
    sample_captions: list[str] = field(default_factory=list)  # fixed captions for grids (empty: first test captions)
    # fast paths (README "Performance"); the defaults are the reference path
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or CUDA) | fp16 (autocast + GradScaler, CUDA)
    channels_last: bool = False  # NHWC weights and images
    compile: bool = False  # torch.compile the family's compilable forward modules
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: no C++ compiler needed)
    adam: str = "default"  # Adam implementation: default | foreach | fused


# ----------------------------------------------------------------------------- run configs
@dataclass
class DAMSMRunConfig:
    task: str = "damsm"
    data: DataConfig = field(default_factory=DataConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    loss: DAMSMLossConfig = field(default_factory=DAMSMLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=2e-4, beta1=0.5, beta2=0.999, grad_clip=0.25))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/damsm_synth64", ema_decay=0.0, batch_size=48))


@dataclass
class DFGANRunConfig:
    task: str = "dfgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: DFGANConfig = field(default_factory=DFGANConfig)
    text_encoder: str = "runs/damsm_synth64"  # a DAMSM run (or its pipeline dir); frozen during training
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/dfgan_synth64"))


@dataclass
class EvaluatorRunConfig:
    task: str = "evaluator"
    data: DataConfig = field(default_factory=lambda: DataConfig(crop=False, flip=True))
    model: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=2e-3, beta1=0.9, beta2=0.999, weight_decay=1e-4))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/evaluator_synth64", ema_decay=0.0, batch_size=64, max_steps=3000))


TASKS: dict[str, type] = {"damsm": DAMSMRunConfig, "dfgan": DFGANRunConfig, "evaluator": EvaluatorRunConfig}


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


def config_from_dict(data: Any, source: str = "config") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    task = data.get("task")
    if task not in TASKS:
        raise ConfigError(f"{source}: 'task' must be one of {sorted(TASKS)}, got {task!r}")
    return from_dict(TASKS[task], data)


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


def load_config(path: str | os.PathLike | None, overrides: list[str] = (), task: str | None = None) -> Any:
    """Load a YAML run config (or the defaults of ``task`` when ``path`` is None) and apply overrides."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        data = data or {}
        source = str(p)
    else:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; one of {sorted(TASKS)}")
        data = {"task": task}
        source = f"defaults of task {task}"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    data = apply_overrides(data, list(overrides))
    return config_from_dict(data, source)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    os.replace(tmp, p)
