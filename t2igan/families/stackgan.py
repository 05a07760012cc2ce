"""StackGAN v1 (Zhang et al., ICCV 2017): stage I draws 64 px from the sentence through
conditioning augmentation; stage II refines it to 256 px on a frozen stage-I run. Defaults of
StackGAN-Pytorch ``code/miscc/config.py`` (birds)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, in_range, positive
from t2igan.core.folder import resolve_dir
from t2igan.data.dataset import Batch
from t2igan.families.base import Family, generator_kind
from t2igan.families.classic import ClassicStep, classic_build, classic_optim, classic_train
from t2igan.families.gan_options import GANOptions
from t2igan.models import stackgan
from t2igan.models.blocks import kl_loss


@dataclass
class StackGANConfig:
    """StackGAN v1; defaults: StackGAN-Pytorch code/miscc/config.py (birds shape)."""

    stage: int = in_range(1, 1, 2)  # 1: train stage I; 2: train stage II on a frozen stage-I run
    stage1: str = ""  # stage 2: the stage-I run (or its pipeline dir)
    stage1_size: int = in_range(64, 8, 64)  # stage-I image side (stage 1); stage II draws data.image_size
    gf_dim: int = positive(128)  # GAN.GF_DIM (stage I works at 8*gf_dim)
    df_dim: int = positive(64)  # GAN.DF_DIM
    c_dim: int = positive(128)  # GAN.CONDITION_DIM
    nz: int = positive(100)  # Z_DIM
    r_num: int = at_least(4, 0)  # GAN.R_NUM residual blocks in stage II
    kl_coeff: float = at_least(2.0, 0)  # TRAIN.COEFF.KL
    lr_decay_epoch: int = at_least(600, 0)  # halve both learning rates every this many epochs (config.py default; paper: 100); 0 = off (gan.lr_schedule_* multiply it)
    damsm_lambda: float = at_least(0.0, 0)  # not in StackGAN: AttnGAN's DAMSM word+sentence loss on the generated image; 0 = off
    gamma1: float = positive(4.0)  # DAMSM loss (AttnGAN TRAIN.SMOOTH.GAMMA1..3), used when damsm_lambda > 0
    gamma2: float = positive(5.0)
    gamma3: float = positive(10.0)


@dataclass
class StackGANRunConfig:
    task: str = "stackgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: StackGANConfig = field(default_factory=StackGANConfig)
    text_encoder: str = "runs/damsm_synth64"  # any text encoder spec (t2igan.text.spec): a DAMSM run, minilm[:DIR], clip:ARCH:CKPT, char-cnn-rnn:DIR, precomputed:DATA_ROOT
    optim: OptimConfig = field(default_factory=classic_optim)
    train: TrainConfig = field(default_factory=lambda: classic_train("stackgan_synth64"))
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: BCE, 1 D + 1 G update)


def lr_factor(step: int, steps_per_epoch: int, decay_epoch: int) -> float:
    """StackGAN: both learning rates halve every ``decay_epoch`` epochs."""
    if decay_epoch <= 0:
        return 1.0
    return 0.5 ** ((step // steps_per_epoch) // decay_epoch)


class StackGANStep(ClassicStep):
    """Stage 1 (``model.stage: 1``) or stage 2 on a frozen stage-I run (``model.stage1``)."""

    def __init__(self, cfg, text, vocab, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, text, vocab, steps_per_epoch, image_encoder)
        m, size = cfg.model, cfg.data.image_size
        if m.stage == 1:
            if size != m.stage1_size:
                raise T2IError(f"stackgan stage 1: data.image_size={size} must equal model.stage1_size={m.stage1_size}")
            self.family = "stackgan_stage1"
            self.netG = stackgan.STAGE1_G(t_dim=self.nef, c_dim=m.c_dim, nz=m.nz, gf_dim=m.gf_dim, imsize=size)
            self.netD = stackgan.STAGE1_D(df_dim=m.df_dim, c_dim=m.c_dim, imsize=size)
        elif m.stage == 2:
            self.family = "stackgan_stage2"
            s1 = load_stage1(m.stage1, text.encoder)
            self.netG = stackgan.STAGE2_G(stage1=s1.config, gf_dim=m.gf_dim, c_dim=m.c_dim, r_num=m.r_num, imsize=size)
            self.netG.STAGE1_G.load_state_dict(s1.state_dict())
            self.netD = stackgan.STAGE2_D(df_dim=m.df_dim, c_dim=m.c_dim, imsize=size)
        else:
            raise T2IError(f"model.stage must be 1 or 2, got {m.stage}")
        self.modules = {"netG": self.netG, "netD": self.netD}
        self.setup_gan(cfg, self.official_loss, {"netD": self.netD}, steps_per_epoch)
        o = cfg.optim
        self.optimizers = {"G": self.adam(self.netG.parameters(), o.lr_g), "D": self.adam(self.netD.parameters(), o.lr_d)}

    def set_lr(self, step: int) -> float:
        f = lr_factor(step, self.steps_per_epoch, self.cfg.model.lr_decay_epoch)
        for name, base in (("G", self.cfg.optim.lr_g), ("D", self.cfg.optim.lr_d)):
            for group in self.optimizers[name].param_groups:
                group["lr"] = base * f
        return f

    def lr_factor_family(self, step: int) -> float:
        return lr_factor(step, self.steps_per_epoch, self.cfg.model.lr_decay_epoch)

    def critic(self, x, cond):
        """Every head of D on (images, condition): the input of a gradient penalty."""
        f = self.netD(x)
        heads = [self.netD.get_cond_logits(f, cond)]
        if self.netD.get_uncond_logits is not None:
            heads.append(self.netD.get_uncond_logits(f))
        return tuple(heads)

    def step(self, batch: Batch, step: int):
        f = self.set_lr(step)
        real = batch.images[-1]
        words, sent, mask = self.encode(batch)
        B = real.size(0)
        out = self.netG.run(self.noise(B, real.device), sent, eps=self.ca_eps(B, real.device))
        fake, mu, logvar = out.images[-1], out.mu, out.logvar
        cond = mu.detach()
        D = self.netD
        logs = {"lr_factor": torch.tensor(f)}
        if self.updates("D", step):
            # D (official compute_discriminator_loss)
            real_f, fake_f = D(real), D(fake.detach())
            out_real = D.get_cond_logits(real_f, cond)
            out_wrong = D.get_cond_logits(real_f, self.roll(cond))
            out_fake = D.get_cond_logits(fake_f, cond)  # the official order (BatchNorm in the heads)
            self.watch(out_real, out_fake)
            d_real, d_wrong, d_fake = self.adv_d(out_real, True), self.adv_d(out_wrong, False), self.adv_d(out_fake, False)
            if D.get_uncond_logits is not None:
                u_real = self.adv_d(D.get_uncond_logits(real_f), True)
                u_fake = self.adv_d(D.get_uncond_logits(fake_f), False)
                d_loss = (d_real + u_real) / 2.0 + (d_fake + d_wrong + u_fake) / 3.0
            else:
                d_loss = d_real + (d_fake + d_wrong) * 0.5
            gp = self.penalty(self.critic, real, fake, cond)
            if gp is not None:
                d_loss = d_loss + gp
                logs["d_penalty"] = gp.detach()
            self.optimize("D", d_loss)
            logs.update({"d_loss": d_loss.detach(), "d_real": d_real.detach(), "d_wrong": d_wrong.detach(),
                         "d_fake": d_fake.detach()})
        if self.updates("G", step):
            # G (compute_generator_loss + KL)
            fake_f = D(fake)
            g_adv = self.adv_g(D.get_cond_logits(fake_f, cond))
            if D.get_uncond_logits is not None:
                g_adv = g_adv + self.adv_g(D.get_uncond_logits(fake_f))
            kl = kl_loss(mu, logvar)
            extra = self.damsm_loss(fake, words, sent, mask)
            g_loss = g_adv + sum(extra.values()) + self.cfg.model.kl_coeff * kl
            self.optimize("G", g_loss)
            logs.update({"g_loss": g_loss.detach(), "kl": kl.detach(), **{k: v.detach() for k, v in extra.items()}})
        return logs


def load_stage1(path: str, encoder) -> stackgan.STAGE1_G:
    """The stage-I generator of a ``stackgan`` stage-1 run (its exported pipeline), trained on the
    same text encoder as ``encoder``."""
    from t2igan.text.spec import load_encoder_dir

    if not path:
        raise T2IError("stackgan stage 2 needs model.stage1: the folder of a trained stage-I run")
    d = resolve_dir(path)
    info = ckpt.read_json(d / "model_index.json")
    if info.get("family") != "stackgan_stage1":
        raise T2IError(f"model.stage1={path}: not a StackGAN stage-I run (family {info.get('family')!r})")
    cfg, state = ckpt.read_component(d / "generator", generator_kind("stackgan_stage1"))
    g = stackgan.STAGE1_G(**cfg)
    ckpt.load_state_strict(g, state, str(d / "generator"))
    with torch.random.fork_rng(devices=[]):  # building the encoder must not move the seeded initialisation
        same = load_encoder_dir(d).fingerprint() == encoder.fingerprint()
    if not same:
        raise T2IError(f"model.stage1={path}: its text encoder differs from this run's; train both stages "
                       "with the same text_encoder")
    return g


build = classic_build(StackGANStep)


FAMILY = Family(
    name="stackgan", title="StackGAN", paper="Zhang et al., ICCV 2017", config=StackGANRunConfig, build=build, step=StackGANStep,
    generators={"stackgan_stage1": stackgan.STAGE1_G, "stackgan_stage2": stackgan.STAGE2_G},
    needs="a text encoder; stage II: a stage-I run (model.stage1)", preset="configs/stackgan_stage1_synth64.yaml",
    titles={"stackgan_stage1": "StackGAN stage I", "stackgan_stage2": "StackGAN stage II"},
)
