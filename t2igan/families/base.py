"""What a model family is, and the contract between a family's training step and the trainer.

A family is one module of :mod:`t2igan.families` holding its run config (``task`` and its
own sections), its :class:`TrainStep`, its export and its generator classes, described by
one :class:`Family` record; :mod:`t2igan.families.registry` lists the records. The CLI, the
config loader, the Pipeline, evaluation and the server read that list and nothing else.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from t2igan import T2IError
from t2igan.core.distributed import Precision, World
from t2igan.text.base import CaptionEncoder
from t2igan.text.conditioning import Conditioning, vocabulary_for


@dataclass(frozen=True)
class Family:
    name: str  # the config's ``task`` and the CLI's name for it
    title: str  # display name ("DF-GAN")
    paper: str  # where it comes from
    config: type  # the run config dataclass (its ``task`` default is ``name``)
    build: Callable[..., Any] | None = None  # (cfg, data, resume) -> (TrainStep, Vocabulary): trained by the one trainer
    step: type | None = None  # the class of the TrainStep that build makes (its ``switches`` are checked first)
    fit: Callable[..., Path] | None = None  # (cfg) -> output folder: families with a loop of their own (evaluator)
    generators: Mapping[str, type] = field(default_factory=dict)  # model_index.json "family" -> generator class
    outputs: tuple[str, ...] = ()  # model_index.json "family" of the other folders it writes (encoders, captioners)
    text: str = "sentence"  # what it reads of its text encoder: sentence | words | trains (its own) | none
    needs: str = ""  # what must be trained before it
    preset: str = ""  # its SynthFlowers preset in configs/
    titles: Mapping[str, str] = field(default_factory=dict)  # display names of its outputs, where not ``title``

    def title_of(self, model_family: str) -> str:
        return self.titles.get(model_family, self.title)

    @property
    def switches(self) -> frozenset[str]:
        """The train.* fast paths its step honours (none for a family with its own loop)."""
        return self.step.switches if self.step is not None else frozenset()

    def __post_init__(self):
        if (self.build is None) == (self.fit is None):
            raise ValueError(f"family {self.name}: give exactly one of build (the trainer's step) or fit (own loop)")
        if self.build is not None and self.step is None:
            raise ValueError(f"family {self.name}: name its TrainStep class (step=...)")


# A generator class (``Family.generators``) is an ``nn.Module`` built from its ``config`` dict
# (saved as generator/config.json) with ``nz`` (noise width) and ``imsize``, and either
# ``run(z, sent, words, mask, eps=None) -> GenOutput`` (multi-stage or word-attending models;
# ``eps_dims``: widths of its conditioning-augmentation noise) or ``forward(z, sent) -> images``.
# Optional: ``stage_sizes`` (every stage's side, smallest first) and ``returns_attention``.
def generator_kind(model_family: str) -> str:
    """The component kind of a generator in ``generator/config.json``."""
    return f"{model_family}_generator"


# ----------------------------------------------------------------------------- the training contract
SWITCHES = ("precision", "channels_last", "compile", "fused_upsample", "adam", "ddp")


class TrainStep(Protocol):
    """What the trainer (:class:`t2igan.train.trainer.Trainer`) uses of a family's step."""

    modules: dict[str, nn.Module]  # checkpointed; moved to the device and set to train() every step
    optimizers: dict[str, torch.optim.Optimizer]  # checkpointed
    ema_of: str | None  # the module whose EMA is kept (the generator), or None
    switches: frozenset[str]  # the train.* fast paths it honours (of SWITCHES); the others are refused
    compilable: tuple[str, ...]  # modules train.compile may wrap
    world: World  # set by the trainer
    precision: Precision  # set by the trainer

    def to_device(self, device: torch.device) -> None: ...  # frozen, not checkpointed parts

    def wrap(self, fn: Callable[[str, nn.Module], Callable]) -> None: ...  # install DDP / compile wrappers

    def train_step(self, batch, step: int) -> dict[str, torch.Tensor]: ...

    def sample(self, captions: list[str], seed: int, n: int, ema: nn.Module | None) -> torch.Tensor | None: ...

    def export(self, directory: Path, ema: nn.Module | None) -> None: ...


class StepBase:
    """Defaults of the contract: no EMA, no compile, no frozen parts, fp32, one process, no samples.

    ``self.frozen`` lists frozen modules to move with the step; :meth:`backward` and
    :meth:`optimize` honour ``train.precision`` (the backward runs outside autocast)."""

    ema_of: str | None = None
    switches: frozenset[str] = frozenset({"channels_last", "precision"})
    compilable: tuple[str, ...] = ()

    def __init__(self):
        self.world, self.precision = World(), Precision()
        self.frozen: list[nn.Module] = []

    def to_device(self, device) -> None:
        for m in self.frozen:
            m.to(device)

    def wrap(self, fn) -> None:
        pass

    def autocast(self):
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor, **kw) -> None:
        with torch.autocast(self.precision.device_type, enabled=False) if self.precision.dtype else contextlib.nullcontext():
            self.precision.scale(loss).backward(**kw)

    def optimize(self, name: str, loss: torch.Tensor, clip: tuple[list, float] | None = None) -> None:
        """zero_grad, (scaled) backward, optional gradient-norm clip of ``clip[0]`` to ``clip[1]``, step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        if clip is not None and clip[1] > 0:
            if self.precision.scaler is not None:
                self.precision.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(clip[0], clip[1])
        self.precision.step(opt)

    def sample(self, captions, seed, n, ema):
        return None


def adam(params, lr: float, o, impl: str = "default") -> torch.optim.Adam:
    """Adam of the ``optim`` section with the implementation chosen by ``train.adam``: ``default``
    (torch's choice: a per-parameter loop on CPU, foreach on CUDA), ``foreach`` or ``fused``."""
    kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=(o.beta1, o.beta2),
                            weight_decay=o.weight_decay, **kw)


def asked_switches(tc, world_size: int = 1) -> dict[str, str]:
    """The train.* fast paths a run asks for (switch -> its setting, as the user wrote it)."""
    asked = {}
    if tc.precision != "fp32":
        asked["precision"] = f"train.precision={tc.precision}"
    if tc.channels_last:
        asked["channels_last"] = "train.channels_last=true"
    if tc.compile:
        asked["compile"] = "train.compile=true"
    if tc.fused_upsample:
        asked["fused_upsample"] = "train.fused_upsample=true"
    if tc.adam != "default":
        asked["adam"] = f"train.adam={tc.adam}"
    if world_size > 1:
        asked["ddp"] = f"{world_size} processes (torchrun)"
    return asked


def check_switches(tc, switches: frozenset[str], task: str, world_size: int = 1) -> None:
    """Refuse, with one line naming the setting, every asked fast path not in ``switches`` (a step's)."""
    for key, setting in asked_switches(tc, world_size).items():
        if key not in switches:
            ok = ", ".join(s for s in SWITCHES if s in switches) or "none"
            raise T2IError(f"{setting}: the {task} step does not support it (its fast paths: {ok})")


# ----------------------------------------------------------------------------- the text side
def text_side(cfg, data, task: str, words: bool = False, encoder: CaptionEncoder | None = None):
    """(Conditioning, Vocabulary) for a GAN conditioned on the frozen encoder ``cfg.text_encoder``
    (any spec of :mod:`t2igan.text.spec`); ``words``: the family attends over word features."""
    from t2igan.text.spec import load_caption_encoder

    enc = encoder if encoder is not None else load_caption_encoder(cfg.text_encoder)
    max_words = getattr(enc, "max_words", None)
    if max_words is not None and max_words != cfg.data.max_words:
        raise T2IError(f"data.max_words={cfg.data.max_words} but the text encoder in {cfg.text_encoder} uses {max_words}")
    cond = Conditioning(enc, data.captions, Path(cfg.data.root) / ".cache" / "text_embeddings", words=words, family=task)
    return cond, vocabulary_for(enc, data.captions, cfg.data.min_word_count)


def needs_damsm_text(cond: Conditioning, task: str, what: str) -> None:
    """Refuse a DAMSM-only option with another encoder, in one line."""
    if not cond.token_level:
        raise T2IError(f"{task}: {what} needs the DAMSM text encoder of a DAMSM run (its image encoder was trained "
                       f"against it); the text encoder here is {cond.encoder.spec!r}")
