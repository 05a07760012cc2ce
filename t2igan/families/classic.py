"""What the classic families share (GAN-INT-CLS, StackGAN v1, StackGAN++/HDGAN, AttnGAN,
MirrorGAN): the frozen text side, seeded samples, the export, the optional DAMSM loss, and the
official losses' building blocks.

Losses follow the official trainers: BCE (here with logits) on conditional, unconditional and
mismatched pairs, the mismatched pair being a real image with the caption of the next image in
the batch (``roll``), as StackGAN-Pytorch and AttnGAN build it; GAN-INT-CLS uses the batch's
drawn wrong captions. Every classic family conditions on any frozen text encoder whose outputs
it can use (:mod:`t2igan.text.conditioning`); AttnGAN's DAMSM loss (on by default in AttnGAN,
an option of the others) needs the DAMSM run's image encoder, so a DAMSM text encoder.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import OptimConfig, TrainConfig
from t2igan.core.distributed import all_gather_rows, all_gather_rows_autograd, global_roll, shard_randn
from t2igan.core.folder import write_model_index
from t2igan.families import gan_options as go
from t2igan.families.base import StepBase, adam, generator_kind, needs_damsm_text, text_side
from t2igan.text import damsm
from t2igan.text.conditioning import Conditioning
from t2igan.text.damsm_encoder import load_image_encoder
from t2igan.text.spec import parse_spec, save_encoder_dir


def classic_optim() -> OptimConfig:
    return OptimConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999)


def classic_train(name: str, ema_decay: float = 0.0) -> TrainConfig:
    return TrainConfig(out_dir=f"runs/{name}", ema_decay=ema_decay)


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The official ``BCELoss(sigmoid(x), 1 or 0)``, computed stably from logits."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


def lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (HDGAN): ``mean((x - 1)^2)`` for real, ``mean(x^2)`` for fake."""
    return (logits - 1).pow(2).mean() if real else logits.pow(2).mean()


def roll(x: torch.Tensor) -> torch.Tensor:
    """Pair item i with item i-1's condition (a mismatched pair for every item)."""
    return torch.roll(x, 1, 0)


class ClassicStep(StepBase):
    """Shared parts: frozen text side, seeded samples, export of the pipeline, the optimiser step.

    Subclasses implement :meth:`step` (one D and G update); :meth:`train_step` runs it under the
    run's precision (``train.precision``: autocast for the forward passes, the backward outside it).
    Their losses go through :meth:`adv_d` / :meth:`adv_g` / :meth:`penalty` (``gan.loss``), their
    noise, conditioning-augmentation noise and mismatched pairs through :meth:`noise`, :meth:`ca_eps`
    and :meth:`roll`, which under torchrun are those of the global batch (``manual_sync``: the
    gradients are averaged by :meth:`optimize`; BatchNorm statistics are the global batch's)."""

    ema_of = "netG"
    family = ""
    switches = frozenset({"precision", "channels_last", "adam", "ddp"})
    manual_sync = True
    official_loss = "bce"
    words = False  # the generator attends over word features (of width self.word_dim)

    def __init__(self, cfg, text: Conditioning, vocab, steps_per_epoch: int = 1, image_encoder=None):
        super().__init__()
        self.cfg, self.vocab, self.text = cfg, vocab, text
        self.text_encoder = text.encoder
        self.nef = text.sentence_dim
        self.word_dim = text.encoder.word_dim
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.frozen: list[nn.Module] = [self.text_encoder]
        self.image_encoder = None
        if getattr(cfg.model, "damsm_lambda", 0.0) > 0:
            if image_encoder is None:
                raise T2IError(f"{cfg.task}: model.damsm_lambda > 0 needs the DAMSM image encoder of {cfg.text_encoder}")
            self.image_encoder = image_encoder.eval().requires_grad_(False)
            self.frozen.append(self.image_encoder)

    def adam(self, params, lr: float):
        return adam(params, lr, self.cfg.optim, self.cfg.train.adam)

    def damsm_loss(self, image, words, sent, mask) -> dict[str, torch.Tensor]:
        """AttnGAN's DAMSM word and sentence losses of generated images, each times
        ``model.damsm_lambda`` (official ``words_loss`` + ``sent_loss`` in ``generator_loss``);
        empty when the loss is off."""
        m = self.cfg.model
        if self.image_encoder is None:
            return {}
        self.image_encoder.eval()
        regions, code = self.image_encoder(image)
        regions, code = regions.float(), code.float()
        W = self.world
        if W.distributed:  # the global batch's captions are the negatives, as on one process
            regions, code = all_gather_rows_autograd(regions, W), all_gather_rows_autograd(code, W)
            words, sent = all_gather_rows(words.contiguous(), W), all_gather_rows(sent.contiguous(), W)
            mask = all_gather_rows(mask.to(torch.uint8), W).bool()
        w0, w1 = damsm.words_loss(regions, words, mask, m.gamma1, m.gamma2, m.gamma3)
        s0, s1 = damsm.sentence_loss(code, sent, m.gamma3)
        return {"w_loss": (w0 + w1) * m.damsm_lambda, "s_loss": (s0 + s1) * m.damsm_lambda}

    def encode(self, batch, wrong: bool = False):
        return self.text.batch(batch, wrong)  # words (B, nef, T), sent (B, nef), mask (B, T)

    def noise(self, B: int, device) -> torch.Tensor:
        """(B, nz): this process's rows of the global batch's noise."""
        return shard_randn(self.world, B, self.netG.nz, device=device)

    def ca_eps(self, B: int, device) -> torch.Tensor | None:
        """Conditioning-augmentation noise (B, sum of eps_dims) of the global batch under torchrun;
        None on one process (the generator draws it, the same numbers)."""
        dims = tuple(getattr(self.netG, "eps_dims", ()))
        if not self.world.distributed or not dims:
            return None
        return torch.cat([shard_randn(self.world, B, k, device=device) for k in dims], 1)

    def roll(self, x: torch.Tensor) -> torch.Tensor:
        """Mismatched conditions: row i gets the global batch's previous row (:func:`roll` on one process)."""
        return global_roll(x, self.world)

    def adv_d(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """D's adversarial term of ``gan.loss`` (official: the family's BCE, HDGAN's least squares)."""
        kind = go.BASE_LOSS[self.loss_kind]
        if kind == "bce":
            return bce(logits, real)
        if kind == "lsgan":
            return lsgan(logits, real)
        return go.adversarial(kind, logits, "real" if real else "fake")

    def adv_g(self, logits: torch.Tensor) -> torch.Tensor:
        """G's adversarial term of ``gan.loss``."""
        kind = go.BASE_LOSS[self.loss_kind]
        if kind == "bce":
            return bce(logits, True)
        if kind == "lsgan":
            return lsgan(logits, True)
        return go.adversarial(kind, logits, "g")

    def penalty(self, critic, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor) -> torch.Tensor | None:
        """The gradient penalty of ``gan.loss`` on a discriminator (None without one);
        ``critic(images, cond)``: its outputs (a tensor or the tuple of its heads)."""
        kind = go.PENALTY.get(self.loss_kind)
        if kind is None:
            return None
        g, f = self.gan, (lambda x, c=cond: go.per_image(critic(x, c)))
        if kind == "gp":
            eps = shard_randn(self.world, real.size(0), 1, 1, 1, device=real.device, rand=True)
            return go.wgan_gp(f, real, fake, g.gp_lambda, eps, inv_scale=self.precision.inv_scale())
        if kind == "r1":
            return go.r1_penalty(f, real, g.gp_lambda, inv_scale=self.precision.inv_scale())
        return go.ma_gp(f, real, cond, self.cfg.optim.gp_weight, self.cfg.optim.gp_power,
                        inv_scale=self.precision.inv_scale())

    def train_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        self.step_now = step
        with self.autocast():
            logs = self.step(batch, step)
        self.precision.update()
        return {**logs, **self.monitor_logs()}

    def step(self, batch, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, captions, seed, n, ema):
        g = ema if ema is not None else self.netG
        was = g.training
        g.eval()
        dev = next(g.parameters()).device
        words, sent, mask = (t.to(dev).repeat_interleave(n, 0) for t in self.text.captions(captions))
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(sent.size(0), g.nz, generator=gen).to(dev)
        dims = tuple(getattr(g, "eps_dims", ()))
        eps = torch.cat([torch.randn(sent.size(0), k, generator=gen) for k in dims], 1).to(dev) if dims else None
        out = g.run(z, sent, words, mask, eps=eps).images[-1]
        g.train(was)
        return out

    def export(self, directory: Path, ema) -> None:
        g = ema if ema is not None else self.netG
        save_encoder_dir(directory, self.text_encoder)
        ckpt.save_component(g, directory / "generator", generator_kind(self.family), dict(g.config))
        write_model_index(directory, family=self.family, image_size=int(g.imsize),
                          generator_weights="ema" if ema is not None else "raw")


class _MultiScaleStep(ClassicStep):
    def check_scales(self):
        d, g = self.cfg.data, self.netG
        if d.image_size != g.imsize or d.num_scales != g.branch_num:
            raise T2IError(f"{self.cfg.task}: model.branch_num={g.branch_num} and model.base_size="
                           f"{g.config['base_size']} draw {g.imsize}px at {g.branch_num} scales; set "
                           f"data.image_size={g.imsize} and data.num_scales={g.branch_num} "
                           f"(got {d.image_size} and {d.num_scales})")

    def d_optimizers(self, o):
        return {f"D{k}": self.adam(d.parameters(), o.lr_d) for k, d in enumerate(self.netsD)}


def classic_text(cfg, data, task: str, words: bool = False):
    """(Conditioning, Vocabulary, DAMSM image encoder or None, steps per epoch) of a classic run:
    the DAMSM loss (``model.damsm_lambda > 0``) needs a DAMSM text encoder and its run's image encoder."""
    text, vocab = text_side(cfg, data, task, words=words)
    img = None
    if getattr(cfg.model, "damsm_lambda", 0.0) > 0:
        needs_damsm_text(text, task, f"model.damsm_lambda={cfg.model.damsm_lambda} (set it to 0 for another encoder)")
        img = load_image_encoder(parse_spec(cfg.text_encoder)[1])
    return text, vocab, img, max(1, len(data) // cfg.train.batch_size)


def model_error(task: str, e: ValueError) -> T2IError:
    """A model constructor refusing a size/width combination, as one line."""
    return T2IError(f"{task}: {e}")


def classic_build(step_cls):
    """The ``build`` of a classic family whose step takes (cfg, text, vocab, steps per epoch, image
    encoder); the text side gives word features when the step's ``words`` says it attends over them."""
    def build(cfg, data, resume: bool):
        text, vocab, img, spe = classic_text(cfg, data, cfg.task, words=step_cls.words)
        try:
            return step_cls(cfg, text, vocab, spe, image_encoder=img), vocab
        except ValueError as e:
            raise model_error(cfg.task, e) from None

    return build
