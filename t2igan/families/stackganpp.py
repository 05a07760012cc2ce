"""StackGAN++ (StackGAN-v2, Zhang et al., TPAMI 2018): a tree of generators drawing 64, 128 and
256 px jointly, with conditional and unconditional losses and the colour-consistency term;
``model.hdgan: true`` swaps in HDGAN-style discriminators (Zhang et al., CVPR 2018: local patch
image loss + pair loss, least squares). Defaults of ``code/cfg/birds_3stages.yml``."""
from __future__ import annotations

from dataclasses import dataclass, field

from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, in_range, positive
from t2igan.data.dataset import Batch
from t2igan.families.base import Family
from t2igan.families.classic import _MultiScaleStep, classic_build, classic_optim, classic_train
from t2igan.families.gan_options import GANOptions
from t2igan.models import stackganpp
from t2igan.models.blocks import color_consistency_loss, kl_loss


@dataclass
class StackGANppConfig:
    """StackGAN++ (StackGAN-v2); defaults: code/cfg/birds_3stages.yml."""

    branch_num: int = in_range(3, 1, 3)  # TREE.BRANCH_NUM: scales base_size * 2**k
    base_size: int = in_range(64, 8, 64)  # TREE.BASE_SIZE: first branch's side
    gf_dim: int = positive(64)  # GAN.GF_DIM
    df_dim: int = positive(64)  # GAN.DF_DIM
    c_dim: int = positive(128)  # GAN.EMBEDDING_DIM
    nz: int = positive(100)  # GAN.Z_DIM
    r_num: int = at_least(2, 0)  # GAN.R_NUM
    kl_coeff: float = at_least(2.0, 0)  # TRAIN.COEFF.KL
    uncond_loss: float = at_least(1.0, 0)  # TRAIN.COEFF.UNCOND_LOSS
    color_loss: float = at_least(0.0, 0)  # TRAIN.COEFF.COLOR_LOSS (birds: 0; the *_color configs: 50)
    color_cov: float = at_least(5.0, 0)  # covariance term weight relative to the mean term (official: 5)
    hdgan: bool = False  # HDGAN-style discriminators: local patch image loss + pair (matching) loss
    damsm_lambda: float = at_least(0.0, 0)  # not in StackGAN++: AttnGAN's DAMSM word+sentence loss on the last scale; 0 = off
    gamma1: float = positive(4.0)  # DAMSM loss (AttnGAN TRAIN.SMOOTH.GAMMA1..3), used when damsm_lambda > 0
    gamma2: float = positive(5.0)
    gamma3: float = positive(10.0)


@dataclass
class StackGANppRunConfig:
    task: str = "stackganpp"
    data: DataConfig = field(default_factory=DataConfig)
    model: StackGANppConfig = field(default_factory=StackGANppConfig)
    text_encoder: str = "runs/damsm_synth64"  # any text encoder spec (t2igan.text.spec): a DAMSM run, minilm[:DIR], clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT
    optim: OptimConfig = field(default_factory=classic_optim)
    train: TrainConfig = field(default_factory=lambda: classic_train("stackganpp_synth64"))
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: BCE; model.hdgan: least squares)


class StackGANppStep(_MultiScaleStep):
    family = "stackganpp"

    def __init__(self, cfg, text, vocab, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, text, vocab, steps_per_epoch, image_encoder)
        m = cfg.model
        self.netG = stackganpp.G_NET(t_dim=self.nef, c_dim=m.c_dim, nz=m.nz, gf_dim=m.gf_dim, r_num=m.r_num,
                                     branch_num=m.branch_num, base_size=m.base_size)
        self.check_scales()
        self.netsD = [stackganpp.D_NET(m.base_size * 2 ** k, m.df_dim, m.c_dim, hdgan=m.hdgan) for k in range(m.branch_num)]
        self.modules = {"netG": self.netG, **{f"netD{k}": d for k, d in enumerate(self.netsD)}}
        self.setup_gan(cfg, "lsgan" if m.hdgan else self.official_loss,
                       {f"netD{k}": d for k, d in enumerate(self.netsD)}, steps_per_epoch)
        o = cfg.optim
        self.optimizers = {"G": self.adam(self.netG.parameters(), o.lr_g), **self.d_optimizers(o)}

    def step(self, batch: Batch, step: int):
        m = self.cfg.model
        words, sent, mask = self.encode(batch)
        B = sent.size(0)
        out = self.netG.run(self.noise(B, sent.device), sent, eps=self.ca_eps(B, sent.device))
        mu, logvar = out.mu, out.logvar
        cond = mu.detach()
        logs = {}
        if self.updates("D", step):
            d_total, pen = 0.0, 0.0
            for k, D in enumerate(self.netsD):
                real, fake = batch.images[k], out.images[k].detach()
                r, w, f = D(real, cond), D(real, self.roll(cond)), D(fake, cond)  # the official order
                d_loss = (self.d_loss_hdgan if m.hdgan else self.d_loss)(r, w, f)
                gp = self.penalty(D, real, fake, cond)
                if gp is not None:
                    d_loss = d_loss + gp
                    pen = pen + gp.detach()
                self.optimize(f"D{k}", d_loss)
                d_total = d_total + d_loss.detach()
            self.watch(r[0], f[0])  # the largest scale's pair (conditional) logits
            logs["d_loss"] = d_total
            if self.loss_kind in ("wgan-gp", "r1", "ma-gp"):
                logs["d_penalty"] = pen
        if not self.updates("G", step):
            return logs
        g_loss = 0.0
        for k, D in enumerate(self.netsD):  # official train_Gnet (HDGAN: pair + local image loss, LSGAN)
            pair, local = D(out.images[k], mu)
            if m.hdgan:
                g_loss = g_loss + self.adv_g(pair) + self.adv_g(local)
            else:
                g_loss = g_loss + self.adv_g(pair) + (m.uncond_loss * self.adv_g(local) if m.uncond_loss > 0 else 0.0)
        if m.color_loss > 0 and len(out.images) > 1:
            color = sum(color_consistency_loss(out.images[k], out.images[k - 1], m.color_loss, m.color_cov)
                        for k in range(1, len(out.images)))
            g_loss = g_loss + color
            logs["color"] = color.detach()
        extra = self.damsm_loss(out.images[-1], words, sent, mask)
        if extra:
            g_loss = g_loss + sum(extra.values())
            logs.update({k: v.detach() for k, v in extra.items()})
        kl = kl_loss(mu, logvar)
        g_loss = g_loss + m.kl_coeff * kl
        self.optimize("G", g_loss)
        return {**logs, "g_loss": g_loss.detach(), "kl": kl.detach()}

    def d_loss(self, r, w, f):
        """Official StackGAN++ train_Dnet (wrong pair = real image, mismatched condition)."""
        u, adv = self.cfg.model.uncond_loss, self.adv_d
        e_real, e_wrong, e_fake = adv(r[0], True), adv(w[0], False), adv(f[0], False)
        if u > 0:
            e_real = e_real + u * adv(r[1], True)
            e_wrong = e_wrong + u * adv(w[1], True)  # a real image is real, whatever the caption
            e_fake = e_fake + u * adv(f[1], False)
            return e_real + e_wrong + e_fake
        return e_real + 0.5 * (e_wrong + e_fake)

    def d_loss_hdgan(self, r, w, f):
        """HDGAN ``compute_d_pair_loss`` + ``compute_d_img_loss`` (least squares; the local image
        loss sees real and mismatched-caption real images as real, fakes as fake)."""
        adv = self.adv_d
        pair = adv(r[0], True) + (adv(w[0], False) + adv(f[0], False)) / 2.0
        image = 0.5 * adv(w[1], True) + 0.5 * adv(r[1], True) + adv(f[1], False)
        return pair + image


build = classic_build(StackGANppStep)


FAMILY = Family(
    name="stackganpp", title="StackGAN++", paper="Zhang et al., TPAMI 2018 (HDGAN-style D: model.hdgan)",
    config=StackGANppRunConfig, build=build, step=StackGANppStep, generators={"stackganpp": stackganpp.G_NET},
    needs="a text encoder", preset="configs/stackganpp_synth64.yaml",
)
