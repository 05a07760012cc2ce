"""LAFITE (Zhou et al., CVPR 2022, "Towards Language-Free Training for Text-to-Image Generation"):
a StyleGAN2 generator conditioned on a CLIP feature, trained with the non-saturating loss, R1 and
contrastive terms that tie the images to the condition through CLIP and through the discriminator.

With captions (``lafite.mixing_prob: 0``) the condition is the CLIP text feature of each image's
caption (slightly perturbed). Language-free (``lafite.mixing_prob: 1``) it is a pseudo text
feature: the CLIP image feature of the real image perturbed by Gaussian noise (LAFITE-G), so no
caption is read during training; at inference the generator takes CLIP text features, which live
in the same space. Between 0 and 1 each image draws one or the other.

The run names one CLIP (``clip:``, :func:`t2igan.text.clip.load_clip`): its frozen image tower
encodes the real images (every step, of the augmented view the batch holds) and the generated
ones (differentiably: the ``itc`` gradient reaches G through it); its text tower is the text
encoder (``text_encoder: clip:<the same>``), read through the embedding cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import (
    DataConfig,
    OptimConfig,
    TrainConfig,
    at_least,
    in_range,
    positive,
)
from t2igan.core.distributed import all_gather_rows, all_gather_rows_autograd, shard_randn, world_from_env
from t2igan.core.folder import write_model_index
from t2igan.data.dataset import Batch
from t2igan.families import gan_options as go
from t2igan.families.base import Family, StepBase, adam, generator_kind, sample_sentences, text_side
from t2igan.families.gan_options import GANOptions
from t2igan.models import lafite
from t2igan.text.conditioning import vocabulary_for
from t2igan.text.spec import save_encoder_dir

CONTRASTIVE = ("official", "corrected")
FAKE_VIEWS = ("official", "resize")
PROJECTIONS = lafite.PROJECTIONS


@dataclass
class LafiteModelConfig:
    """Generator/discriminator sizes (official train.py: z 512, w 512, 8 mapping layers, channel_base 32768, max 512)."""

    z_dim: int = positive(512)  # noise width
    w_dim: int = positive(512)  # intermediate latent width
    map_num: int = positive(8)  # mapping layers (official --map_num)
    channel_base: int = positive(32768)  # widths min(channel_base // resolution, channel_max), G and D
    channel_max: int = positive(512)
    fts_dim: int = positive(512)  # width of the processed CLIP feature in every style affine (official 512)
    conv_clamp: float = at_least(256.0, 0)  # activation clamp (official 256; 0 = off)
    mbstd_group_size: int = positive(4)  # D minibatch-std group (official min(batch per GPU, 4))
    d_use_norm: bool = False  # L2-normalise D's feature before its projection (official --d_use_norm, default false)
    projection: str = "sample"  # sample: each image's own <d_fts, fts> added to its logit | batch: the official sum over the batch


@dataclass
class LafiteOptions:
    """The LAFITE loss (official train.py / loss.py names; defaults: the README's with-captions MS-COCO command)."""

    mixing_prob: float = in_range(0.0, 0, 1)  # share of pseudo text features (CLIP image feature + noise): 0 = captions, 1 = language-free
    temp: float = at_least(0.5, 0)  # contrastive temperature (0: the plain cosine of matching pairs)
    lam: float = in_range(0.0, 0, 1)  # weight of the row softmax (image -> text) against the column one
    itd: float = at_least(5.0, 0)  # image-text contrastive weight through D's feature (README: 5 with captions, 10 language-free)
    itc: float = at_least(10.0, 0)  # image-text contrastive weight through CLIP's image feature of the fake (G only)
    iid: float = at_least(0.0, 0)  # fake-real contrastive weight through D's feature (G only; official 0)
    iic: float = at_least(0.0, 0)  # fake-real contrastive weight through CLIP image features (G only; official 0)
    r1_gamma: float = at_least(10.0, 0)  # R1 weight gamma (README --gamma=10), penalty gamma/2 ||grad D(real)||^2
    r1_interval: int = positive(16)  # lazy R1 every N steps with weight xN (official D_reg_interval 16); 1 = every step
    style_mixing_prob: float = in_range(0.9, 0, 1)  # StyleGAN2 style mixing in training (official 0.9)
    txt_noise: float = in_range(0.1, 0, 1)  # text-feature perturbation level (official aug_level_1)
    img_noise: float = in_range(0.75, 0, 1)  # image-feature perturbation level of the pseudo text features (aug_level_2)
    contrastive: str = "official"  # official: softmax of exp(sim/temp) as the official code (its comment: a mistake) | corrected: softmax of sim/temp
    fake_view: str = "official"  # official: a random crop (side 0.5..1) of the fake, or a random place on a white canvas if smaller than CLIP's input | resize: the whole image
    crop_ratio: float = in_range(0.5, 0, 1, hi_open=True)  # smallest crop side of fake_view official (official 0.5)


@dataclass
class LafiteRunConfig:
    task: str = "lafite"
    data: DataConfig = field(default_factory=lambda: DataConfig(crop=False))  # official: x-flips (--mirror=1), no crop
    model: LafiteModelConfig = field(default_factory=LafiteModelConfig)
    clip: str = "runs/clip_synth64"  # the CLIP (t2igan.text.clip.load_clip): a Hugging Face CLIP folder or ARCH:open_clip-file
    text_encoder: str = ""  # "" = clip:<clip>; must be that same CLIP (the condition lives in its image-text space)
    lafite: LafiteOptions = field(default_factory=LafiteOptions)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=0.0025, lr_d=0.0025, beta1=0.0, beta2=0.99))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/lafite_synth64", batch_size=16,
                                                                   ema_decay=0.9978))  # 0.5 ** (32 / 10k): official ema_kimg = batch * 10 / 32
    gan: GANOptions = field(default_factory=GANOptions)  # shared GAN options (official: non-saturating + lazy R1)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, temp: float, lam: float, form: str = "official") -> torch.Tensor:
    """Minus the mean of LAFITE's ``contra_loss(temp, a, b, lam)``: the log-probability of the matching
    pair ``(a_i, b_i)`` among the cosine similarities ``sim [N, N]``, over rows (``lam``) and columns (``1 - lam``).

    ``official``: probabilities ``softmax(exp(sim / temp)) * temp`` (as the official code; its own comment
    calls the exp a mistake kept for its hyper-parameters); ``corrected``: ``softmax(sim / temp)``
    (InfoNCE). ``temp == 0``: minus the mean cosine of the matching pairs."""
    sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).t()
    if temp <= 0:
        return -sim.diagonal().mean()
    if form == "official":
        s = torch.exp(sim / temp)
        rows = torch.log(F.softmax(s, dim=1).diagonal() * temp)
        cols = torch.log(F.softmax(s, dim=0).diagonal() * temp)
    else:
        rows = F.log_softmax(sim / temp, dim=1).diagonal()
        cols = F.log_softmax(sim / temp, dim=0).diagonal()
    out = cols if lam == 0 else rows if lam == 1 else lam * rows + (1 - lam) * cols
    return -out.mean()


def perturb(fts: torch.Tensor, noise: torch.Tensor, level: float) -> torch.Tensor:
    """``normalise((1 - level) * fts + level * noise)`` (the official Gaussian perturbation; ``noise`` unit-norm)."""
    return F.normalize(fts * (1 - level) + noise * level, dim=-1)


def fake_view(img: torch.Tensor, size: int, ratio: float) -> torch.Tensor:
    """The official view of a generated batch for CLIP: smaller than CLIP's input ``size``: placed at a random
    position on a white canvas of that size; else a random square crop of side in [ratio * S, S) (one crop for
    the batch; CLIP's preprocessing then resizes it)."""
    S = img.size(-1)
    if S < size:
        p1, p2 = (int(torch.randint(0, size - S, ())) for _ in range(2))
        return F.pad(img, (p1, size - S - p1, p2, size - S - p2), value=1.0)
    cut = int(torch.randint(int(ratio * S), S, ()))
    left, top = (int(torch.randint(0, S - cut, ())) for _ in range(2))
    return img[:, :, top:top + cut, left:left + cut]


class LafiteStep(StepBase):
    """One LAFITE step: G (non-saturating + contrastive itc/itd/iic/iid), then D (non-saturating + itd on the
    real images), then, every ``r1_interval`` steps, D's lazy R1 as its own update (the official phases).

    Under torchrun every random draw (noise, per-pixel noise, style mixing, the perturbation and mixing of the
    conditions, WGAN-GP weights) is the global batch's, the contrastive terms contrast every image with every
    condition of the global batch, and ``w_avg`` follows the global batch's mean w, so N processes train the
    parameters of one. ``manual_sync``: G runs through ``mapping`` and ``synthesis``, which a DDP wrapper's
    ``forward`` would not see, so the gradients are averaged after each backward."""

    ema_of = "G"
    switches = frozenset({"precision", "channels_last", "adam", "ddp"})
    manual_sync = True

    def __init__(self, cfg, clip, encoder, text=None):
        """``clip``: the CLIPBundle; ``encoder``: the CLIP caption encoder (samples, export); ``text``: its
        Conditioning (with captions), None in language-free training (no caption is read)."""
        super().__init__()
        self.cfg, self.clip, self.encoder, self.text = cfg, clip, encoder, text
        L, m = cfg.lafite, cfg.model
        self.language_free = L.mixing_prob >= 1.0
        if self.text is None and not self.language_free:
            raise ValueError("LafiteStep: mixing_prob < 1 needs the text Conditioning")
        if cfg.train.precision == "fp16":
            raise T2IError("train.precision=fp16: the lafite step's R1 is not loss-scaled; use bf16 or fp32")
        E, size = clip.embed_dim, cfg.data.image_size
        self.g_args = {"z_dim": m.z_dim, "w_dim": m.w_dim, "f_dim": E, "img_resolution": size, "img_channels": 3,
                       "channel_base": m.channel_base, "channel_max": m.channel_max, "map_num": m.map_num,
                       "fts_dim": m.fts_dim, "conv_clamp": m.conv_clamp or None}
        self.G = lafite.Generator(**self.g_args)
        self.D = lafite.Discriminator(img_resolution=size, f_dim=E, channel_base=m.channel_base, channel_max=m.channel_max,
                                      mbstd_group_size=m.mbstd_group_size, use_norm=m.d_use_norm,
                                      conv_clamp=m.conv_clamp or None, projection=m.projection)
        self.modules = {"G": self.G, "D": self.D}
        self.frozen = [clip.model, encoder]
        self.setup_gan(cfg, "r1", {"D": self.D})
        self.lazy_r1 = cfg.gan.loss == "official" and L.r1_gamma > 0
        o = cfg.optim
        # lazy regularisation (official): D's learning rate and betas scaled by interval / (interval + 1)
        self.mb_ratio = L.r1_interval / (L.r1_interval + 1) if self.lazy_r1 and L.r1_interval > 1 else 1.0
        od = SimpleNamespace(beta1=o.beta1 ** self.mb_ratio, beta2=o.beta2 ** self.mb_ratio, weight_decay=o.weight_decay)
        self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())
        self.optimizers = {"G": adam(self.g_params, o.lr_g, o, cfg.train.adam),
                           "D": adam(self.d_params, o.lr_d * self.mb_ratio, od, cfg.train.adam)}

    def base_lr(self, name: str) -> float:
        return self.cfg.optim.lr_g if name == "G" else self.cfg.optim.lr_d * self.mb_ratio

    # ------------------------------------------------------------------ pieces
    def to_device(self, device) -> None:
        super().to_device(device)
        if self.text is not None:
            self.text.to(device)

    @torch.no_grad()
    def real_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """CLIP image features of the real images (frozen tower, no gradient), float32 and unit norm."""
        self.clip.model.eval()
        return F.normalize(self.clip.encode_image(imgs.float()).float(), dim=-1)

    def conditions(self, batch: Batch, imgs: torch.Tensor):
        """(fts [B, E]: the condition of G and D and the contrastive target, img_fts [B, E] or None)."""
        L, B, W = self.cfg.lafite, imgs.size(0), self.world
        need_img = L.mixing_prob > 0 or L.iic > 0
        img_fts = self.real_features(imgs) if need_img else None
        noise = F.normalize(shard_randn(W, B, self.clip.embed_dim, device=imgs.device), dim=-1)
        pseudo = perturb(img_fts, noise, L.img_noise) if L.mixing_prob > 0 else None
        if self.language_free:
            return pseudo, img_fts  # no caption, nor its feature, is read
        _, sent, _ = self.text.batch(batch)
        txt = perturb(F.normalize(sent.float(), dim=-1), noise, L.txt_noise)
        if pseudo is not None:
            txt = torch.where(shard_randn(W, B, 1, device=imgs.device, rand=True) < L.mixing_prob, pseudo, txt)
        return txt, img_fts

    def noise(self, rows: int, device) -> torch.Tensor:
        """This process's rows of the global batch's z."""
        return shard_randn(self.world, rows, self.cfg.model.z_dim, device=device)

    def mapping(self, z: torch.Tensor, track: bool = True) -> torch.Tensor:
        """G's mapping; with ``track`` its ``w_avg`` follows the mean w of the global batch (under torchrun the
        mean of every process's rows, not of this process's alone)."""
        m, W = self.G.mapping, self.world
        if not W.distributed:
            return m(z, skip_w_avg_update=not track)
        ws = m(z, skip_w_avg_update=True)
        if track and m.training:
            m.track_w_avg(all_gather_rows(ws[:, 0].detach().float(), W).mean(0))  # ws repeats w over its layers
        return ws

    def run_G(self, z: torch.Tensor, fts: torch.Tensor) -> torch.Tensor:
        """The generator with style mixing (probability ``lafite.style_mixing_prob``: layers from a random
        cut-off on take the w of a second noise); the cut-off and the coin are one draw for the global batch."""
        G, W = self.G, self.world
        ws = self.mapping(z)
        p = self.cfg.lafite.style_mixing_prob
        if p > 0 and G.num_ws > 1:
            cutoff = int(torch.randint(1, G.num_ws, ()))
            if float(torch.rand(())) < p:
                ws2 = self.mapping(self.noise(z.size(0), z.device), track=False)
                ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], 1)
        return G.synthesis(ws, fts, noise_mode="random", shard=(W.rank, W.size))

    def clip_fake(self, img: torch.Tensor) -> torch.Tensor:
        L = self.cfg.lafite
        if L.fake_view == "official":
            img = fake_view(img, self.clip.image_size, L.crop_ratio)
        return F.normalize(self.clip.encode_image(img).float(), dim=-1)

    def global_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of ``x`` of the whole global batch, in batch order (``x`` itself on one process); gradients
        go back to the process that computed each row."""
        if not self.world.distributed:
            return x
        x = x.float()
        return all_gather_rows_autograd(x, self.world) if x.requires_grad else all_gather_rows(x, self.world)

    def contra(self, a, b) -> torch.Tensor:
        """:func:`contrastive_loss` of ``a`` against ``b`` over the global batch (every image against every
        condition of all processes, as on one process)."""
        L = self.cfg.lafite
        return contrastive_loss(self.global_rows(a), self.global_rows(b), L.temp, L.lam, L.contrastive)

    def d_penalty(self, imgs: torch.Tensor, fake: torch.Tensor, fts: torch.Tensor) -> torch.Tensor | None:
        """The every-step penalty of another ``gan.loss`` (r1 / wgan-gp / ma-gp; none for official: lazy R1)."""
        kind = go.PENALTY.get(self.loss_kind) if self.cfg.gan.loss != "official" else None
        critic = lambda x: self.D(x, fts)[0].float().reshape(-1)
        if kind == "r1":
            return go.r1_penalty(critic, imgs, self.gan.gp_lambda)
        if kind == "gp":
            eps = shard_randn(self.world, imgs.size(0), 1, 1, 1, device=imgs.device, rand=True)
            return go.wgan_gp(critic, imgs, fake, self.gan.gp_lambda, eps)
        if kind == "ma-gp":
            o = self.cfg.optim
            return go.ma_gp(lambda x, c: self.D(x, c)[0].float().reshape(-1), imgs, fts, o.gp_weight, o.gp_power)
        return None

    # ------------------------------------------------------------------ the step
    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        self.step_now = step
        P, L = self.precision, self.cfg.lafite
        imgs = batch.images[-1]
        B = imgs.size(0)
        fts, img_fts = self.conditions(batch, imgs)
        kind, logs = go.BASE_LOSS[self.loss_kind], {}
        if self.updates("G", step):
            with P.autocast():
                fake = self.run_G(self.noise(B, imgs.device), fts)
                logits, d_fts = self.D(fake, fts)
            g_adv = go.adversarial(kind, logits, "g")
            g_loss, terms = g_adv, {}
            if L.itc > 0 or L.iic > 0:
                with P.autocast():
                    f_fake = self.clip_fake(fake)
                if L.itc > 0:
                    terms["g_itc"] = self.contra(f_fake, fts)
                    g_loss = g_loss + L.itc * terms["g_itc"]
                if L.iic > 0:
                    terms["g_iic"] = self.contra(f_fake, img_fts)
                    g_loss = g_loss + L.iic * terms["g_iic"]
            if L.itd > 0:
                terms["g_itd"] = self.contra(d_fts, fts)
                g_loss = g_loss + L.itd * terms["g_itd"]
            if L.iid > 0:
                with torch.no_grad(), P.autocast():
                    _, real_d_fts = self.D(imgs, fts)
                terms["g_iid"] = self.contra(real_d_fts, d_fts)
                g_loss = g_loss + L.iid * terms["g_iid"]
            self.optimizers["G"].zero_grad(set_to_none=True)
            P.scale(g_loss).backward(inputs=self.g_params)  # D's gradients here would be thrown away
            self.apply_update("G")
            logs.update({"g_loss": g_loss.detach(), "g_adv": g_adv.detach(), **{k: v.detach() for k, v in terms.items()}})
        if self.updates("D", step):
            with P.autocast():
                with torch.no_grad():
                    fake = self.run_G(self.noise(B, imgs.device), fts)
                fake_logits, _ = self.D(fake, fts)
                real_logits, real_d_fts = self.D(imgs, fts)
            self.watch(real_logits, fake_logits)
            d_fake, d_real = go.adversarial(kind, fake_logits, "fake"), go.adversarial(kind, real_logits, "real")
            d_loss = d_fake + d_real
            if L.itd > 0:
                d_itd = self.contra(real_d_fts, fts)
                d_loss = d_loss + L.itd * d_itd
                logs["d_itd"] = d_itd.detach()
            gp = self.d_penalty(imgs, fake, fts)
            if gp is not None:
                d_loss = d_loss + gp
                logs["d_penalty"] = gp.detach()
            self.optimizers["D"].zero_grad(set_to_none=True)
            P.scale(d_loss).backward(inputs=self.d_params)
            self.apply_update("D")
            logs.update({"d_loss": d_loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()})
            if self.lazy_r1 and step % L.r1_interval == 0:
                real = imgs.detach().requires_grad_(True)
                with P.autocast():
                    r_logits, _ = self.D(real, fts)
                (grad,) = torch.autograd.grad(r_logits.float().sum(), real, create_graph=True)
                r1 = grad.float().square().sum([1, 2, 3]).mean()
                self.optimizers["D"].zero_grad(set_to_none=True)
                P.scale(r1 * (L.r1_gamma / 2) * L.r1_interval).backward(inputs=self.d_params)
                self.apply_update("D")
                logs["r1_penalty"] = r1.detach()
        P.update()
        return {**logs, **self.monitor_logs()}

    # ------------------------------------------------------------------ sampling and export
    @torch.no_grad()
    def sample(self, captions, seed, n, ema):
        g = ema if ema is not None else self.G
        return sample_sentences(g, self.encoder.encode(list(captions)).sentence.float(), g.z_dim, seed, n)

    def frozen_fingerprints(self) -> dict[str, str]:
        return {"CLIP": self.clip.fingerprint()}

    def export(self, directory: Path, ema) -> None:
        save_encoder_dir(directory, self.encoder)
        ckpt.save_component(ema if ema is not None else self.G, directory / "generator", generator_kind("lafite"),
                            self.g_args)
        write_model_index(directory, family="lafite", image_size=self.cfg.data.image_size,
                          generator_weights="ema" if ema is not None else "raw", clip=str(self.cfg.clip),
                          language_free=self.language_free)


def check_config(cfg) -> None:
    """One line per bad choice, before anything is loaded or written."""
    L, m = cfg.lafite, cfg.model
    for key, value, allowed in (("lafite.contrastive", L.contrastive, CONTRASTIVE),
                                ("lafite.fake_view", L.fake_view, FAKE_VIEWS), ("model.projection", m.projection, PROJECTIONS)):
        if value not in allowed:
            raise T2IError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    size = cfg.data.image_size
    if size & (size - 1):
        raise T2IError(f"data.image_size={size}: LAFITE's generator needs a power of two")
    if cfg.data.num_scales != 1:
        raise T2IError(f"data.num_scales={cfg.data.num_scales}: LAFITE trains one scale; set it to 1")
    if not str(cfg.clip).strip():
        raise T2IError("clip is empty: name the CLIP (a Hugging Face CLIP folder such as runs/clip_synth64, or ARCH:FILE)")


def check_processes(cfg, processes: int) -> None:
    """Under torchrun (``processes`` > 1), the D choices that would mix images of different processes, refused
    in one line: the official batch projection, and minibatch-std groups that do not lie within one process's share
    (of the strided shards, a group of ``g`` rows lies within one process exactly when ``g`` divides the share)."""
    n = cfg.train.batch_size
    if processes <= 1 or n % processes:  # an indivisible batch is refused by the trainer
        return
    m = cfg.model
    if m.projection == "batch":
        raise T2IError(f"model.projection=batch adds the sum over the batch to every logit, which on {processes} "
                       "processes would be each one's share: set model.projection=sample to train under torchrun")
    g = lafite.mbstd_group(m.mbstd_group_size, n)
    if (n // processes) % g:
        raise T2IError(f"model.mbstd_group_size={m.mbstd_group_size}: D's minibatch-std groups of {g} images must lie "
                       f"within one process's share of train.batch_size={n} ({n // processes} on each of {processes} "
                       "processes): choose a group size that divides the share, or a larger batch")


def text_spec(cfg, clip) -> str:
    """The text encoder spec: ``clip:<clip>``; another encoder is refused (the condition must lie in CLIP's space)."""
    spec = str(cfg.text_encoder).strip() or clip.spec
    if spec != clip.spec:
        raise T2IError(f"text_encoder={cfg.text_encoder!r}: LAFITE's condition lives in the image-text space of its CLIP, "
                       f"so the text encoder must be {clip.spec!r} (or empty)")
    return spec


def build(cfg, data, resume: bool):
    """(LafiteStep, Vocabulary) of a ``task: lafite`` run."""
    from t2igan.text.clip import CLIPCaptionEncoder, load_clip

    check_config(cfg)
    check_processes(cfg, world_from_env().size)
    clip = load_clip(cfg.clip)
    text_spec(cfg, clip)
    enc = CLIPCaptionEncoder(clip)  # the text tower of the same bundle (spec clip:<clip>; one copy of the weights)
    if cfg.lafite.mixing_prob >= 1.0:  # language-free: no text conditioning (nor its embedding cache) at all
        return LafiteStep(cfg, clip, enc), vocabulary_for(enc, data.captions, cfg.data.min_word_count)
    text, vocab = text_side(cfg, data, "lafite", encoder=enc)
    return LafiteStep(cfg, clip, enc, text), vocab


FAMILY = Family(
    name="lafite", title="LAFITE", paper="Zhou et al., CVPR 2022", config=LafiteRunConfig, build=build, step=LafiteStep,
    generators={"lafite": lafite.Generator}, needs="a CLIP (task clip, or an open_clip checkpoint)",
    preset="configs/lafite_synth64.yaml",
)
