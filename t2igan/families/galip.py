"""GALIP (Tao et al., CVPR 2023): a generator that runs frozen CLIP layers on its own features
(prompted by the sentence), a discriminator on the features of the frozen CLIP image encoder,
the hinge loss with DF-GAN's matching-aware gradient penalty (on the CLIP features), and a
CLIP text-image similarity term in the generator loss.

The CLIP is ``clip`` (a Hugging Face CLIP folder or an open_clip file, :func:`t2igan.text.clip.load_clip`);
the sentence vectors come from ``text_encoder``, by default that CLIP's own text tower
(``clip:<clip>``), which the similarity loss needs (text and image in one embedding space).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import (
    DataConfig,
    OptimConfig,
    Range,
    TrainConfig,
    at_least,
    in_range,
    positive,
)
from t2igan.core.distributed import World, all_gather_rows, shard_randn
from t2igan.core.folder import write_model_index
from t2igan.data.dataset import Batch
from t2igan.data.text import Vocabulary
from t2igan.families import gan_options as go
from t2igan.families.base import Family, StepBase, adam, generator_kind, sample_sentences, text_side
from t2igan.families.gan_options import GANOptions
from t2igan.models import dfgan, galip
from t2igan.text.conditioning import Conditioning
from t2igan.text.spec import load_caption_encoder, parse_spec, save_encoder_dir

RESIZE_MODES = ("nearest", "bilinear", "bicubic")


@dataclass
class GALIPConfig:
    """GALIP network sizes (official NetG / NetD / NetC arguments; the CLIP's numbers come from ``clip``)."""

    ngf: int = positive(64)  # generator base width (official nf: 64)
    ndf: int = positive(64)  # discriminator width: NetD ends at 8 * ndf channels (official 512 = 8 * 64)
    nz: int = positive(100)  # noise size (official z_dim)
    ch_size: int = in_range(3, 3, 3)  # image channels (the data are RGB)
    code_ch: int = positive(64)  # width of the noise code and the mapping blocks (official 64)
    mid_ch: int = positive(32)  # inner width of the mapping blocks (official 32)
    map_num: int = positive(4)  # mapping blocks before the CLIP mapper (official 4)
    d_layers: list[int] = field(default_factory=list, metadata={"range": Range(0, None)})  # CLIP layers whose token features D reads ([]: official 1, 4, 8 of 12, scaled)
    prompt_layers: list[int] = field(default_factory=list, metadata={"range": Range(0, None)})  # CLIP layers of the mapper given a prompt token ([]: official 1..8 of 12, scaled)
    clip_resize: str = "nearest"  # how images are resized to the CLIP's input side when it differs: nearest (official) | bilinear | bicubic


@dataclass
class GALIPLossConfig:
    sim_w: float = at_least(4.0, 0)  # weight of the CLIP text-image cosine similarity in the G loss (official birds 4; 0 = off)


@dataclass
class GALIPRunConfig:
    task: str = "galip"
    data: DataConfig = field(default_factory=DataConfig)
    model: GALIPConfig = field(default_factory=GALIPConfig)
    clip: str = "runs/clip_synth64"  # the CLIP (frozen): a Hugging Face CLIP folder or ARCH:OPEN_CLIP_FILE (t2igan.text.clip.load_clip)
    text_encoder: str = ""  # "" = the CLIP's own text tower (clip:<clip>); another spec only with loss.sim_w=0
    loss: GALIPLossConfig = field(default_factory=GALIPLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # official: lr_g 1e-4, lr_d 4e-4, betas (0, 0.9), MA-GP 2 / 6
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/galip_synth64"))
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: hinge + MA-GP, 1 D + 1 G update)


# ----------------------------------------------------------------------------- config checks
def _check_layers(key: str, layers: list[int], n_layers: int) -> None:
    if any(not 0 <= i < n_layers for i in layers) or list(layers) != sorted(set(layers)):
        raise T2IError(f"{key}={list(layers)}: give increasing, distinct layer indices of the CLIP's 0..{n_layers - 1}")


def check_model(cfg) -> None:
    """The model choices that need no CLIP, refused in one line."""
    m = cfg.model
    if m.clip_resize not in RESIZE_MODES:
        raise T2IError(f"model.clip_resize must be one of {', '.join(RESIZE_MODES)}, got {m.clip_resize!r}")


def _spec_key(spec: str) -> tuple[str, ...]:
    """A text-encoder spec in a comparable form (the paths of a ``clip:`` spec resolved)."""
    spec = str(spec).strip()
    if not spec.startswith("clip:"):
        return parse_spec(spec)
    rest = spec[len("clip:"):]
    arch, sep, path = rest.partition(":")
    if sep and path and not Path(rest).exists() and "/" not in arch and "\\" not in arch:  # ARCH:FILE
        return ("clip", arch, str(Path(path).resolve()))
    d = Path(rest)
    if not (d / "config.json").is_file() and (d / "pipeline" / "config.json").is_file():
        d = d / "pipeline"  # a task clip run holds its CLIP folder in pipeline/
    return ("clip", str(d.resolve()))


def text_spec_of(cfg, clip) -> str:
    """The text-encoder spec of a run: ``text_encoder`` or the CLIP's own text tower; with
    ``loss.sim_w > 0`` anything but that text tower is refused."""
    spec = cfg.text_encoder.strip() or clip.spec
    if cfg.loss.sim_w > 0 and _spec_key(spec) != _spec_key(clip.spec):
        raise T2IError(f"text_encoder={cfg.text_encoder!r} is not the text tower of clip={cfg.clip!r}: the similarity "
                       f"loss (loss.sim_w={cfg.loss.sim_w:g}) compares text and image in one CLIP space; leave "
                       "text_encoder empty (the CLIP's own) or set loss.sim_w=0")
    return spec


def resolve_layers(cfg, clip) -> tuple[list[int], list[int]]:
    """(D feature layers, mapper prompt layers) of a run: the config's, or the official ones scaled."""
    m, n = cfg.model, clip.vision_layers
    d_layers = list(m.d_layers) or galip.d_feature_layers(n)
    p_layers = list(m.prompt_layers) or galip.mapper_prompt_layers(n)
    _check_layers("model.d_layers", d_layers, n)
    _check_layers("model.prompt_layers", p_layers, n)
    return d_layers, p_layers


def check_text(cfg, clip, encoder) -> None:
    if cfg.loss.sim_w > 0 and encoder.sentence_dim != clip.embed_dim:
        raise T2IError(f"text encoder {encoder.spec!r} gives {encoder.sentence_dim}-d sentences, the CLIP image "
                       f"embedding is {clip.embed_dim}-d: loss.sim_w needs them in one space")


def vision_config(clip) -> dict:
    return clip.model.vision_model.config.to_dict()


def next_rows(x: torch.Tensor, world: World) -> torch.Tensor:
    """``x.roll(-1, 0)`` of the global batch, this process's rows (row i gets the global row after it; no
    gradient through the gathered rows): the official mismatched pair, image i with caption i + 1."""
    if not world.distributed:
        return x.roll(-1, 0)
    full = all_gather_rows(x.detach(), world)
    rows = torch.arange(x.size(0), device=x.device) * world.size + world.rank
    return full[(rows + 1) % full.size(0)]


# ----------------------------------------------------------------------------- the step
class GALIPStep(StepBase):
    """GALIP's official step: D (hinge on real / mismatched / fake pairs over CLIP features +
    MA-GP on the real CLIP features and the sentence), then G (``-C(D(CLIP(fake)))`` minus
    ``sim_w`` times the cosine of CLIP's image embedding of the fake and the sentence).

    ``clip``: the :class:`~t2igan.text.clip.CLIPBundle` (frozen); its image tower is D's encoder
    (held by :attr:`image_encoder`, not checkpointed) and its vision layers are copied once into
    the generator's mapper (saved with the generator, never trained).

    Under torchrun the noise, the WGAN-GP weights and the mismatched captions are the global batch's
    and the gradients are averaged over the processes after each backward, so N processes train the
    parameters of one. ``manual_sync`` rather than DDP wrappers: D's blocks hold the official unused
    shortcut convolution (``D_Block.conv_s`` where the width does not change), a parameter without a
    gradient that a DDP wrapper refuses; the average skips it on every process alike. The MA-GP's
    ``autograd.grad`` runs through the bare D and C, so the D loss's one backward and one average
    make D's update. The frozen CLIP (the image encoder, and G's mapper copy) is never trained nor
    synchronised: the same files on every process."""

    ema_of = "netG"
    switches = frozenset({"precision", "channels_last", "adam", "ddp"})
    manual_sync = True

    def __init__(self, cfg, text: Conditioning, vocab: Vocabulary, clip):
        super().__init__()
        self.cfg, self.vocab, self.text, self.clip = cfg, vocab, text, clip
        self.text_encoder = text.encoder
        m = cfg.model
        d_layers, p_layers = resolve_layers(cfg, clip)
        cond = text.sentence_dim
        check_text(cfg, clip, self.text_encoder)
        self.d_layers, self.prompt_layers = d_layers, p_layers
        self.netG = galip.NetG(ngf=m.ngf, nz=m.nz, cond_dim=cond, imsize=cfg.data.image_size, ch_size=m.ch_size,
                               vision_config=vision_config(clip), prompt_layers=p_layers, code_ch=m.code_ch,
                               mid_ch=m.mid_ch, map_num=m.map_num)
        self.netG.load_clip(clip.model.vision_model)
        self.netD = galip.NetD(ndf=m.ndf, CLIP_ch=clip.vision_width, n_feats=len(d_layers))
        self.netC = galip.NetC(ndf=m.ndf, cond_dim=cond, grid=clip.grid)
        self.modules = {"netG": self.netG, "netD": self.netD, "netC": self.netC}
        self.image_encoder = galip.CLIP_IMG_ENCODER(clip.model.vision_model, clip.model.visual_projection, d_layers,
                                                    clip.image_size, clip.image_mean, clip.image_std, m.clip_resize)
        self.frozen = [self.text_encoder, self.image_encoder]
        self.setup_gan(cfg, "ma-gp", {"netD": self.netD, "netC": self.netC})
        o = cfg.optim
        self.g_params = [p for p in self.netG.parameters() if p.requires_grad]
        self.d_params = list(self.netD.parameters()) + list(self.netC.parameters())
        self.optimizers = {"G": adam(self.g_params, o.lr_g, o, cfg.train.adam),
                           "D": adam(self.d_params, o.lr_d, o, cfg.train.adam)}

    def critic(self, feats: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` of CLIP features and sentences (the gradient penalties' critic)."""
        return self.netC(self.netD(feats), sent).float().reshape(-1)

    def d_penalty(self, pred_real, real_f, fake_f, sent) -> torch.Tensor | None:
        """The gradient penalty of ``gan.loss``, in CLIP-feature space (official: MA-GP on real, matching pairs)."""
        o, kind = self.cfg.optim, go.PENALTY.get(self.loss_kind)
        if kind == "ma-gp":
            return dfgan.matching_aware_gp(pred_real, real_f, sent, o.gp_weight, o.gp_power,
                                           inv_scale=self.precision.inv_scale())
        critic = lambda x: self.critic(x, sent.detach())
        if kind == "gp":
            eps = shard_randn(self.world, real_f.size(0), *([1] * (real_f.dim() - 1)), device=real_f.device, rand=True)
            return go.wgan_gp(critic, real_f, fake_f, self.gan.gp_lambda, eps, inv_scale=self.precision.inv_scale())
        if kind == "r1":
            return go.r1_penalty(critic, real_f, self.gan.gp_lambda, inv_scale=self.precision.inv_scale())
        return None

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        self.step_now = step
        P, W = self.precision, self.world
        imgs = batch.images[-1]
        _, sent, _ = self.text.batch(batch)  # frozen, no gradient
        sent = sent.detach().float()
        B = imgs.size(0)  # this process's share of the global batch
        noise = shard_randn(W, B, self.cfg.model.nz, device=imgs.device)  # the global batch's noise, this share's rows
        kind, logs = go.BASE_LOSS[self.loss_kind], {}
        g_up = self.updates("G", step)
        with torch.set_grad_enabled(g_up), P.autocast():
            fake = self.netG(noise, sent)
            fake_f, fake_emb = self.image_encoder(fake)  # through the frozen CLIP: gradients reach G
        # --- discriminator
        if self.updates("D", step):
            with torch.no_grad(), P.autocast():
                real_f, _ = self.image_encoder(imgs)
            real_f = real_f.float().requires_grad_(True)  # leaves of the MA-GP
            sent_gp = sent.clone().requires_grad_(True)
            with P.autocast():
                real_h = self.netD(real_f)
                pred_real = self.netC(real_h, sent_gp)
                pred_mis = self.netC(real_h, next_rows(sent, W))  # official: image i with caption i + 1
                pred_fake = self.netC(self.netD(fake_f.detach()), sent)
            self.watch(pred_real, pred_fake)
            gp = self.d_penalty(pred_real, real_f, fake_f.detach().float(), sent_gp)
            d_loss, logs = go.matching_aware_d(kind, pred_real, pred_mis, pred_fake, gp,
                                               "ma_gp" if self.loss_kind == "ma-gp" else "d_penalty")
            self.optimizers["D"].zero_grad(set_to_none=True)
            self.backward(d_loss, inputs=self.d_params)
            self.apply_update("D")
        if not g_up:
            P.update()
            return {**logs, **self.monitor_logs()}
        # --- generator (D and C after their update, as the official step)
        with P.autocast():
            g_out = self.netC(self.netD(fake_f), sent)
        g_adv = -g_out.float().mean() if kind in ("hinge", "wgan") else go.adversarial(kind, g_out, "g")
        sim = F.cosine_similarity(fake_emb.float(), sent, dim=1).mean() if fake_emb.size(1) == sent.size(1) else None
        w = self.cfg.loss.sim_w
        g_loss = g_adv - w * sim if w > 0 else g_adv
        self.optimizers["G"].zero_grad(set_to_none=True)
        self.backward(g_loss, inputs=self.g_params)  # D/C weight gradients here would be thrown away
        self.apply_update("G")
        P.update()
        out = {"g_sim": sim.detach()} if sim is not None else {}
        return {**logs, "g_loss": g_loss.detach(), "g_adv": g_adv.detach(), **out, **self.monitor_logs()}

    def frozen_fingerprints(self) -> dict[str, str]:
        return {"CLIP": self.clip.fingerprint()}

    @torch.no_grad()
    def sample(self, captions, seed, n, ema):
        _, sent, _ = self.text.captions(captions)
        return sample_sentences(ema if ema is not None else self.netG, sent.float(), self.cfg.model.nz, seed, n)

    def export(self, directory: Path, ema) -> None:
        g = ema if ema is not None else self.netG
        save_encoder_dir(directory, self.text_encoder)
        ckpt.save_component(g, directory / "generator", generator_kind("galip"), dict(self.netG.config))
        write_model_index(directory, family="galip", image_size=self.cfg.data.image_size,
                          generator_weights="ema" if ema is not None else "raw", clip=str(self.cfg.clip),
                          clip_fingerprint=self.clip.fingerprint())


def build(cfg, data, resume: bool):
    """(GALIPStep, Vocabulary) of a ``task: galip`` run: every value checked before the embedding cache is written."""
    from t2igan.text.clip import CLIPCaptionEncoder, load_clip

    check_model(cfg)
    clip = load_clip(os.fspath(cfg.clip))
    spec = text_spec_of(cfg, clip)
    resolve_layers(cfg, clip)
    # the CLIP's own text tower shares the loaded model (one copy); another encoder is loaded from its spec
    enc = CLIPCaptionEncoder(clip) if _spec_key(spec) == _spec_key(clip.spec) else load_caption_encoder(spec)
    check_text(cfg, clip, enc)
    text, vocab = text_side(cfg, data, "galip", encoder=enc)
    return GALIPStep(cfg, text, vocab, clip), vocab


FAMILY = Family(
    name="galip", title="GALIP", paper="Tao et al., CVPR 2023", config=GALIPRunConfig, build=build, step=GALIPStep,
    generators={"galip": galip.NetG}, needs="a CLIP (task clip, or an open_clip file)",
    preset="configs/galip_synth64.yaml",
)
