"""AttnGAN (Xu et al., CVPR 2018): a tree of generators whose later stages attend over the
caption's word features, trained with the DAMSM matching loss. Defaults of
``code/cfg/bird_attn2.yml`` + ``code/miscc/config.py``.

``model.matching: clip`` replaces the DAMSM loss by a frozen CLIP's sentence-level matching loss
(:mod:`t2igan.text.clip_matching`) on the last stage's images, weight ``model.clip_lambda``; the
CLIP is ``model.matching_clip`` (a ``clip:`` spec) or, when empty, the text encoder's own CLIP."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, in_range, positive
from t2igan.data.dataset import Batch
from t2igan.families.base import Family
from t2igan.families.classic import _MultiScaleStep, classic_build, classic_optim, classic_train
from t2igan.families.gan_options import GANOptions
from t2igan.models import attngan
from t2igan.models.blocks import kl_loss


@dataclass
class AttnGANConfig:
    """AttnGAN; defaults: code/cfg/bird_attn2.yml + code/miscc/config.py."""

    branch_num: int = in_range(3, 1, 3)
    base_size: int = in_range(64, 8, 64)
    gf_dim: int = positive(32)
    df_dim: int = positive(64)
    c_dim: int = positive(100)  # GAN.CONDITION_DIM
    nz: int = positive(100)
    r_num: int = at_least(2, 0)
    kl_coeff: float = at_least(1.0, 0)  # the official trainer adds KL_loss unweighted
    damsm_lambda: float = at_least(5.0, 0)  # TRAIN.SMOOTH.LAMBDA (birds 5.0)
    gamma1: float = positive(4.0)  # TRAIN.SMOOTH.GAMMA1..3
    gamma2: float = positive(5.0)
    gamma3: float = positive(10.0)
    matching: str = "damsm"  # the matching loss: damsm (model.damsm_lambda) | clip (model.clip_lambda, sentence level)
    matching_clip: str = ""  # matching=clip: the CLIP (clip:DIR or clip:ARCH:FILE); empty: the text encoder's clip: spec
    clip_lambda: float = at_least(5.0, 0)  # matching=clip: weight of the CLIP sentence loss (temperature gamma3)


@dataclass
class AttnGANRunConfig:
    task: str = "attngan"
    data: DataConfig = field(default_factory=DataConfig)
    model: AttnGANConfig = field(default_factory=AttnGANConfig)
    text_encoder: str = "runs/damsm_synth64"  # a text encoder with word features (t2igan.text.spec): a DAMSM run, minilm[:DIR], clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT; the DAMSM loss needs a DAMSM run
    optim: OptimConfig = field(default_factory=classic_optim)
    train: TrainConfig = field(default_factory=lambda: classic_train("attngan_synth64", 0.999))  # official avg_param_G
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: BCE, 1 D + 1 G update)


class AttnGANStep(_MultiScaleStep):
    family = "attngan"
    words = True
    gen_module = attngan

    def __init__(self, cfg, text, vocab, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, text, vocab, steps_per_epoch, image_encoder)
        m = cfg.model
        self.netG = self.gen_module.G_NET(t_dim=self.nef, c_dim=m.c_dim, nz=m.nz, gf_dim=m.gf_dim, r_num=m.r_num,
                                          branch_num=m.branch_num, base_size=m.base_size, w_dim=self.word_dim)
        self.check_scales()
        self.netsD = [self.gen_module.D_NET(m.base_size * 2 ** k, m.df_dim, self.nef) for k in range(m.branch_num)]
        self.modules = {"netG": self.netG, **{f"netD{k}": d for k, d in enumerate(self.netsD)}}
        self.setup_gan(cfg, self.official_loss, {f"netD{k}": d for k, d in enumerate(self.netsD)}, steps_per_epoch)
        o = cfg.optim
        self.optimizers = {"G": self.adam(self.netG.parameters(), o.lr_g), **self.d_optimizers(o)}

        self.matching = None  # the CLIP matching loss (model.matching=clip): frozen, not checkpointed nor exported
        if m.matching == "clip" and m.clip_lambda > 0:
            from t2igan.text.clip import load_clip
            from t2igan.text.clip_matching import CLIPMatching, matching_clip_source

            self.matching = CLIPMatching(load_clip(matching_clip_source(m.matching_clip, cfg.text_encoder)), m.gamma3)
            self.frozen.append(self.matching.model)

    def frozen_fingerprints(self) -> dict[str, str]:
        return {"matching CLIP": self.matching.clip.fingerprint()} if self.matching is not None else {}

    def extra_g_loss(self, out, batch, words, sent, mask) -> dict[str, torch.Tensor]:
        if self.cfg.model.matching == "clip":
            if self.matching is None:
                return {}
            captions = self.text.texts_of(batch.index, batch.caption_index)
            s0, s1 = self.matching.sentence_losses(out.images[-1], captions)
            return {"clip_s_loss": (s0 + s1) * self.cfg.model.clip_lambda}
        return self.damsm_loss(out.images[-1], words, sent, mask)

    @staticmethod
    def critic(D):
        """Every head of ``D`` on (images, sentence): the input of a gradient penalty."""
        def f(x, sent):
            h = D(x)
            return (D.COND_DNET(h, sent),) + ((D.UNCOND_DNET(h),) if D.UNCOND_DNET is not None else ())
        return f

    def step(self, batch: Batch, step: int):
        words, sent, mask = self.encode(batch)
        B = sent.size(0)
        out = self.netG.run(self.noise(B, sent.device), sent, words, mask, eps=self.ca_eps(B, sent.device))
        logs, adv = {}, self.adv_d
        if self.updates("D", step):
            d_total, pen = 0.0, 0.0
            for k, D in enumerate(self.netsD):  # official discriminator_loss
                real_f, fake_f = D(batch.images[k]), D(out.images[k].detach())
                out_real, out_fake = D.COND_DNET(real_f, sent), D.COND_DNET(fake_f, sent)
                c_real, c_fake = adv(out_real, True), adv(out_fake, False)
                c_wrong = adv(D.COND_DNET(real_f, self.roll(sent)), False)
                if D.UNCOND_DNET is not None:
                    d_loss = (adv(D.UNCOND_DNET(real_f), True) + c_real) / 2.0 + \
                             (adv(D.UNCOND_DNET(fake_f), False) + c_fake + c_wrong) / 3.0
                else:
                    d_loss = c_real + (c_fake + c_wrong) / 2.0
                gp = self.penalty(self.critic(D), batch.images[k], out.images[k], sent)
                if gp is not None:
                    d_loss = d_loss + gp
                    pen = pen + gp.detach()
                self.optimize(f"D{k}", d_loss)
                d_total = d_total + d_loss.detach()
            self.watch(out_real, out_fake)  # the largest scale's conditional logits
            logs["d_loss"] = d_total
            if self.loss_kind in ("wgan-gp", "r1", "ma-gp"):
                logs["d_penalty"] = pen
        if not self.updates("G", step):
            return logs
        g_loss = 0.0
        for k, D in enumerate(self.netsD):  # official generator_loss
            f = D(out.images[k])
            g_loss = g_loss + self.adv_g(D.COND_DNET(f, sent))
            if D.UNCOND_DNET is not None:
                g_loss = g_loss + self.adv_g(D.UNCOND_DNET(f))
        extra = self.extra_g_loss(out, batch, words, sent, mask)
        kl = kl_loss(out.mu, out.logvar)
        g_loss = g_loss + sum(extra.values()) + self.cfg.model.kl_coeff * kl
        self.optimize("G", g_loss)
        return {**logs, "g_loss": g_loss.detach(), "kl": kl.detach(), **{k: v.detach() for k, v in extra.items()}}


def check_matching(cfg) -> None:
    """One line for a bad model.matching / matching_clip / clip_lambda, before anything is read or written."""
    from t2igan.text.clip_matching import check_matching as check_section

    check_section(cfg.model, cfg.text_encoder, key="model", prefix=f"{cfg.task}: ")


_classic_build = classic_build(AttnGANStep)


def build(cfg, data, resume: bool):
    check_matching(cfg)
    return _classic_build(cfg, data, resume)


FAMILY = Family(
    name="attngan", title="AttnGAN", paper="Xu et al., CVPR 2018", config=AttnGANRunConfig, build=build, step=AttnGANStep,
    generators={"attngan": attngan.G_NET}, text="words",
    needs="a text encoder with word features; its DAMSM loss (on by default) a DAMSM run", preset="configs/attngan_synth64.yaml",
)
