"""HDGAN (Zhang, Xie & Yang, CVPR 2018): one generator trunk with side outputs at every scale and
one hierarchically-nested discriminator with a pair (image + sentence) head and a local patch
head per scale, least-squares losses. Defaults of ypxie/HDGan ``train/train_gan/train_worker.py``
(``hid_dim 128, emb_dim 128, noise_dim 100, num_resblock 1, KL_COE 4, epoch_decay 100``, Adam
2e-4 / (0.5, 0.999)); the scales are the data's (``data.image_size`` and ``data.num_scales``:
official 256 and 3, sides 64 / 128 / 256).

Official training (``HDGan/HDGan.py``): D sees, per scale, the real image, a mismatched pair and
the detached fake with the same sentence embedding, and minimises ``compute_d_pair_loss`` (real ->
1, wrong and fake -> 0, the latter two averaged) + ``compute_d_img_loss`` (local patches: real
and wrong -> 1 averaged, fake -> 0); G minimises, per scale, the pair and local losses of its
images towards 1 plus ``KL_COE`` times the KL term of the conditioning augmentation. Here the
mismatched pair is a real image with the caption of the batch's previous image (the official
code pairs the caption with another image: the same kind of pair), and both learning rates halve
every ``model.lr_decay_epoch`` epochs. HDGAN-style discriminators on the StackGAN++ tree are
``stackganpp`` with ``model.hdgan: true``; this family is HDGAN's own networks
(:mod:`t2igan.models.hdgan`), which ``t2igan convert hdgan`` imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from t2igan import T2IError
from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, positive
from t2igan.data.dataset import Batch
from t2igan.families.base import Family
from t2igan.families.classic import ClassicStep, classic_build, classic_optim, classic_train
from t2igan.families.gan_options import GANOptions
from t2igan.families.stackgan import lr_factor
from t2igan.models import hdgan
from t2igan.models.blocks import kl_loss


@dataclass
class HDGANConfig:
    """HDGAN; defaults: ypxie/HDGan train_worker.py (birds, 256 px)."""

    hid_dim: int = positive(128)  # width control: the 4x4 map has 8 * hid_dim channels, the D code 4 * hid_dim
    emb_dim: int = positive(128)  # conditioning-augmentation code width
    nz: int = positive(100)  # noise_dim
    num_resblock: int = at_least(1, 0)  # residual blocks per generator scale
    kl_coeff: float = at_least(4.0, 0)  # KL_COE
    d_base_dim: int = at_least(0, 0)  # first width of D's image encoders; 0: official (128 / 64 / 32 at 64 / 128 / 256)
    lr_decay_epoch: int = at_least(100, 0)  # epoch_decay: halve both learning rates every this many epochs; 0 = never


@dataclass
class HDGANRunConfig:
    task: str = "hdgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: HDGANConfig = field(default_factory=HDGANConfig)
    text_encoder: str = "runs/damsm_synth64"  # any text encoder spec (t2igan.text.spec); official: char-CNN-RNN
    optim: OptimConfig = field(default_factory=classic_optim)
    train: TrainConfig = field(default_factory=lambda: classic_train("hdgan_synth64"))
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: least squares)


def sides_of(image_size: int, num_scales: int) -> list[int]:
    """The side outputs of a run: ``image_size / 2**k`` for the ``num_scales`` scales, smallest first."""
    return [image_size // 2 ** (num_scales - 1 - k) for k in range(num_scales)]


class HDGANStep(ClassicStep):
    family = "hdgan"
    official_loss = "lsgan"

    def __init__(self, cfg, text, vocab, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, text, vocab, steps_per_epoch, image_encoder)
        m, d = cfg.model, cfg.data
        sides = sides_of(d.image_size, d.num_scales)
        if any(s < 16 or 2 ** (s.bit_length() - 1) != s for s in sides) or d.image_size > 256:
            raise T2IError(f"hdgan: data.image_size={d.image_size} with data.num_scales={d.num_scales} gives sides "
                           f"{sides}; every side must be a power of two from 16 to 256 (official: 256 and 3)")
        self.netG = hdgan.Generator(sent_dim=self.nef, noise_dim=m.nz, emb_dim=m.emb_dim, hid_dim=m.hid_dim,
                                    num_resblock=m.num_resblock, side_output_at=sides)
        self.netD = hdgan.Discriminator(num_chan=3, hid_dim=m.hid_dim, sent_dim=self.nef, emb_dim=m.emb_dim,
                                        side_output_at=sides, base_dim=m.d_base_dim or None)
        self.modules = {"netG": self.netG, "netD": self.netD}
        self.setup_gan(cfg, self.official_loss, {"netD": self.netD}, steps_per_epoch)
        o = cfg.optim
        self.optimizers = {"G": self.adam(self.netG.parameters(), o.lr_g),
                           "D": self.adam(self.netD.parameters(), o.lr_d)}

    def lr_factor_family(self, step: int) -> float:
        return lr_factor(step, self.steps_per_epoch, self.cfg.model.lr_decay_epoch)

    def set_lr(self, step: int) -> float:
        f = self.lr_factor_family(step)
        for name, base in (("G", self.cfg.optim.lr_g), ("D", self.cfg.optim.lr_d)):
            for group in self.optimizers[name].param_groups:
                group["lr"] = base * f
        return f

    def step(self, batch: Batch, step: int):
        f = self.set_lr(step)
        m = self.cfg.model
        words, sent, mask = self.encode(batch)
        B = sent.size(0)
        out = self.netG.run(self.noise(B, sent.device), sent, eps=self.ca_eps(B, sent.device))
        D, adv = self.netD, self.adv_d
        logs = {"lr_factor": torch.tensor(f)}
        if self.updates("D", step):
            d_loss = 0.0
            wrong_sent = self.roll(sent)
            for k, fake in enumerate(out.images):  # every scale (official: for key in fake_images)
                real = batch.images[k]
                r, w, fk = D(real, sent), D(real, wrong_sent), D(fake.detach(), sent)
                pair = adv(r[0], True) + (adv(w[0], False) + adv(fk[0], False)) / 2.0  # compute_d_pair_loss
                image = adv(fk[1], False) + (adv(w[1], True) + adv(r[1], True)) / 2.0  # compute_d_img_loss
                d_loss = d_loss + pair + image
                gp = self.penalty(D, real, fake.detach(), sent)
                if gp is not None:
                    d_loss = d_loss + gp
            self.watch(r[0], fk[0])  # the largest scale's pair logits
            self.optimize("D", d_loss)
            logs["d_loss"] = d_loss.detach()
        if not self.updates("G", step):
            return logs
        kl = kl_loss(out.mu, out.logvar)  # HDGAN's get_KL_Loss(mean, log_sigma) (logvar = 2 log_sigma)
        g_loss = m.kl_coeff * kl
        for img in out.images:
            pair, local = D(img, sent)
            g_loss = g_loss + self.adv_g(pair) + self.adv_g(local)  # compute_g_loss of both heads
        extra = self.damsm_loss(out.images[-1], words, sent, mask)
        if extra:
            g_loss = g_loss + sum(extra.values())
            logs.update({k: v.detach() for k, v in extra.items()})
        self.optimize("G", g_loss)
        return {**logs, "g_loss": g_loss.detach(), "kl": kl.detach()}


build = classic_build(HDGANStep)


FAMILY = Family(
    name="hdgan", title="HDGAN", paper="Zhang, Xie & Yang, CVPR 2018", config=HDGANRunConfig, build=build,
    step=HDGANStep, generators={"hdgan": hdgan.Generator}, needs="a text encoder",
)
