"""GAN-INT-CLS (Reed et al., ICML 2016): a DCGAN conditioned on a projected sentence embedding,
with the matching-aware discriminator (CLS) and interpolated captions (INT); defaults of Reed's
``main_cls_int.lua``."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, in_range, positive
from t2igan.data.dataset import Batch
from t2igan.families.base import Family
from t2igan.families.classic import ClassicStep, classic_build, classic_optim, classic_train
from t2igan.families.gan_options import GANOptions
from t2igan.models import gan_int_cls


@dataclass
class GANINTCLSConfig:
    """GAN-INT-CLS (Reed et al. 2016); defaults: Reed's main_cls_int.lua."""

    ngf: int = positive(128)  # generator base width
    ndf: int = positive(64)  # discriminator base width
    nz: int = positive(100)  # noise size
    nt: int = positive(128)  # projected text size
    cls: bool = True  # matching-aware loss: D also sees (real image, wrong caption) as fake
    int_beta: float = in_range(0.5, 0, 1)  # INT: G also draws from beta*t1 + (1-beta)*t2 (0 = INT off)


@dataclass
class GANINTCLSRunConfig:
    task: str = "gan_int_cls"
    data: DataConfig = field(default_factory=DataConfig)
    model: GANINTCLSConfig = field(default_factory=GANINTCLSConfig)
    text_encoder: str = "runs/damsm_synth64"  # any text encoder spec (t2igan.text.spec): a DAMSM run, minilm[:DIR], clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT
    optim: OptimConfig = field(default_factory=classic_optim)
    train: TrainConfig = field(default_factory=lambda: classic_train("gan_int_cls_synth64"))
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: BCE, 1 D + 1 G update)


class GANINTCLSStep(ClassicStep):
    family = "gan_int_cls"

    def __init__(self, cfg, text, vocab, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, text, vocab, steps_per_epoch, image_encoder)
        m, size = cfg.model, cfg.data.image_size
        self.netG = gan_int_cls.NetG(t_dim=self.nef, nt=m.nt, nz=m.nz, ngf=m.ngf, imsize=size)
        self.netD = gan_int_cls.NetD(t_dim=self.nef, nt=m.nt, ndf=m.ndf, imsize=size)
        self.modules = {"netG": self.netG, "netD": self.netD}
        self.setup_gan(cfg, self.official_loss, {"netD": self.netD}, steps_per_epoch)
        o = cfg.optim
        self.optimizers = {"G": self.adam(self.netG.parameters(), o.lr_g), "D": self.adam(self.netD.parameters(), o.lr_d)}

    def step(self, batch: Batch, step: int):
        m = self.cfg.model
        real = batch.images[-1]
        _, sent, _ = self.encode(batch)
        _, wrong, _ = self.encode(batch, wrong=True)
        B = real.size(0)
        fake = self.netG(self.noise(B, real.device), sent)
        logs = {}
        if self.updates("D", step):
            # D: (real, right) -> 1; (real, wrong) -> 0 [CLS]; (fake, right) -> 0
            feat = self.netD.features(real)
            out_real, out_fake = self.netD.logits(feat, sent), self.netD(fake.detach(), sent)
            self.watch(out_real, out_fake)
            d_real = self.adv_d(out_real, True)
            d_fake = self.adv_d(out_fake, False)
            if m.cls:
                d_wrong = self.adv_d(self.netD.logits(feat, wrong), False)
                d_loss = d_real + 0.5 * (d_wrong + d_fake)
            else:
                d_wrong = torch.zeros((), device=real.device)
                d_loss = d_real + d_fake
            gp = self.penalty(self.netD, real, fake, sent)
            if gp is not None:
                d_loss = d_loss + gp
                logs["d_penalty"] = gp.detach()
            self.optimize("D", d_loss)
            logs.update({"d_loss": d_loss.detach(), "d_real": d_real.detach(), "d_wrong": d_wrong.detach(),
                         "d_fake": d_fake.detach()})
        if self.updates("G", step):
            # G: fool D with the right caption, and [INT] with interpolated captions
            g_fake = self.adv_g(self.netD(fake, sent))
            g_int = torch.zeros((), device=real.device)
            if m.int_beta > 0:
                t_int = m.int_beta * sent + (1 - m.int_beta) * self.roll(sent)
                g_int = self.adv_g(self.netD(self.netG(self.noise(B, real.device), t_int), t_int))
            g_loss = g_fake + g_int
            self.optimize("G", g_loss)
            logs.update({"g_loss": g_loss.detach(), "g_int": g_int.detach()})
        return logs


build = classic_build(GANINTCLSStep)


FAMILY = Family(
    name="gan_int_cls", title="GAN-INT-CLS", paper="Reed et al., ICML 2016", config=GANINTCLSRunConfig, build=build, step=GANINTCLSStep,
    generators={"gan_int_cls": gan_int_cls.NetG}, needs="a text encoder (a DAMSM run or a frozen encoder)",
    preset="configs/gan_int_cls_synth64.yaml",
)
