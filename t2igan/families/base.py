"""What a model family is, and the contract between a family's training step and the trainer.

A family is one module of :mod:`t2igan.families` holding its run config (``task`` and its
own sections), its :class:`TrainStep`, its export and its generator classes, described by
one :class:`Family` record; :mod:`t2igan.families.registry` lists the records. The CLI, the
config loader, the Pipeline, evaluation and the server read that list and nothing else.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from t2igan import T2IError
from t2igan.core.distributed import Precision, World, all_reduce_mean
from t2igan.families import gan_options as go
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
SWITCHES = ("precision", "channels_last", "compile", "fused_upsample", "adam", "ddp", "accumulate")


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
    :meth:`optimize` honour ``train.precision`` (the backward runs outside autocast).

    A GAN step calls :meth:`setup_gan` with its ``gan`` section (:mod:`t2igan.families.gan_options`)
    before it makes its optimisers; :meth:`optimize` then applies that section to the updates of
    optimiser ``G`` and ``D*`` (schedules, gradient and weight clipping, the gradient norms the
    stability monitor logs), and :meth:`updates` says whether D / G update at a step.
    ``manual_sync``: under torchrun :meth:`optimize` averages the gradients over the processes
    itself (the DistributedDataParallel reduction, without wrappers: the classic families call
    their networks through several methods, which a DDP wrapper's ``forward`` would not see)."""

    ema_of: str | None = None
    switches: frozenset[str] = frozenset({"channels_last", "precision"})
    compilable: tuple[str, ...] = ()
    manual_sync = False
    gan: go.GANOptions | None = None  # the run's gan section (GAN steps)
    loss_kind = ""  # the gan.loss in effect ("official" resolved to the family's)
    step_now = 0  # the step being made (set by train_step; the schedules read it)

    def __init__(self):
        self.world, self.precision = World(), Precision()
        self.frozen: list[nn.Module] = []
        self._grad_sq: dict[str, list[torch.Tensor]] = {}
        self._watch: dict[str, torch.Tensor] = {}

    def to_device(self, device) -> None:
        for m in self.frozen:
            m.to(device)

    def frozen_fingerprints(self) -> dict[str, str]:
        """Fingerprints of the frozen parts the run depends on but does not checkpoint (a CLIP read
        from its folder): saved with each checkpoint, compared on ``--resume``."""
        return {}

    def wrap(self, fn) -> None:
        pass

    def autocast(self):
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor, **kw) -> None:
        with torch.autocast(self.precision.device_type, enabled=False) if self.precision.dtype else contextlib.nullcontext():
            self.precision.scale(loss).backward(**kw)

    # ------------------------------------------------------------------ the gan section
    def setup_gan(self, cfg, official: str, discriminators: dict[str, nn.Module], steps_per_epoch: int = 1) -> None:
        """Read ``cfg.gan`` (checked, one line per bad value); ``official``: the family's own loss;
        ``discriminators``: its D modules (``gan.d_norm`` is applied to them here, before the
        optimisers are made)."""
        self.gan = cfg.gan
        self.loss_kind = go.check_options(cfg.gan, official)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.max_steps = cfg.train.max_steps
        go.prepare_discriminators(cfg.gan, self.loss_kind, discriminators)

    def updates(self, role: str, step: int) -> bool:
        """Whether ``role`` (``D`` or ``G``) updates at ``step`` (``gan.d_every`` / ``gan.g_every``)."""
        if self.gan is None:
            return True
        return step % (self.gan.d_every if role == "D" else self.gan.g_every) == 0

    def lr_factor_family(self, step: int) -> float:
        """A family's own learning-rate factor (StackGAN's halving), times the gan schedule."""
        return 1.0

    def base_lr(self, name: str) -> float:
        return self.cfg.optim.lr_g if name == "G" else self.cfg.optim.lr_d

    def set_schedule(self, name: str, opt) -> None:
        g = self.gan
        sched, warm = (g.lr_schedule_g, g.warmup_g) if name == "G" else (g.lr_schedule_d, g.warmup_d)
        if sched == "constant" and warm == 0:
            return  # the family's own learning rate (constant, or StackGAN's halving) stays
        step = self.step_now
        f = go.lr_factor(sched, step, steps_per_epoch=self.steps_per_epoch, step_epochs=g.lr_step_epochs,
                         decay_steps=g.lr_decay_steps or self.max_steps, end=g.lr_end, warmup=warm)
        lr = self.base_lr(name) * self.lr_factor_family(step) * f
        for group in opt.param_groups:
            group["lr"] = lr

    def watch(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """D's raw outputs on real and on fake images of this step (the monitor's D(real)/D(fake) gap)."""
        self._watch = {"d_out_real": real.detach().float().mean(), "d_out_fake": fake.detach().float().mean()}

    def monitor_logs(self) -> dict[str, torch.Tensor]:
        """Gradient norms of G and D (all D optimisers together) and D's outputs, then reset."""
        out = {f"grad_norm_{k}": torch.stack(v).sum().sqrt() for k, v in self._grad_sq.items()}
        out.update(self._watch)
        self._grad_sq, self._watch = {}, {}
        return out

    def sync_grads(self, params: list) -> None:
        """Average the gradients over the processes (``manual_sync`` steps under torchrun)."""
        if self.manual_sync and self.world.distributed:
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                all_reduce_mean(grads)

    def optimize(self, name: str, loss: torch.Tensor, clip: tuple[list, float] | None = None) -> None:
        """zero_grad, (scaled) backward, gradient average over processes (``manual_sync``), optional
        gradient-norm clip of ``clip[0]`` to ``clip[1]``, step. In a GAN step also: ``gan.grad_clip_*``,
        the learning-rate schedule, ``gan.d_clip`` after a D step and the gradient norm for the monitor."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        self.apply_update(name, clip)

    def apply_update(self, name: str, clip: tuple[list, float] | None = None) -> None:
        """The part of :meth:`optimize` after the backward (for a step that makes its own backward)."""
        opt = self.optimizers[name]
        params = [p for group in opt.param_groups for p in group["params"]]
        self.sync_grads(params)
        g = self.gan
        role = "G" if name == "G" else "D" if name.startswith("D") else ""
        if g is not None and role:
            limit = g.grad_clip_g if role == "G" else g.grad_clip_d
            if clip is None and limit > 0:
                clip = (params, limit)
        unscaled = False
        if clip is not None and clip[1] > 0:
            if self.precision.scaler is not None:
                self.precision.scaler.unscale_(opt)
                unscaled = True
            norm = nn.utils.clip_grad_norm_(clip[0], clip[1])
        elif g is not None and role:
            if self.precision.scaler is not None and not unscaled:
                self.precision.scaler.unscale_(opt)
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())
        if g is not None and role:
            self._grad_sq.setdefault(role, []).append(norm.detach().float().pow(2))
            self.set_schedule(name, opt)
        self.precision.step(opt)
        if g is not None and role == "D" and g.d_clip > 0:
            go.clip_weights(params, g.d_clip)

    def sample(self, captions, seed, n, ema):
        return None


@torch.no_grad()
def sample_sentences(g: nn.Module, sent: torch.Tensor, nz: int, seed: int, n: int) -> torch.Tensor:
    """The training grids' images of a ``forward(z, sent)`` generator: ``n`` per sentence vector, noise
    drawn on the CPU from ``seed`` (same seed, same images on any device), ``g`` in eval mode for the
    call and back in its mode after."""
    was = g.training
    g.eval()
    try:
        dev = next(g.parameters()).device
        sent = sent.to(dev).repeat_interleave(n, 0)
        noise = torch.randn(sent.size(0), nz, generator=torch.Generator().manual_seed(seed)).to(dev)
        return g(noise, sent)
    finally:
        g.train(was)


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
    if getattr(tc, "accumulate", 1) > 1:
        asked["accumulate"] = f"train.accumulate={tc.accumulate}"
    return asked


def check_switches(tc, switches: frozenset[str], task: str, world_size: int = 1) -> None:
    """Refuse, with one line naming the setting, every asked fast path not in ``switches`` (a step's)."""
    for key, setting in asked_switches(tc, world_size).items():
        if key not in switches:
            ok = ", ".join(s for s in SWITCHES if s in switches) or "none"
            raise T2IError(f"{setting}: the {task} step does not support it (its train.* switches: {ok})")
    check_accumulate(tc, world_size)


# ----------------------------------------------------------------------------- gradient accumulation
# ``train.accumulate: K`` (a step with the ``accumulate`` switch): each update sums the gradients of
# K micro-batches of this process's rows, each micro-batch's mean losses weighted by its share of
# the rows, then makes one optimiser step; the batch-wide draws (noise, pairings) are made for the
# whole batch and sliced, so the update is the full batch's to float rounding while the activations
# held at once are those of one micro-batch.
def check_accumulate(tc, world_size: int = 1) -> None:
    """Each process's share of ``train.batch_size`` must split into ``train.accumulate`` equal
    micro-batches (the config load checks the global batch; here the per-process share)."""
    k, b = getattr(tc, "accumulate", 1), tc.batch_size
    if k > 1 and world_size > 1 and b % world_size == 0 and (b // world_size) % k:
        raise T2IError(f"train.accumulate={k}: each of the {world_size} processes' {b // world_size} rows of "
                       f"train.batch_size={b} does not split into {k} equal micro-batches")


def micro_slices(rows: int, k: int) -> list[slice]:
    """``k`` consecutive, equal row ranges of a batch of ``rows`` (``rows`` divisible by ``k``)."""
    if k < 1 or rows % k:
        raise ValueError(f"a batch of {rows} rows does not split into {k} equal micro-batches")
    n = rows // k
    return [slice(i * n, (i + 1) * n) for i in range(k)]


def micro_batches(batch, k: int) -> list:
    """A batch dataclass (:class:`t2igan.data.dataset.Batch`) as ``k`` micro-batches of consecutive
    rows: every tensor field sliced, each tensor of a list field (the images of every scale) too,
    anything else kept."""
    def cut(v, s):
        if torch.is_tensor(v):
            return v[s]
        if isinstance(v, (list, tuple)):
            return type(v)(cut(x, s) for x in v)
        return v

    rows = batch.images[-1].size(0)
    return [dataclasses.replace(batch, **{f.name: cut(getattr(batch, f.name), s) for f in dataclasses.fields(batch)})
            for s in micro_slices(rows, k)]


def no_sync(*modules, when: bool = True) -> contextlib.ExitStack:
    """``no_sync()`` of every DistributedDataParallel wrapper among ``modules`` (also under a
    torch.compile wrapper) when ``when``: that micro-batch's forward and backward then accumulate
    the gradients on this process only, and the last micro-batch's backward (outside it) all-reduces
    the sum once per update, as DDP does for one batch."""
    stack = contextlib.ExitStack()
    if when:
        for m in modules:
            m = getattr(m, "_orig_mod", m)
            if isinstance(m, DistributedDataParallel):
                stack.enter_context(m.no_sync())
    return stack


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
