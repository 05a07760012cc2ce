"""Training steps of the classic family (GAN-INT-CLS, StackGAN v1, StackGAN++/HDGAN, AttnGAN,
MirrorGAN and its STREAM captioner). The one trainer (:mod:`t2igan.train.trainer`) owns the
loop; each class here supplies networks, optimisers, one optimisation step, samples and the
exported pipeline. All GAN families condition on a frozen DAMSM text encoder (``text_encoder``
in the run config); AttnGAN also uses that run's DAMSM image encoder for its matching loss, and
so do StackGAN v1, StackGAN++ and MirrorGAN when ``model.damsm_lambda > 0`` (off in their
official configs).

Losses follow the official trainers: BCE (here with logits) on conditional, unconditional and
mismatched pairs, the mismatched pair being a real image with the caption of the next image in
the batch (``roll``), as StackGAN-Pytorch and AttnGAN build it; GAN-INT-CLS uses the batch's
drawn wrong captions.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2igan import T2IError
from t2igan.data.dataset import Batch
from t2igan.models import attngan, gan_int_cls, mirrorgan, stackgan, stackganpp
from t2igan.models.blocks import color_consistency_loss, kl_loss
from t2igan.pipeline import generator_config, generator_kind, save_text_encoder, write_model_index
from t2igan.text import damsm
from t2igan.train import checkpoint as ckpt

CLASSIC_TASKS = ("gan_int_cls", "stackgan", "stackganpp", "attngan", "mirrorgan", "stream")


def _adam(params, lr, o):
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=(o.beta1, o.beta2),
                            weight_decay=o.weight_decay)


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The official ``BCELoss(sigmoid(x), 1 or 0)``, computed stably from logits."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


def lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (HDGAN): ``mean((x - 1)^2)`` for real, ``mean(x^2)`` for fake."""
    return (logits - 1).pow(2).mean() if real else logits.pow(2).mean()


def roll(x: torch.Tensor) -> torch.Tensor:
    """Pair item i with item i-1's condition (a mismatched pair for every item)."""
    return torch.roll(x, 1, 0)


class ClassicStep:
    """Shared parts: frozen text encoder, seeded samples, export of the pipeline."""

    ema_of = "netG"
    family = ""

    def __init__(self, cfg, vocab, text_encoder: damsm.TextEncoder, text_args: dict, steps_per_epoch: int = 1,
                 image_encoder: damsm.ImageEncoder | None = None):
        self.cfg, self.vocab, self.text_args = cfg, vocab, text_args
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.nef = text_encoder.nef
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.frozen: list[nn.Module] = [self.text_encoder]
        self.image_encoder = None
        if getattr(cfg.model, "damsm_lambda", 0.0) > 0:
            if image_encoder is None:
                raise T2IError(f"{cfg.task}: model.damsm_lambda > 0 needs the DAMSM image encoder of {cfg.text_encoder}")
            self.image_encoder = image_encoder.eval().requires_grad_(False)
            self.frozen.append(self.image_encoder)

    def damsm_loss(self, image, words, sent, mask) -> dict[str, torch.Tensor]:
        """AttnGAN's DAMSM word and sentence losses of generated images, each times
        ``model.damsm_lambda`` (official ``words_loss`` + ``sent_loss`` in ``generator_loss``);
        empty when the loss is off."""
        m = self.cfg.model
        if self.image_encoder is None:
            return {}
        self.image_encoder.eval()
        regions, code = self.image_encoder(image)
        w0, w1 = damsm.words_loss(regions, words, mask, m.gamma1, m.gamma2, m.gamma3)
        s0, s1 = damsm.sentence_loss(code, sent, m.gamma3)
        return {"w_loss": (w0 + w1) * m.damsm_lambda, "s_loss": (s0 + s1) * m.damsm_lambda}

    def to_device(self, device):
        for m in self.frozen:
            m.to(device)

    @torch.no_grad()
    def encode(self, tokens, lengths):
        self.text_encoder.eval()
        return self.text_encoder(tokens, lengths)  # words (B, nef, T), sent (B, nef), mask (B, T)

    def noise(self, B: int, device) -> torch.Tensor:
        return torch.randn(B, self.netG.nz, device=device)

    @torch.no_grad()
    def sample(self, tokens, lengths, seed, n, ema):
        g = ema if ema is not None else self.netG
        was = g.training
        g.eval()
        words, sent, mask = (t.repeat_interleave(n, 0) for t in self.encode(tokens, lengths))
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(sent.size(0), g.nz, generator=gen).to(sent.device)
        dims = tuple(getattr(g, "eps_dims", ()))
        eps = torch.cat([torch.randn(sent.size(0), k, generator=gen) for k in dims], 1).to(sent.device) if dims else None
        out = g.run(z, sent, words, mask, eps=eps).images[-1]
        g.train(was)
        return out

    def export(self, directory: Path, ema) -> None:
        g = ema if ema is not None else self.netG
        save_text_encoder(directory, self.text_encoder, self.text_args, self.vocab, self.cfg.data.max_words)
        ckpt.save_component(g, directory / "generator", generator_kind(self.family), generator_config(g))
        write_model_index(directory, family=self.family, image_size=int(g.imsize),
                          generator_weights="ema" if ema is not None else "raw")

    def step_optim(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ----------------------------------------------------------------------------- GAN-INT-CLS
class GANINTCLSStep(ClassicStep):
    family = "gan_int_cls"

    def __init__(self, cfg, vocab, text_encoder, text_args, steps_per_epoch=1):
        super().__init__(cfg, vocab, text_encoder, text_args, steps_per_epoch)
        m, size = cfg.model, cfg.data.image_size
        self.netG = gan_int_cls.NetG(t_dim=self.nef, nt=m.nt, nz=m.nz, ngf=m.ngf, imsize=size)
        self.netD = gan_int_cls.NetD(t_dim=self.nef, nt=m.nt, ndf=m.ndf, imsize=size)
        self.modules = {"netG": self.netG, "netD": self.netD}
        o = cfg.optim
        self.optimizers = {"G": _adam(self.netG.parameters(), o.lr_g, o), "D": _adam(self.netD.parameters(), o.lr_d, o)}

    def train_step(self, batch: Batch, step: int):
        m = self.cfg.model
        real = batch.images[-1]
        _, sent, _ = self.encode(batch.tokens, batch.lengths)
        _, wrong, _ = self.encode(batch.wrong_tokens, batch.wrong_lengths)
        B = real.size(0)
        fake = self.netG(self.noise(B, real.device), sent)
        # D: (real, right) -> 1; (real, wrong) -> 0 [CLS]; (fake, right) -> 0
        feat = self.netD.features(real)
        d_real = bce(self.netD.logits(feat, sent), True)
        d_fake = bce(self.netD(fake.detach(), sent), False)
        if m.cls:
            d_wrong = bce(self.netD.logits(feat, wrong), False)
            d_loss = d_real + 0.5 * (d_wrong + d_fake)
        else:
            d_wrong = torch.zeros((), device=real.device)
            d_loss = d_real + d_fake
        self.step_optim("D", d_loss)
        # G: fool D with the right caption, and [INT] with interpolated captions
        g_fake = bce(self.netD(fake, sent), True)
        g_int = torch.zeros((), device=real.device)
        if m.int_beta > 0:
            t_int = m.int_beta * sent + (1 - m.int_beta) * roll(sent)
            g_int = bce(self.netD(self.netG(self.noise(B, real.device), t_int), t_int), True)
        g_loss = g_fake + g_int
        self.step_optim("G", g_loss)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "d_real": d_real.detach(),
                "d_wrong": d_wrong.detach(), "d_fake": d_fake.detach(), "g_int": g_int.detach()}


# ----------------------------------------------------------------------------- StackGAN v1
def lr_factor(step: int, steps_per_epoch: int, decay_epoch: int) -> float:
    """StackGAN: both learning rates halve every ``decay_epoch`` epochs."""
    if decay_epoch <= 0:
        return 1.0
    return 0.5 ** ((step // steps_per_epoch) // decay_epoch)


class StackGANStep(ClassicStep):
    """Stage 1 (``model.stage: 1``) or stage 2 on a frozen stage-I run (``model.stage1``)."""

    def __init__(self, cfg, vocab, text_encoder, text_args, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, vocab, text_encoder, text_args, steps_per_epoch, image_encoder)
        m, size = cfg.model, cfg.data.image_size
        if m.stage == 1:
            if size != m.stage1_size:
                raise T2IError(f"stackgan stage 1: data.image_size={size} must equal model.stage1_size={m.stage1_size}")
            self.family = "stackgan_stage1"
            self.netG = stackgan.STAGE1_G(t_dim=self.nef, c_dim=m.c_dim, nz=m.nz, gf_dim=m.gf_dim, imsize=size)
            self.netD = stackgan.STAGE1_D(df_dim=m.df_dim, c_dim=m.c_dim, imsize=size)
        elif m.stage == 2:
            self.family = "stackgan_stage2"
            s1 = load_stage1(m.stage1, vocab)
            self.netG = stackgan.STAGE2_G(stage1=s1.config, gf_dim=m.gf_dim, c_dim=m.c_dim, r_num=m.r_num, imsize=size)
            self.netG.STAGE1_G.load_state_dict(s1.state_dict())
            self.netD = stackgan.STAGE2_D(df_dim=m.df_dim, c_dim=m.c_dim, imsize=size)
        else:
            raise T2IError(f"model.stage must be 1 or 2, got {m.stage}")
        self.modules = {"netG": self.netG, "netD": self.netD}
        o = cfg.optim
        self.optimizers = {"G": _adam(self.netG.parameters(), o.lr_g, o), "D": _adam(self.netD.parameters(), o.lr_d, o)}

    def set_lr(self, step: int) -> float:
        f = lr_factor(step, self.steps_per_epoch, self.cfg.model.lr_decay_epoch)
        for name, base in (("G", self.cfg.optim.lr_g), ("D", self.cfg.optim.lr_d)):
            for group in self.optimizers[name].param_groups:
                group["lr"] = base * f
        return f

    def train_step(self, batch: Batch, step: int):
        f = self.set_lr(step)
        real = batch.images[-1]
        words, sent, mask = self.encode(batch.tokens, batch.lengths)
        out = self.netG.run(self.noise(real.size(0), real.device), sent)
        fake, mu, logvar = out.images[-1], out.mu, out.logvar
        cond = mu.detach()
        D = self.netD
        # D (official compute_discriminator_loss)
        real_f, fake_f = D(real), D(fake.detach())
        d_real = bce(D.get_cond_logits(real_f, cond), True)
        d_wrong = bce(D.get_cond_logits(real_f, roll(cond)), False)
        d_fake = bce(D.get_cond_logits(fake_f, cond), False)
        if D.get_uncond_logits is not None:
            u_real = bce(D.get_uncond_logits(real_f), True)
            u_fake = bce(D.get_uncond_logits(fake_f), False)
            d_loss = (d_real + u_real) / 2.0 + (d_fake + d_wrong + u_fake) / 3.0
        else:
            d_loss = d_real + (d_fake + d_wrong) * 0.5
        self.step_optim("D", d_loss)
        # G (compute_generator_loss + KL)
        fake_f = D(fake)
        g_adv = bce(D.get_cond_logits(fake_f, cond), True)
        if D.get_uncond_logits is not None:
            g_adv = g_adv + bce(D.get_uncond_logits(fake_f), True)
        kl = kl_loss(mu, logvar)
        extra = self.damsm_loss(fake, words, sent, mask)
        g_loss = g_adv + sum(extra.values()) + self.cfg.model.kl_coeff * kl
        self.step_optim("G", g_loss)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "kl": kl.detach(), "d_real": d_real.detach(),
                "d_wrong": d_wrong.detach(), "d_fake": d_fake.detach(), "lr_factor": torch.tensor(f),
                **{k: v.detach() for k, v in extra.items()}}


def load_stage1(path: str, vocab) -> stackgan.STAGE1_G:
    """The stage-I generator of a ``stackgan`` stage-1 run (its exported pipeline)."""
    from t2igan.pipeline import resolve_dir

    if not path:
        raise T2IError("stackgan stage 2 needs model.stage1: the folder of a trained stage-I run")
    d = resolve_dir(path)
    info = ckpt.read_json(d / "model_index.json")
    if info.get("family") != "stackgan_stage1":
        raise T2IError(f"model.stage1={path}: not a StackGAN stage-I run (family {info.get('family')!r})")
    cfg, state = ckpt.read_component(d / "generator", "stackgan_stage1_generator")
    g = stackgan.STAGE1_G(**cfg)
    ckpt.load_state_strict(g, state, str(d / "generator"))
    from t2igan.data.text import Vocabulary

    if Vocabulary.load(d / "vocab.json").words != vocab.words:
        raise T2IError(f"model.stage1={path}: its vocabulary differs from the text encoder's; train both stages "
                       "with the same text_encoder")
    return g


# ----------------------------------------------------------------------------- multi-scale families
class _MultiScaleStep(ClassicStep):
    def check_scales(self):
        d, g = self.cfg.data, self.netG
        if d.image_size != g.imsize or d.num_scales != g.branch_num:
            raise T2IError(f"{self.cfg.task}: model.branch_num={g.branch_num} and model.base_size="
                           f"{g.config['base_size']} draw {g.imsize}px at {g.branch_num} scales; set "
                           f"data.image_size={g.imsize} and data.num_scales={g.branch_num} "
                           f"(got {d.image_size} and {d.num_scales})")

    def d_optimizers(self, o):
        return {f"D{k}": _adam(d.parameters(), o.lr_d, o) for k, d in enumerate(self.netsD)}


class StackGANppStep(_MultiScaleStep):
    family = "stackganpp"

    def __init__(self, cfg, vocab, text_encoder, text_args, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, vocab, text_encoder, text_args, steps_per_epoch, image_encoder)
        m = cfg.model
        self.netG = stackganpp.G_NET(t_dim=self.nef, c_dim=m.c_dim, nz=m.nz, gf_dim=m.gf_dim, r_num=m.r_num,
                                     branch_num=m.branch_num, base_size=m.base_size)
        self.check_scales()
        self.netsD = [stackganpp.D_NET(m.base_size * 2 ** k, m.df_dim, m.c_dim, hdgan=m.hdgan) for k in range(m.branch_num)]
        self.modules = {"netG": self.netG, **{f"netD{k}": d for k, d in enumerate(self.netsD)}}
        o = cfg.optim
        self.optimizers = {"G": _adam(self.netG.parameters(), o.lr_g, o), **self.d_optimizers(o)}

    def train_step(self, batch: Batch, step: int):
        m = self.cfg.model
        words, sent, mask = self.encode(batch.tokens, batch.lengths)
        out = self.netG.run(self.noise(sent.size(0), sent.device), sent)
        mu, logvar = out.mu, out.logvar
        cond = mu.detach()
        logs = {}
        d_total = 0.0
        for k, D in enumerate(self.netsD):
            real, fake = batch.images[k], out.images[k].detach()
            d_loss = (self.d_loss_hdgan if m.hdgan else self.d_loss)(D(real, cond), D(real, roll(cond)), D(fake, cond))
            self.step_optim(f"D{k}", d_loss)
            d_total = d_total + d_loss.detach()
        g_loss = 0.0
        for k, D in enumerate(self.netsD):  # official train_Gnet (HDGAN: pair + local image loss, LSGAN)
            pair, local = D(out.images[k], mu)
            if m.hdgan:
                g_loss = g_loss + lsgan(pair, True) + lsgan(local, True)
            else:
                g_loss = g_loss + bce(pair, True) + (m.uncond_loss * bce(local, True) if m.uncond_loss > 0 else 0.0)
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
        self.step_optim("G", g_loss)
        return {"d_loss": d_total, "g_loss": g_loss.detach(), "kl": kl.detach(), **logs}

    def d_loss(self, r, w, f):
        """Official StackGAN++ train_Dnet (wrong pair = real image, mismatched condition)."""
        u = self.cfg.model.uncond_loss
        e_real, e_wrong, e_fake = bce(r[0], True), bce(w[0], False), bce(f[0], False)
        if u > 0:
            e_real = e_real + u * bce(r[1], True)
            e_wrong = e_wrong + u * bce(w[1], True)  # a real image is real, whatever the caption
            e_fake = e_fake + u * bce(f[1], False)
            return e_real + e_wrong + e_fake
        return e_real + 0.5 * (e_wrong + e_fake)

    @staticmethod
    def d_loss_hdgan(r, w, f):
        """HDGAN ``compute_d_pair_loss`` + ``compute_d_img_loss`` (least squares; the local image
        loss sees real and mismatched-caption real images as real, fakes as fake)."""
        pair = lsgan(r[0], True) + (lsgan(w[0], False) + lsgan(f[0], False)) / 2.0
        image = 0.5 * lsgan(w[1], True) + 0.5 * lsgan(r[1], True) + lsgan(f[1], False)
        return pair + image


class AttnGANStep(_MultiScaleStep):
    family = "attngan"
    gen_module = attngan

    def __init__(self, cfg, vocab, text_encoder, text_args, steps_per_epoch=1, image_encoder=None):
        super().__init__(cfg, vocab, text_encoder, text_args, steps_per_epoch, image_encoder)
        m = cfg.model
        self.netG = self.gen_module.G_NET(t_dim=self.nef, c_dim=m.c_dim, nz=m.nz, gf_dim=m.gf_dim, r_num=m.r_num,
                                          branch_num=m.branch_num, base_size=m.base_size)
        self.check_scales()
        self.netsD = [self.gen_module.D_NET(m.base_size * 2 ** k, m.df_dim, self.nef) for k in range(m.branch_num)]
        self.modules = {"netG": self.netG, **{f"netD{k}": d for k, d in enumerate(self.netsD)}}
        o = cfg.optim
        self.optimizers = {"G": _adam(self.netG.parameters(), o.lr_g, o), **self.d_optimizers(o)}

    def extra_g_loss(self, out, batch, words, sent, mask) -> dict[str, torch.Tensor]:
        return self.damsm_loss(out.images[-1], words, sent, mask)

    def train_step(self, batch: Batch, step: int):
        words, sent, mask = self.encode(batch.tokens, batch.lengths)
        out = self.netG.run(self.noise(sent.size(0), sent.device), sent, words, mask)
        d_total = 0.0
        for k, D in enumerate(self.netsD):  # official discriminator_loss
            real_f, fake_f = D(batch.images[k]), D(out.images[k].detach())
            c_real = bce(D.COND_DNET(real_f, sent), True)
            c_fake = bce(D.COND_DNET(fake_f, sent), False)
            c_wrong = bce(D.COND_DNET(real_f, roll(sent)), False)
            if D.UNCOND_DNET is not None:
                d_loss = (bce(D.UNCOND_DNET(real_f), True) + c_real) / 2.0 + \
                         (bce(D.UNCOND_DNET(fake_f), False) + c_fake + c_wrong) / 3.0
            else:
                d_loss = c_real + (c_fake + c_wrong) / 2.0
            self.step_optim(f"D{k}", d_loss)
            d_total = d_total + d_loss.detach()
        g_loss = 0.0
        for k, D in enumerate(self.netsD):  # official generator_loss
            f = D(out.images[k])
            g_loss = g_loss + bce(D.COND_DNET(f, sent), True)
            if D.UNCOND_DNET is not None:
                g_loss = g_loss + bce(D.UNCOND_DNET(f), True)
        extra = self.extra_g_loss(out, batch, words, sent, mask)
        kl = kl_loss(out.mu, out.logvar)
        g_loss = g_loss + sum(extra.values()) + self.cfg.model.kl_coeff * kl
        self.step_optim("G", g_loss)
        return {"d_loss": d_total, "g_loss": g_loss.detach(), "kl": kl.detach(),
                **{k: v.detach() for k, v in extra.items()}}


class MirrorGANStep(AttnGANStep):
    family = "mirrorgan"
    gen_module = mirrorgan

    def __init__(self, cfg, vocab, text_encoder, text_args, steps_per_epoch=1, image_encoder=None, stream=None):
        super().__init__(cfg, vocab, text_encoder, text_args, steps_per_epoch, image_encoder)
        self.caption_cnn, self.caption_rnn = stream
        for net in stream:
            net.eval().requires_grad_(False)
            self.frozen.append(net)

    def extra_g_loss(self, out, batch, words, sent, mask):
        logs = super().extra_g_loss(out, batch, words, sent, mask)
        self.caption_cnn.eval()
        self.caption_rnn.train()  # cuDNN RNN backward needs train mode; no dropout with 1 layer, weights frozen
        cap = mirrorgan.caption_loss(self.caption_cnn, self.caption_rnn, out.images[-1], batch.tokens, batch.lengths)
        return {**logs, "cap_loss": cap * self.cfg.model.caption_lambda}


# ----------------------------------------------------------------------------- STREAM
class STREAMStep:
    """Train MirrorGAN's STREAM captioner on real images (teacher-forced cross-entropy)."""

    ema_of = None

    def __init__(self, cfg, vocab, text_encoder, text_args, steps_per_epoch=1):
        self.cfg, self.vocab = cfg, vocab
        m = cfg.model
        self.cnn_args = dict(embed_size=m.embed_size, width=m.width, image_size=m.image_size)
        self.rnn_args = dict(embed_size=m.embed_size, hidden_size=2 * m.hidden_size, vocab_size=len(vocab),
                             num_layers=m.num_layers)
        self.caption_cnn = mirrorgan.CAPTION_CNN(**self.cnn_args)
        self.caption_rnn = mirrorgan.CAPTION_RNN(**self.rnn_args)
        self.modules = {"caption_cnn": self.caption_cnn, "caption_rnn": self.caption_rnn}
        params = list(self.caption_cnn.parameters()) + list(self.caption_rnn.parameters())
        self.optimizers = {"adam": _adam(params, cfg.optim.lr_g, cfg.optim)}

    def train_step(self, batch: Batch, step: int):
        loss = mirrorgan.caption_loss(self.caption_cnn, self.caption_rnn, batch.images[-1], batch.tokens, batch.lengths)
        opt = self.optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"cap_loss": loss.detach()}

    def sample(self, tokens, lengths, seed, n, ema):
        return None

    def export(self, directory: Path, ema) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vocab.save(directory / "vocab.json")
        ckpt.save_component(self.caption_cnn, directory / "caption_cnn", "stream_caption_cnn", self.cnn_args)
        ckpt.save_component(self.caption_rnn, directory / "caption_rnn", "stream_caption_rnn", self.rnn_args)
        write_model_index(directory, family="stream", image_size=self.cfg.data.image_size)


def load_stream(path: str, vocab):
    """(CAPTION_CNN, CAPTION_RNN) of a trained ``stream`` run, checked against ``vocab``."""
    from t2igan.data.text import Vocabulary
    from t2igan.pipeline import resolve_dir

    d = resolve_dir(path)
    nets = []
    for name, kind, cls in (("caption_cnn", "stream_caption_cnn", mirrorgan.CAPTION_CNN),
                            ("caption_rnn", "stream_caption_rnn", mirrorgan.CAPTION_RNN)):
        cfg, state = ckpt.read_component(d / name, kind)
        try:
            net = cls(**cfg)
        except TypeError as e:
            raise T2IError(f"{d / name / 'config.json'}: bad arguments ({e})") from None
        ckpt.load_state_strict(net, state, str(d / name))
        nets.append(net)
    if Vocabulary.load(d / "vocab.json").words != vocab.words:
        raise T2IError(f"stream={path}: its vocabulary differs from the text encoder's; train STREAM with the same "
                       "text_encoder")
    return tuple(nets)


def load_image_encoder(path: str) -> damsm.ImageEncoder:
    from t2igan.pipeline import resolve_dir

    d = resolve_dir(path)
    cfg, state = ckpt.read_component(d / "image_encoder", "damsm_image_encoder")
    enc = damsm.ImageEncoder(**cfg)
    ckpt.load_state_strict(enc, state, str(d / "image_encoder"))
    return enc.eval()


def build_classic_step(cfg, n_images: int):
    """(TrainStep, vocabulary) for a classic-family run config."""
    from t2igan.pipeline import load_text_encoder

    enc, args, vocab, max_words = load_text_encoder(cfg.text_encoder)
    if max_words != cfg.data.max_words:
        raise T2IError(f"data.max_words={cfg.data.max_words} but the text encoder in {cfg.text_encoder} uses {max_words}")
    spe = max(1, n_images // cfg.train.batch_size)
    t = cfg.task
    try:
        if t == "gan_int_cls":
            return GANINTCLSStep(cfg, vocab, enc, args, spe), vocab
        if t == "stream":
            return STREAMStep(cfg, vocab, enc, args, spe), vocab
        img = load_image_encoder(cfg.text_encoder) if cfg.model.damsm_lambda > 0 else None
        if t == "stackgan":
            return StackGANStep(cfg, vocab, enc, args, spe, image_encoder=img), vocab
        if t == "stackganpp":
            return StackGANppStep(cfg, vocab, enc, args, spe, image_encoder=img), vocab
        if t == "attngan":
            return AttnGANStep(cfg, vocab, enc, args, spe, image_encoder=img), vocab
        if t == "mirrorgan":
            return MirrorGANStep(cfg, vocab, enc, args, spe, image_encoder=img, stream=load_stream(cfg.stream, vocab)), vocab
    except ValueError as e:  # a model constructor refusing a size/width combination
        raise T2IError(f"{t}: {e}") from None
    raise T2IError(f"task {t!r} is not a classic-family task")
