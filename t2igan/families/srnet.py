"""SRNet (Wu et al., "Editing Text in the Wild", ACM MM 2019): scene-text editing.

The generator (:mod:`t2igan.models.srnet`) turns a photo of a word ``i_s`` and the new word
rendered plainly ``i_t`` into the text skeleton ``o_sk``, the converted text ``o_t``, the
background with the text erased ``o_b`` and the edit ``o_f``; two discriminators judge
(background, source) and (edit, plain target) pairs. Trained on the synthetic pairs of
:mod:`t2igan.data.srnet_synth` through the one trainer: the trainer's dataset (the pairs'
``captions.jsonl``, jsonl layout) supplies the order of the pairs (``batch.index``), and this
step reads the seven images of each pair from the arrays it loaded at build time.

Loss (Niwhskal/SRNet ``loss.py`` / ``cfg.py``, the open-source PyTorch code)::

    L_T = L1(t_t, o_t) + lt_alpha * dice(t_sk, o_sk)                              lt_alpha = 1
    L_B = gan(D_b(o_b, i_s)) + lb_beta * L1(t_b, o_b)                               lb_beta = 10
    L_F = gan(D_f(o_f, i_t)) + theta_1 * L1(t_f, o_f) + theta_2 * L_per + theta_3 * L_style
                                                           theta_1 = 10, theta_2 = 1, theta_3 = 500
    L_G = lt * L_T + lb * L_B + lf * L_F                                            lt = lb = lf = 1

with L_per / L_style the VGG-19 perceptual and Gram losses on relu1_1..relu5_1 (only with
``loss.vgg19``: a local torchvision VGG-19 file; without it those two terms are off and the run
says so). Stability, as in that code: both discriminators are updated every step and the
generator every ``stability.g_every``-th (2), the discriminator weights are clipped to
+-``stability.d_clip`` (0.01) after each update, the discriminators have no final sigmoid
and ``loss.gan`` chooses the adversarial loss: ``clamp_log`` (the reference: log of the raw
scores clamped to [eps, 1]) or ``bce`` (binary cross-entropy on logits); ``wgan`` (mean score
differences) is refused, since the BatchNorm(1) output layer makes it constant.

Train switches: ``precision`` (bf16 autocast of the forward passes, every loss in float32 and
the backwards outside autocast; fp16 with the GradScaler on CUDA: there is no gradient penalty,
so every backward is loss-scaled), ``channels_last`` and ``ddp``. Under torchrun the step
averages the gradients itself (``manual_sync``: one all-reduce per optimiser, before its step
and before the ``d_clip`` weight clipping), the BatchNorm statistics are the global batch's
(the trainer swaps the layers), the skeleton dice is a ratio of global-batch sums and the VGG
style term divides by the global batch size, so N processes train the parameters of one on the
same global batch; the other terms are per-sample means over equal shards. The step draws no
random numbers (the trainer's seeded order of the pairs is the global batch's) and the D/G
update ratio is step-based, the same on every process. The frozen VGG is never wrapped.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.config import DataConfig, OptimConfig, TrainConfig, at_least, in_range, positive
from t2igan.core.distributed import World
from t2igan.core.folder import read_model_index, write_model_index
from t2igan.data import srnet_synth as synth
from t2igan.data.text import Vocabulary
from t2igan.families.base import Family, StepBase, adam
from t2igan.models import srnet
from t2igan.models.vgg import gram, load_vgg19

GAN_LOSSES = ("clamp_log", "wgan", "bce")
KIND = "srnet_generator"


@dataclass
class SRNetModelConfig:
    cnum: int = positive(32)  # base width of every generator module (reference: 32)
    ndf: int = positive(64)  # first width of the two discriminators (reference: 64)


@dataclass
class SRNetLossConfig:
    """Weights of Niwhskal/SRNet cfg.py (the defaults)."""

    lt: float = at_least(1.0, 0)  # text conversion loss weight
    lt_alpha: float = at_least(1.0, 0)  # skeleton dice loss inside it
    lb: float = at_least(1.0, 0)  # background inpainting loss weight
    lb_beta: float = at_least(10.0, 0)  # its L1 term
    lf: float = at_least(1.0, 0)  # fusion loss weight
    lf_theta_1: float = at_least(10.0, 0)  # its L1 term
    lf_theta_2: float = at_least(1.0, 0)  # VGG perceptual term (needs vgg19)
    lf_theta_3: float = at_least(500.0, 0)  # VGG Gram (style) term (needs vgg19)
    gan: str = "clamp_log"  # clamp_log (reference) | bce (wgan: refused, see check)
    epsilon: float = in_range(1e-8, 0, 1e-2)  # clamp floor of the reference's log loss and dice smoothing
    vgg19: str = ""  # torchvision vgg19 state dict for the VGG terms ("" = those terms off); never downloaded


@dataclass
class SRNetStabilityConfig:
    """What the reference training loop does to keep the GAN stable (issue: its users' fixes)."""

    g_every: int = positive(2)  # generator update every k-th step (D every step); reference: 2
    d_clip: float = at_least(0.01, 0)  # clamp every discriminator weight to [-c, c] after its update (0 = off); reference 0.01


@dataclass
class SRNetRunConfig:
    task: str = "srnet"
    data: DataConfig = field(default_factory=lambda: DataConfig(root="data/srnet_synth", image_size=8, flip=False,
                                                                crop=False, max_words=4))
    model: SRNetModelConfig = field(default_factory=SRNetModelConfig)
    loss: SRNetLossConfig = field(default_factory=SRNetLossConfig)
    stability: SRNetStabilityConfig = field(default_factory=SRNetStabilityConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_g=1e-4, lr_d=1e-4, beta1=0.9, beta2=0.999))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/srnet_synth", batch_size=8))


# ----------------------------------------------------------------------------- losses
def dice_loss(target: torch.Tensor, pred: torch.Tensor, eps: float = 1e-8, world: World | None = None) -> torch.Tensor:
    """1 - Dice overlap of the skeletons (B, 1, H, W) in [0, 1] (reference: over the whole batch).

    A ratio of batch sums, not a per-sample mean: under torchrun (``world``) the sums are the
    global batch's (all-reduced; the gradient sums back over the processes, so the step's
    gradient average gives the one-process gradient)."""
    inter = (pred.reshape(-1) * target.reshape(-1)).sum()
    denom = pred.sum() + target.sum()
    if world is not None and world.distributed:
        from torch.distributed.nn.functional import all_reduce

        inter, denom = all_reduce(torch.stack((inter, denom))).unbind()
    return 1.0 - (2.0 * inter + eps) / (denom + eps)


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, eps: float) -> torch.Tensor:
    if kind == "clamp_log":
        return -torch.mean(torch.log(real.clamp(eps, 1.0)) + torch.log((1.0 - fake).clamp(eps, 1.0)))
    if kind == "wgan":
        return fake.mean() - real.mean()
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_adv(kind: str, fake: torch.Tensor, eps: float) -> torch.Tensor:
    if kind == "clamp_log":
        return -torch.mean(torch.log(fake.clamp(eps, 1.0)))
    if kind == "wgan":
        return -fake.mean()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


VGG_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]  # reference indices 1, 6, 11, 20, 29


def vgg_losses(vgg, t_f: torch.Tensor, o_f: torch.Tensor, processes: int = 1,
               autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """(perceptual, style) of the reference's build_vgg_loss; images in [-1, 1] (fed as [0, 1],
    ImageNet-normalised: the reference feeds [-1, 1] unnormalised). The style term divides by
    the batch size: ``processes`` makes it the global batch's under torchrun (each process
    holds an equal share). The VGG runs under ``autocast()``, the losses in float32."""
    with autocast():
        f = vgg(torch.cat((t_f, o_f)).add(1).div(2), VGG_LAYERS)
    per, sty = o_f.new_zeros(()), o_f.new_zeros(())
    for n in VGG_LAYERS:
        a, b = f[n].float().chunk(2)
        per = per + (a - b).abs().mean()
        _, c, h, w = a.shape
        ga, gb = gram(a) / (h * w * c), gram(b) / (h * w * c)
        sty = sty + (ga - gb).abs().mean() / (a.shape[0] * processes * c * h)
    return per, sty


def to_float(pairs: dict[str, np.ndarray], idx, device, channels_last: bool = False) -> dict[str, torch.Tensor]:
    """uint8 pair arrays at rows ``idx`` -> images in [-1, 1], t_sk / mask_t in [0, 1] (reference
    scaling); NHWC memory with ``channels_last`` (``train.channels_last``)."""
    out = {}
    for k, a in pairs.items():
        x = torch.from_numpy(np.ascontiguousarray(a[idx])).to(device).float()
        x = x / 255.0 if k in ("t_sk", "mask_t") else x / 127.5 - 1.0
        out[k] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return out


# ----------------------------------------------------------------------------- the step
class SRNetStep(StepBase):
    """SRNet's training step on the pairs of ``cfg.data.root`` (see the module docstring)."""

    switches = frozenset({"precision", "channels_last", "ddp"})
    manual_sync = True  # no DDP wrappers: apply_update averages each optimiser's gradients (torchrun)

    def __init__(self, cfg, data):
        super().__init__()
        self.cfg = cfg
        L = cfg.loss
        if L.gan not in GAN_LOSSES:
            raise T2IError(f"loss.gan={L.gan!r}: one of {', '.join(GAN_LOSSES)}")
        if L.gan == "wgan":  # real and fake batches go through D separately
            raise T2IError("loss.gan='wgan': SRNet's discriminators end in BatchNorm(1), whose training-mode output "
                           "has the batch mean beta for any input, so mean(D(fake)) - mean(D(real)) is 0 and has no "
                           "gradient; use clamp_log or bce")
        root = Path(cfg.data.root)
        meta = synth.read_meta(root)
        self.size = tuple(meta["size"])
        if self.size[0] % 8 or self.size[1] % 8:
            raise T2IError(f"{root / 'srnet.json'}: size {self.size} must be multiples of 8")
        self.pairs = synth.load_pairs(root, list(data.ids), self.size, progress=cfg.train.progress)
        try:
            test_ids = synth.split_ids(root, "test")[:8]
        except T2IError:
            test_ids = list(data.ids)[:8]
        self.sample_pairs = synth.load_pairs(root, test_ids, self.size)
        m = cfg.model
        self.g_args = {"in_channels": 3, "cnum": m.cnum}
        self.G = srnet.Generator(**self.g_args)
        self.D1 = srnet.Discriminator(6, m.ndf)  # background: (t_b | o_b, i_s)
        self.D2 = srnet.Discriminator(6, m.ndf)  # fusion: (t_f | o_f, i_t)
        self.modules = {"generator": self.G, "discriminator1": self.D1, "discriminator2": self.D2}
        o = cfg.optim
        self.optimizers = {"G": adam(self.G.parameters(), o.lr_g, o), "D1": adam(self.D1.parameters(), o.lr_d, o),
                           "D2": adam(self.D2.parameters(), o.lr_d, o)}
        self.vgg = None
        if L.vgg19:
            self.vgg = load_vgg19(L.vgg19, pool="max")
            self.frozen = [self.vgg]
        elif L.lf_theta_2 > 0 or L.lf_theta_3 > 0:
            print("note: srnet: loss.vgg19 is empty, so the VGG perceptual and style terms (lf_theta_2, lf_theta_3) "
                  "are off; give a local torchvision vgg19 file to turn them on", file=sys.stderr)
        self.last_g: dict[str, torch.Tensor] = {}

    def grad_clip(self, net: torch.nn.Module) -> tuple[list, float] | None:
        """``optim.grad_clip``: each update's gradient norm (G, D1, D2 each its own), after the average over
        the processes; 0 (the reference) = off."""
        c = self.cfg.optim.grad_clip
        return (list(net.parameters()), c) if c > 0 else None

    def train_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        """Both discriminators, then (every ``g_every``-th step) the generator: the forward passes
        under ``train.precision``'s autocast, the losses in float32, the backwards outside autocast
        (:meth:`backward`), each optimiser's gradients averaged over the processes before its step
        and before the weight clipping (:meth:`apply_update`)."""
        L, S, P, W = self.cfg.loss, self.cfg.stability, self.precision, self.world
        dev = next(self.G.parameters()).device
        b = to_float(self.pairs, batch.index.numpy(), dev, self.cfg.train.channels_last)
        i_t, i_s = b["i_t"], b["i_s"]
        # --- both discriminators, every step
        with torch.no_grad(), P.autocast():
            _, _, o_b, o_f = self.G(i_t, i_s)
        with P.autocast():
            b_real, b_fake = self.D1(torch.cat((b["t_b"], i_s), 1)), self.D1(torch.cat((o_b, i_s), 1))
            f_real, f_fake = self.D2(torch.cat((b["t_f"], i_t), 1)), self.D2(torch.cat((o_f, i_t), 1))
        db = d_loss(L.gan, b_real.float(), b_fake.float(), L.epsilon)
        df = d_loss(L.gan, f_real.float(), f_fake.float(), L.epsilon)
        self.optimizers["D1"].zero_grad(set_to_none=True)
        self.optimizers["D2"].zero_grad(set_to_none=True)
        self.backward(db + df)  # D1 and D2 share no parameters: the same gradients as two backwards
        for name, net in (("D1", self.D1), ("D2", self.D2)):
            self.apply_update(name, self.grad_clip(net))  # the gradient average (torchrun), the clip, then the step
            if S.d_clip > 0:
                with torch.no_grad():
                    for p in net.parameters():
                        p.clamp_(-S.d_clip, S.d_clip)
        out = {"d_bg": db.detach(), "d_fus": df.detach()}
        # --- the generator, every g_every-th step (reference: (step + 1) % 2 == 0; the same step on every process)
        if (step + 1) % S.g_every == 0:
            self.D1.requires_grad_(False)
            self.D2.requires_grad_(False)
            with P.autocast():
                o_sk, o_t, o_b, o_f = self.G(i_t, i_s)
                s_b, s_f = self.D1(torch.cat((o_b, i_s), 1)), self.D2(torch.cat((o_f, i_t), 1))
            o_sk, o_t, o_b, o_f = o_sk.float(), o_t.float(), o_b.float(), o_f.float()
            l_sk = L.lt_alpha * dice_loss(b["t_sk"], o_sk, L.epsilon, W)
            l_t_l1 = (b["t_t"] - o_t).abs().mean()
            l_b_gan = g_adv(L.gan, s_b.float(), L.epsilon)
            l_b_l1 = L.lb_beta * (b["t_b"] - o_b).abs().mean()
            l_f_gan = g_adv(L.gan, s_f.float(), L.epsilon)
            l_f_l1 = L.lf_theta_1 * (b["t_f"] - o_f).abs().mean()
            l_f = l_f_gan + l_f_l1
            logs = {}
            if self.vgg is not None:
                self.vgg.eval()
                per, sty = vgg_losses(self.vgg, b["t_f"], o_f, W.size, P.autocast)
                l_f = l_f + L.lf_theta_2 * per + L.lf_theta_3 * sty
                logs = {"g_vgg_per": per.detach(), "g_vgg_style": sty.detach()}
            g = L.lt * (l_t_l1 + l_sk) + L.lb * (l_b_gan + l_b_l1) + L.lf * l_f
            self.optimizers["G"].zero_grad(set_to_none=True)
            self.backward(g)
            self.apply_update("G", self.grad_clip(self.G))
            self.D1.requires_grad_(True)
            self.D2.requires_grad_(True)
            self.last_g = {"g_loss": g.detach(), "g_sk_dice": l_sk.detach(), "g_t_l1": l_t_l1.detach(),
                           "g_b_l1": l_b_l1.detach(), "g_f_l1": l_f_l1.detach(), "g_b_gan": l_b_gan.detach(),
                           "g_f_gan": l_f_gan.detach(), **logs}
        P.update()  # the fp16 loss scale, once per step
        return {**out, **self.last_g}  # the generator's terms of its latest update

    @torch.no_grad()
    def sample(self, captions, seed, n, ema):
        """Rows of (i_s, i_t, o_b, o_f) for up to 8 held-out pairs, the generator in eval mode."""
        g = self.G
        was = g.training
        g.eval()
        dev = next(g.parameters()).device
        b = to_float(self.sample_pairs, np.arange(len(self.sample_pairs["i_s"])), dev)
        _, _, o_b, o_f = g(b["i_t"], b["i_s"])
        g.train(was)
        return torch.stack((b["i_s"], b["i_t"], o_b, o_f), 1).flatten(0, 1)  # (4k, 3, H, W) in [-1, 1]

    def export(self, directory: Path, ema) -> None:
        ckpt.save_component(self.G, directory / "generator", KIND, self.g_args)
        write_model_index(directory, family="srnet", image_size=list(self.size), data_root=str(self.cfg.data.root))


def build(cfg, data, resume: bool):
    """(SRNetStep, Vocabulary) of a ``task: srnet`` run; ``data``: the pairs' captions.jsonl (jsonl layout)."""
    d = cfg.data
    if d.flip or d.crop or d.image_size != 8 or d.num_scales != 1:
        raise T2IError("srnet reads its pairs at their own size (srnet.json) without augmentation: set data.flip=false, "
                       "data.crop=false, data.image_size=8 and data.num_scales=1 (the trainer's square copy of i_s "
                       f"is unused); got flip={d.flip}, crop={d.crop}, image_size={d.image_size}, num_scales={d.num_scales}")
    vocab = Vocabulary.build((c for caps in data.captions for c in caps), cfg.data.min_word_count)
    return SRNetStep(cfg, data), vocab


# ----------------------------------------------------------------------------- inference
def load_generator(path, device: str = "cpu") -> tuple[srnet.Generator, dict]:
    """(the generator in eval mode, model_index.json) of an SRNet model or run folder."""
    d, info = read_model_index(path)
    if info.get("family") != "srnet":
        raise T2IError(f"{d}: an SRNet model is needed, this is a {info.get('family')!r} model folder")
    conf, state = ckpt.read_component(d / "generator", KIND)
    try:
        g = srnet.Generator(**conf)
    except TypeError as e:
        raise T2IError(f"{d / 'generator' / 'config.json'}: {e}") from None
    ckpt.load_state_strict(g, state, str(d / "generator"))
    return g.to(device).eval(), info


def image_to_tensor(img, size: tuple[int, int]) -> torch.Tensor:
    """A PIL image -> (1, 3, H, W) in [-1, 1] at ``size`` (H, W)."""
    from PIL import Image

    im = img.convert("RGB").resize((size[1], size[0]), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im, np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]


@torch.no_grad()
def edit(g: srnet.Generator, i_s: torch.Tensor, word: str) -> dict[str, torch.Tensor]:
    """Replace the word in ``i_s`` (1, 3, H, W) in [-1, 1] by ``word``: {i_t, o_sk, o_t, o_b, o_f}.

    The generator runs in eval mode (BatchNorm with its running statistics): in train mode the
    batch statistics of a single image leave dark speckles in the inpainted background (the
    reference's "black dots" bug)."""
    word = word.strip()
    if not word or len(word) > 40 or not word.isprintable():
        raise T2IError(f"the new word must be 1-40 printable characters, got {word!r:.50}")
    g.eval()
    h, w = i_s.shape[-2:]
    dev = next(g.parameters()).device
    i_t = torch.from_numpy(synth.render_standard(word, (h, w)).astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    i_t = i_t.to(dev)
    o_sk, o_t, o_b, o_f = g(i_t, i_s.to(dev))
    return {"i_t": i_t, "o_sk": o_sk, "o_t": o_t, "o_b": o_b, "o_f": o_f}


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [-1, 1] (images) or [0, 1] (C = 1, the skeleton) -> (H, W, 3) uint8."""
    x = x.detach().float().cpu()[0]
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else (x.clamp(-1, 1) + 1) / 2
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


PARTS = ("i_s", "i_t", "o_sk", "o_t", "o_b", "o_f")  # source, plain new word, skeleton, converted text, background, fused


def edit_image(model, image, word: str, device: str = "cpu") -> dict[str, np.ndarray]:
    """The ``t2igan edit`` pipeline on a PIL image: {part: (H, W, 3) uint8} for :data:`PARTS`, at the model's size."""
    g, info = load_generator(model, device)
    size = tuple(info.get("image_size", (64, 128)))
    i_s = image_to_tensor(image, size)
    out = edit(g, i_s, word)
    return {"i_s": to_uint8(i_s), **{k: to_uint8(v) for k, v in out.items()}}


def edit_file(model, image_path, word: str, out, device: str = "cpu") -> dict:
    """Write OUT (the edit o_f at the input's size) and OUT_parts.png (the parts side by side, model size)."""
    from PIL import Image, UnidentifiedImageError

    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise T2IError(f"output must end in .png, .jpg or .webp: {out}")
    p = Path(image_path)
    if not p.is_file():
        raise T2IError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            src = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise T2IError(f"{p}: not a readable image ({str(e)[:80]})") from None
    parts = edit_image(model, src, word, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(parts["o_f"]).resize(src.size, Image.BICUBIC).save(out)
    strip = out.with_name(out.stem + "_parts.png")
    Image.fromarray(np.concatenate([parts[k] for k in PARTS], axis=1)).save(strip)
    return {"edit": str(out), "parts": str(strip), "order": list(PARTS)}


def is_srnet_folder(path) -> bool:
    """An SRNet model or run folder (what ``t2igan serve`` shows in its Edit-text tab)."""
    try:
        return read_model_index(path)[1].get("family") == "srnet"
    except T2IError:
        return False


class Editor:
    """A served SRNet model: one edit at a time (a lock), the generator in eval mode."""

    def __init__(self, path, device: str = "cpu"):
        import threading

        self.g, self.info = load_generator(path, device)
        self.size = tuple(self.info.get("image_size", (64, 128)))
        self.lock = threading.Lock()

    def edit_bytes(self, data: bytes, word: str) -> dict[str, bytes]:
        """An uploaded image file's bytes + the new word -> {part: PNG bytes} for :data:`PARTS`."""
        import io

        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > 4096 * 4096:
                    raise T2IError(f"image is {im.width}x{im.height}; at most 4096x4096 pixels")
                im.load()
                src = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise T2IError(f"not a readable image ({str(e)[:60]})") from None
        i_s = image_to_tensor(src, self.size)
        with self.lock:
            out = edit(self.g, i_s, word)
        arrays = {"i_s": to_uint8(i_s), **{k: to_uint8(v) for k, v in out.items()}}
        res = {}
        for k in PARTS:
            buf = io.BytesIO()
            Image.fromarray(arrays[k]).save(buf, format="PNG")
            res[k] = buf.getvalue()
        return res


# ----------------------------------------------------------------------------- held-out metrics
def tesseract_path() -> str | None:
    import shutil

    return shutil.which("tesseract")


def ocr_words(images: list[np.ndarray], scale: int = 2) -> list[str]:
    """Tesseract's reading of each (H, W, 3) uint8 image as one text line (``--psm 7``, English),
    upscaled ``scale`` times; one tesseract process for all (an image list)."""
    import os
    import subprocess
    import tempfile

    from PIL import Image

    exe = tesseract_path()
    if exe is None:
        raise T2IError("OCR needs Tesseract: apt-get install tesseract-ocr tesseract-ocr-eng (or pass --ocr off)")
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for k, a in enumerate(images):
            im = Image.fromarray(a)
            im = im.resize((im.width * scale, im.height * scale), Image.BICUBIC)
            paths.append(os.path.join(d, f"{k:06d}.png"))
            im.save(paths[-1])
        lst = os.path.join(d, "list.txt")
        Path(lst).write_text("\n".join(paths) + "\n", encoding="utf-8")
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        r = subprocess.run([exe, lst, "stdout", "--psm", "7", "-l", "eng"], capture_output=True, env=env, timeout=3600)
        pages = r.stdout.decode("utf-8", errors="replace").split("\f")
        if r.returncode == 0 and len(pages) >= len(images):
            return [t.strip() for t in pages[: len(images)]]
        # one image stopped the list (tesseract gives up on a page it cannot lay out): one call per
        # image, an image it fails on reads as "" (a miss)
        out = []
        for path in paths:
            r = subprocess.run([exe, path, "stdout", "--psm", "7", "-l", "eng"], capture_output=True, env=env, timeout=60)
            out.append(r.stdout.decode("utf-8", errors="replace").replace("\f", "").strip() if r.returncode == 0 else "")
        return out


def _norm(word: str) -> str:
    return "".join(ch for ch in word if ch.isalnum())


def word_accuracy(read: list[str], truth: list[str]) -> dict[str, float]:
    """Exact-match word accuracy of OCR readings (letters and digits only), case-insensitive and -sensitive."""
    n = max(len(truth), 1)
    return {"word_acc": sum(_norm(r).lower() == _norm(t).lower() for r, t in zip(read, truth)) / n,
            "word_acc_case": sum(_norm(r) == _norm(t) for r, t in zip(read, truth)) / n}


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """MSE, PSNR (dB) and SSIM of (N, 3, H, W) images in [0, 1] (torchmetrics; PSNR and SSIM
    averaged over images, SSIM with an 11x11 Gaussian window, sigma 1.5: the paper's metrics)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    return {"mse": float(mse.mean()), "psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


def evaluate(model, data_root, split: str = "test", n: int = 0, ocr: str = "auto", batch_size: int = 16,
             device: str = "cpu", progress: bool = True) -> dict:
    """Metrics of the edits o_f against the targets t_f on held-out pairs, beside the trivial
    baselines (output = the input image i_s; output = the background t_b) and, with Tesseract,
    the OCR word accuracy (target word read back) of the edits, the targets and the baselines.

    ``ocr``: auto (when tesseract is installed), on, off. ``n``: the first n pairs (0: all)."""
    from tqdm import tqdm

    g, info = load_generator(model, device)
    root = Path(data_root)
    meta = synth.read_meta(root)
    size = tuple(meta["size"])
    if list(size) != list(info.get("image_size", size)):
        raise T2IError(f"{root}: pairs are {size[0]}x{size[1]}, the model was trained at {info['image_size']}")
    ids = synth.split_ids(root, split)
    ids = ids[:n] if n > 0 else ids
    pairs = synth.load_pairs(root, ids, size, progress=progress)
    words = synth.words_of(root)
    outs = []
    for k in tqdm(range(0, len(ids), batch_size), desc="srnet eval", unit="batch", disable=not progress):
        b = to_float({f: pairs[f][k:k + batch_size] for f in ("i_s", "i_t")}, slice(None), device)
        with torch.no_grad():
            outs.append(g(b["i_t"], b["i_s"])[3].cpu())
    o_f = (torch.cat(outs).clamp(-1, 1) + 1) / 2
    unit = {f: torch.from_numpy(pairs[f]).float() / 255.0 for f in ("i_s", "t_b", "t_f")}
    rows = {"srnet (o_f)": o_f, "baseline: input i_s": unit["i_s"], "baseline: background t_b": unit["t_b"]}
    res = {name: image_metrics(x, unit["t_f"]) for name, x in rows.items()}
    use_ocr = ocr == "on" or (ocr == "auto" and tesseract_path() is not None)
    ocr_info = "off" if ocr == "off" else "tesseract not installed" if not use_ocr else None
    if use_ocr:
        truth = [words[i][1] for i in ids]
        for name, x in {**rows, "ground truth t_f": unit["t_f"]}.items():
            imgs = [(a.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for a in x]
            res.setdefault(name, {}).update(word_accuracy(ocr_words(imgs), truth))
        import subprocess

        ver = subprocess.run([tesseract_path(), "--version"], capture_output=True).stdout.decode().splitlines()[:1]
        ocr_info = f"{ver[0] if ver else 'tesseract'}, --psm 7, -l eng, images upscaled 2x; exact word match (letters/digits)"
    return {"model": str(model), "data": str(root), "split": split, "pairs": len(ids), "size": list(size),
            "protocol": "o_f vs t_f in [0,1]; MSE and PSNR (data range 1) and SSIM (11x11 Gaussian, sigma 1.5) "
                        "per image, averaged; generator in eval mode",
            "ocr": ocr_info, "metrics": res}


def metrics_table(r: dict) -> str:
    cols = ["mse", "psnr", "ssim", "word_acc", "word_acc_case"]
    lines = ["| output | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in r["metrics"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4g}" if c in m else "-" for c in cols) + " |")
    return "\n".join(lines)


FAMILY = Family(
    name="srnet", title="SRNet", paper="Wu et al., ACM MM 2019 (Editing Text in the Wild)", config=SRNetRunConfig,
    build=build, step=SRNetStep, outputs=("srnet",), text="none",
    needs="synthetic pairs: t2igan data srnet --out data/srnet_synth", preset="configs/srnet_synth.yaml",
)
