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
    words: bool = True  # word-level loss as well as the sentence loss (false: sentence loss only; must be false with a frozen text_encoder)


@dataclass
class DFGANConfig:
    """DF-GAN generator/discriminator sizes (official code: NetG/NetD/NetC arguments)."""

    ngf: int = 32  # generator base width (official 256x256: 32)
    ndf: int = 32  # discriminator base width
    nz: int = 100  # noise size
    ch_size: int = 3  # image channels


@dataclass
class DFGANLossConfig:
    """Extra generator terms (both off in the official DF-GAN)."""

    damsm_lambda: float = 0.0  # AttnGAN's DAMSM word+sentence loss on generated images (AttnGAN birds: 5.0); 0 = off
    damsm_warmup: int = 0  # steps over which the DAMSM weight ramps linearly from 0 to damsm_lambda (0 = full weight at once)
    damsm_decay_steps: int = 0  # after the warm-up, steps over which the weight moves linearly to damsm_lambda_end (0 = constant)
    damsm_lambda_end: float = 0.0  # DAMSM weight at the end of the decay, kept from then on
    gamma1: float = 4.0  # DAMSM attention sharpness (AttnGAN TRAIN.SMOOTH.GAMMA1)
    gamma2: float = 5.0  # word-region aggregation (GAMMA2)
    gamma3: float = 10.0  # similarity scale (GAMMA3)
    damsm_words: bool = True  # DAMSM word loss as well as the sentence loss (false: sentence term only; must be false with a frozen text_encoder)
    damsm_image_encoder: str = ""  # with a frozen text_encoder (minilm, clip): the image encoder run trained against it (task damsm); "" otherwise


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
    eval_every: int = 0  # evaluate the EMA generator every N steps into RUN/eval_history.jsonl (0 = off)
    eval_samples: int = 200  # samples of the test split per evaluation during training
    eval_evaluator: str = ""  # attribute evaluator folder for those evaluations ("" = R-precision only)
    sample_captions: list[str] = field(default_factory=list)  # fixed captions for grids (empty: first test captions)
    # fast paths (README "Performance"); the defaults are the reference path
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU or CUDA) | fp16 (autocast + GradScaler, CUDA)
    channels_last: bool = False  # NHWC weights and images
    compile: bool = False  # torch.compile the family's compilable forward modules
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: no C++ compiler needed)
    adam: str = "default"  # Adam implementation: default | foreach | fused
    fused_upsample: bool = False  # DF-GAN generator: upsample + 3x3 conv as one transposed conv (same function)


# ----------------------------------------------------------------------------- run configs
@dataclass
class DAMSMRunConfig:
    task: str = "damsm"
    data: DataConfig = field(default_factory=DataConfig)
    text_encoder: str = ""  # "": train the DAMSM bi-LSTM with the image encoder; minilm, minilm:DIR, clip:ARCH:CKPT: that frozen encoder's cached sentence vectors, only the image encoder trains (nef = its width; section text unused)
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
    text_encoder: str = "runs/damsm_synth64"  # a DAMSM run (or its pipeline dir), or a frozen encoder spec (minilm, minilm:DIR, clip:ARCH:CKPT) used through the embedding cache
    loss: DFGANLossConfig = field(default_factory=DFGANLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/dfgan_synth64"))


@dataclass
class EvaluatorRunConfig:
    task: str = "evaluator"
    data: DataConfig = field(default_factory=lambda: DataConfig(crop=False, flip=True))
    model: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=2e-3, beta1=0.9, beta2=0.999, weight_decay=1e-4))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/evaluator_synth64", ema_decay=0.0, batch_size=64, max_steps=3000))


@dataclass
class DistillStudentConfig:
    """The encoder trained to reproduce the teacher's embeddings (t2igan.text.distill)."""

    arch: str = "damsm"  # damsm (bi-LSTM) | char_cnn_rnn
    embed_dim: int = 0  # sentence width; 0 = the teacher's (it must match)
    word_dim: int = 300  # damsm: word embedding size (ninput)
    num_layers: int = 1  # damsm: LSTM layers
    dropout: float = 0.5  # damsm: on word embeddings; char_cnn_rnn: before the output Linear
    cnn_dim: int = 512  # char_cnn_rnn: last conv / RNN width
    rnn_type: str = "gru"  # char_cnn_rnn: gru | rnn
    variant: str = "long"  # char_cnn_rnn: long (18 steps) | short (8 steps)
    doc_length: int = 201  # char_cnn_rnn: characters per caption


@dataclass
class DistillTeacherConfig:
    source: str = "minilm"  # frozen encoder spec (minilm, minilm:DIR, clip:ARCH:CKPT, damsm:RUN) or 'pickle' (dataset embeddings)
    cache_dir: str = ""  # embedding cache folder ('' = DATA_ROOT/.cache/text_embeddings)
    batch_size: int = 256  # captions per teacher forward pass when filling the cache


@dataclass
class DistillLossConfig:
    beta: float = 1.0  # SmoothL1 beta (torch default)
    cosine_weight: float = 0.0  # + cosine_weight * (1 - cos(student, teacher))


@dataclass
class DistillRunConfig:
    task: str = "distill"
    data: DataConfig = field(default_factory=DataConfig)
    student: DistillStudentConfig = field(default_factory=DistillStudentConfig)
    teacher: DistillTeacherConfig = field(default_factory=DistillTeacherConfig)
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    eval_split: str = "test"  # held-out captions scored after each export ('' = none)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=1e-3, beta1=0.9, beta2=0.999, grad_clip=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/distill", ema_decay=0.0, batch_size=64,
                                                                   max_steps=3000))


@dataclass
class CharCNNRNNConfig:
    """Reed's hybrid char-CNN-RNN (t2igan.text.char_cnn_rnn.CharCNNRNN); defaults = the pretrained CUB model."""

    emb_dim: int = 1024  # output embedding
    cnn_dim: int = 512  # last conv / RNN width
    rnn_type: str = "gru"  # gru (FixedGRU) | rnn (FixedRNN)
    avg: bool = True  # time-average the GRU states
    dropout: float = 0.0
    doc_length: int = 201  # characters per caption
    variant: str = "long"  # long (HybridCNNLong) | short (HybridCNN)


@dataclass
class SJELossConfig:
    symmetric: bool = True  # Reed's -symmetric 1: hinge over texts per image and over images per text


@dataclass
class SJERunConfig:
    task: str = "sje"
    data: DataConfig = field(default_factory=DataConfig)
    model: CharCNNRNNConfig = field(default_factory=CharCNNRNNConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    loss: SJELossConfig = field(default_factory=SJELossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=7e-4))  # RMSprop lr (train_cub_hybrid.sh)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/char_cnn_rnn_synth64", ema_decay=0.0,
                                                                   batch_size=40, max_steps=3000))



# ----------------------------------------------------------------------------- classic family
@dataclass
class GANINTCLSConfig:
    """GAN-INT-CLS (Reed et al. 2016); defaults: Reed's main_cls_int.lua."""

    ngf: int = 128  # generator base width
    ndf: int = 64  # discriminator base width
    nz: int = 100  # noise size
    nt: int = 128  # projected text size
    cls: bool = True  # matching-aware loss: D also sees (real image, wrong caption) as fake
    int_beta: float = 0.5  # INT: G also draws from beta*t1 + (1-beta)*t2 (0 = INT off)


@dataclass
class StackGANConfig:
    """StackGAN v1; defaults: StackGAN-Pytorch code/miscc/config.py (birds shape)."""

    stage: int = 1  # 1: train stage I; 2: train stage II on a frozen stage-I run
    stage1: str = ""  # stage 2: the stage-I run (or its pipeline dir)
    stage1_size: int = 64  # stage-I image side (stage 1); stage II draws data.image_size
    gf_dim: int = 128  # GAN.GF_DIM (stage I works at 8*gf_dim)
    df_dim: int = 64  # GAN.DF_DIM
    c_dim: int = 128  # GAN.CONDITION_DIM
    nz: int = 100  # Z_DIM
    r_num: int = 4  # GAN.R_NUM residual blocks in stage II
    kl_coeff: float = 2.0  # TRAIN.COEFF.KL
    lr_decay_epoch: int = 600  # halve both learning rates every this many epochs (config.py default; paper: 100)
    damsm_lambda: float = 0.0  # not in StackGAN: AttnGAN's DAMSM word+sentence loss on the generated image; 0 = off
    gamma1: float = 4.0  # DAMSM loss (AttnGAN TRAIN.SMOOTH.GAMMA1..3), used when damsm_lambda > 0
    gamma2: float = 5.0
    gamma3: float = 10.0


@dataclass
class StackGANppConfig:
    """StackGAN++ (StackGAN-v2); defaults: code/cfg/birds_3stages.yml."""

    branch_num: int = 3  # TREE.BRANCH_NUM: scales base_size * 2**k
    base_size: int = 64  # TREE.BASE_SIZE: first branch's side
    gf_dim: int = 64  # GAN.GF_DIM
    df_dim: int = 64  # GAN.DF_DIM
    c_dim: int = 128  # GAN.EMBEDDING_DIM
    nz: int = 100  # GAN.Z_DIM
    r_num: int = 2  # GAN.R_NUM
    kl_coeff: float = 2.0  # TRAIN.COEFF.KL
    uncond_loss: float = 1.0  # TRAIN.COEFF.UNCOND_LOSS
    color_loss: float = 0.0  # TRAIN.COEFF.COLOR_LOSS (birds: 0; the *_color configs: 50)
    color_cov: float = 5.0  # covariance term weight relative to the mean term (official: 5)
    hdgan: bool = False  # HDGAN-style discriminators: local patch image loss + pair (matching) loss
    damsm_lambda: float = 0.0  # not in StackGAN++: AttnGAN's DAMSM word+sentence loss on the last scale; 0 = off
    gamma1: float = 4.0  # DAMSM loss (AttnGAN TRAIN.SMOOTH.GAMMA1..3), used when damsm_lambda > 0
    gamma2: float = 5.0
    gamma3: float = 10.0


@dataclass
class AttnGANConfig:
    """AttnGAN; defaults: code/cfg/bird_attn2.yml + code/miscc/config.py."""

    branch_num: int = 3
    base_size: int = 64
    gf_dim: int = 32
    df_dim: int = 64
    c_dim: int = 100  # GAN.CONDITION_DIM
    nz: int = 100
    r_num: int = 2
    kl_coeff: float = 1.0  # the official trainer adds KL_loss unweighted
    damsm_lambda: float = 5.0  # TRAIN.SMOOTH.LAMBDA (birds 5.0)
    gamma1: float = 4.0  # TRAIN.SMOOTH.GAMMA1..3
    gamma2: float = 5.0
    gamma3: float = 10.0


@dataclass
class MirrorGANConfig(AttnGANConfig):
    """MirrorGAN; defaults: cfg/train_bird.yml (DAMSM LAMBDA 0.0, caption LAMBDA1 10.0)."""

    damsm_lambda: float = 0.0
    caption_lambda: float = 10.0  # TRAIN.SMOOTH.LAMBDA1: STREAM caption cross-entropy on fakes


@dataclass
class STREAMConfig:
    """MirrorGAN's STREAM captioner; CAP section of cfg/train_bird.yml. The official CNN is an
    ImageNet ResNet-152; here a small CNN trained from scratch (``width``)."""

    embed_size: int = 256
    hidden_size: int = 256  # the decoder LSTM has 2 * hidden_size units (official)
    num_layers: int = 1
    width: int = 32  # CNN base width
    image_size: int = 64  # side the CNN sees (generated images are resized to it)


def _classic_optim() -> OptimConfig:
    return OptimConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999)


def _classic_train(name: str, ema_decay: float = 0.0) -> TrainConfig:
    return TrainConfig(out_dir=f"runs/{name}", ema_decay=ema_decay)


@dataclass
class GANINTCLSRunConfig:
    task: str = "gan_int_cls"
    data: DataConfig = field(default_factory=DataConfig)
    model: GANINTCLSConfig = field(default_factory=GANINTCLSConfig)
    text_encoder: str = "runs/damsm_synth64"
    optim: OptimConfig = field(default_factory=_classic_optim)
    train: TrainConfig = field(default_factory=lambda: _classic_train("gan_int_cls_synth64"))


@dataclass
class StackGANRunConfig:
    task: str = "stackgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: StackGANConfig = field(default_factory=StackGANConfig)
    text_encoder: str = "runs/damsm_synth64"
    optim: OptimConfig = field(default_factory=_classic_optim)
    train: TrainConfig = field(default_factory=lambda: _classic_train("stackgan_synth64"))


@dataclass
class StackGANppRunConfig:
    task: str = "stackganpp"
    data: DataConfig = field(default_factory=DataConfig)
    model: StackGANppConfig = field(default_factory=StackGANppConfig)
    text_encoder: str = "runs/damsm_synth64"
    optim: OptimConfig = field(default_factory=_classic_optim)
    train: TrainConfig = field(default_factory=lambda: _classic_train("stackganpp_synth64"))


@dataclass
class AttnGANRunConfig:
    task: str = "attngan"
    data: DataConfig = field(default_factory=DataConfig)
    model: AttnGANConfig = field(default_factory=AttnGANConfig)
    text_encoder: str = "runs/damsm_synth64"  # DAMSM run: frozen text encoder + image encoder (DAMSM loss)
    optim: OptimConfig = field(default_factory=_classic_optim)
    train: TrainConfig = field(default_factory=lambda: _classic_train("attngan_synth64", 0.999))  # official avg_param_G


@dataclass
class MirrorGANRunConfig:
    task: str = "mirrorgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: MirrorGANConfig = field(default_factory=MirrorGANConfig)
    text_encoder: str = "runs/damsm_synth64"
    stream: str = "runs/stream_synth64"  # trained STREAM captioner run (task stream); frozen
    optim: OptimConfig = field(default_factory=_classic_optim)
    train: TrainConfig = field(default_factory=lambda: _classic_train("mirrorgan_synth64", 0.999))


@dataclass
class STREAMRunConfig:
    task: str = "stream"
    data: DataConfig = field(default_factory=DataConfig)
    model: STREAMConfig = field(default_factory=STREAMConfig)
    text_encoder: str = "runs/damsm_synth64"  # only its vocabulary is used (same token ids as the GAN)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=1e-3, beta1=0.9, beta2=0.999))
    train: TrainConfig = field(default_factory=lambda: _classic_train("stream_synth64"))


TASKS: dict[str, type] = {"damsm": DAMSMRunConfig, "dfgan": DFGANRunConfig, "evaluator": EvaluatorRunConfig,
                          "gan_int_cls": GANINTCLSRunConfig, "stackgan": StackGANRunConfig,
                          "stackganpp": StackGANppRunConfig, "attngan": AttnGANRunConfig,
                          "mirrorgan": MirrorGANRunConfig, "stream": STREAMRunConfig,
                          "distill": DistillRunConfig, "sje": SJERunConfig}


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
