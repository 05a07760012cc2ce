"""The attribute evaluator: a small CNN trained on real labelled images (SynthFlowers).

It scores generated images on the attributes their captions name (attribute accuracy)
and its penultimate features are the FID-SF / KID-SF feature space. It is trained on
real images only and is never used as a training loss (BENCHMARK.md, rules).

    ev = AttributeEvaluator.from_pretrained("runs/evaluator_synth64")
    logits = ev(images)          # images: float [B, 3, H, W] in [0, 1]
    feats = ev.features(images)  # [B, feature_dim]

Train one with ``t2igan train configs/evaluator_synth64.yaml`` (``train_evaluator``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2igan import T2IError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
TRAIN_HINT = "train one with `t2igan train configs/evaluator_synth64.yaml`"


# ----------------------------------------------------------------------------- network
class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias) + BatchNorm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)


class AttributeEvaluator(nn.Module):
    """CNN with one linear head per attribute.

    Layout for image_size 64 (resolution in the block names)::

        stem  (3 -> w)     @64
        b32   (w -> w)     @32   stride-2 conv + conv
        b16   (w -> 2w)    @16
        b8    (2w -> 4w)   @8
        pool  global average + global max -> 8w
        fc    8w -> feature_dim, BatchNorm1d, ReLU   = features()
        heads[attr]: feature_dim -> len(values)
    """

    def __init__(
        self,
        attribute_values: dict[str, list[str]],  # attribute name -> its value names (head classes, in order)
        width: int = 48,  # base channels of the CNN
        feature_dim: int = 256,  # penultimate feature size (FID-SF / KID-SF space)
        image_size: int = 64,  # input side; other sizes are resized (bilinear, antialias) to it
    ):
        super().__init__()
        if not attribute_values or not all(isinstance(v, (list, tuple)) and len(v) >= 2 for v in attribute_values.values()):
            raise T2IError("AttributeEvaluator needs attribute_values: {name: [at least 2 values]}")
        if image_size < 16 or image_size % 8:
            raise T2IError(f"AttributeEvaluator image_size must be a multiple of 8 and >= 16, got {image_size}")
        self.attribute_values = {str(k): [str(x) for x in v] for k, v in attribute_values.items()}
        self.width = int(width)
        self.feature_dim = int(feature_dim)
        self.image_size = int(image_size)
        w, s = self.width, self.image_size
        self.stem = ConvBNReLU(3, w)  # (B, w, S, S)
        self.blocks = nn.ModuleDict()
        chans = [w, w, 2 * w, 4 * w]
        for i in range(3):
            s //= 2
            self.blocks[f"b{s}"] = nn.Sequential(ConvBNReLU(chans[i], chans[i + 1], stride=2), ConvBNReLU(chans[i + 1], chans[i + 1]))
        self.fc = nn.Sequential(nn.Linear(2 * chans[-1], self.feature_dim, bias=False), nn.BatchNorm1d(self.feature_dim), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({k: nn.Linear(self.feature_dim, len(v)) for k, v in self.attribute_values.items()})
        # Filled by from_pretrained: where the weights came from (recorded by evaluations).
        self.source_dir: str | None = None
        self.weights_sha256: str | None = None

    @property
    def config(self) -> dict:
        return {"attribute_values": self.attribute_values, "width": self.width,
                "feature_dim": self.feature_dim, "image_size": self.image_size}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] in [0, 1] -> [B, 3, S, S] in [-1, 1] on the model's device."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise T2IError(f"evaluator expects images [B, 3, H, W], got shape {tuple(x.shape)}")
        p = next(self.parameters())
        x = x.to(device=p.device, dtype=p.dtype)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return x * 2.0 - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, feature_dim] (the FID-SF / KID-SF space)."""
        h = self.stem(self.prepare(x))
        for block in self.blocks.values():
            h = block(h)  # (B, C, S/2^k, S/2^k)
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.fc(h)

    def classify(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-attribute logits from features: {name: [B, len(values)]}."""
        return {k: head(feats) for k, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted value index per attribute: {name: LongTensor [B]}."""
        return {k: v.argmax(dim=1) for k, v in self(x).items()}

    # ------------------------------------------------------------------------- save / load
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` + ``config.json`` into ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / WEIGHTS_NAME), metadata={"format": "pt", "model": "AttributeEvaluator"})
        (d / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "AttributeEvaluator":
        """Load strictly; any problem is a one-line T2IError. The model is returned in eval mode."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        if not d.is_dir():
            raise T2IError(f"evaluator directory not found: {d} ({TRAIN_HINT})")
        cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise T2IError(f"evaluator directory {d} has no {p.name} ({TRAIN_HINT})")
        from t2igan.core.weights import read_json

        cfg = read_json(cfg_path)
        keys = {"attribute_values", "width", "feature_dim", "image_size"}
        if set(cfg) != keys:
            raise T2IError(f"{cfg_path}: expected keys {sorted(keys)}, got {sorted(cfg)}")
        try:
            model = cls(**cfg)
        except (TypeError, ValueError, AttributeError) as e:
            raise T2IError(f"{cfg_path}: bad evaluator config ({e})") from None
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise T2IError(f"{w_path}: not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e.__class__.__name__})") from None
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            first = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
            raise T2IError(f"{w_path}: weights do not match the evaluator config ({len(missing)} missing, "
                           f"{len(unexpected)} unexpected keys; {first})")
        for k, v in expected.items():
            if tuple(state[k].shape) != tuple(v.shape):
                raise T2IError(f"{w_path}: '{k}' has shape {tuple(state[k].shape)}, the config needs {tuple(v.shape)}")
        model.load_state_dict(state, strict=True)
        model.source_dir = str(d.resolve())
        model.weights_sha256 = sha256_file(w_path)
        return model.to(device).eval()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(model: AttributeEvaluator) -> str:
    """sha256 of the weights file (when loaded from one), else of the serialised state."""
    if model.weights_sha256:
        return model.weights_sha256
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state, metadata={"format": "pt", "model": "AttributeEvaluator"})).hexdigest()


# ----------------------------------------------------------------------------- data
def attribute_targets(attributes: list[dict[str, str]], attribute_values: dict[str, list[str]], where: str) -> torch.Tensor:
    """Per-image attribute dicts -> LongTensor [N, A] of value indices (A in attribute_values order)."""
    index = {k: {v: i for i, v in enumerate(vals)} for k, vals in attribute_values.items()}
    out = torch.empty(len(attributes), len(index), dtype=torch.long)
    for n, rec in enumerate(attributes):
        for a, (k, idx) in enumerate(index.items()):
            if k not in rec:
                raise T2IError(f"{where}: image {n} has no value for attribute '{k}'")
            if str(rec[k]) not in idx:
                raise T2IError(f"{where}: image {n}: attribute '{k}' has unknown value {rec[k]!r} (known: {', '.join(idx)})")
            out[n, a] = idx[str(rec[k])]
    return out


def labelled_split(root: str | os.PathLike, split: str, image_size: int, progress: bool = False):
    """Load a labelled split: (uint8 images [N, 3, S, S], targets [N, A], attribute_values)."""
    from t2igan.data.folder import load_folder

    ds = load_folder(root, split)
    if ds.attributes is None:
        raise T2IError(f"dataset {root} (split '{split}') has no attribute labels (attributes.jsonl); "
                       "the attribute evaluator needs a labelled dataset such as SynthFlowers (`t2igan data synth`)")
    values = ds.attribute_values
    if not isinstance(values, dict) or not values:
        raise T2IError(f"{Path(root) / 'dataset.json'}: no 'attributes' value lists; cannot build evaluator heads")
    images = torch.from_numpy(np.array(ds.images_uint8(image_size, progress=progress))).permute(0, 3, 1, 2).contiguous()
    targets = attribute_targets(ds.attributes, values, f"{root} split '{split}'")
    return images, targets, {k: list(v) for k, v in values.items()}


def captions_name_attributes(root, split: str) -> bool:
    """Whether any caption of the split names an attribute (SynthFlowers: yes; emoji: no)."""
    from t2igan.data.folder import load_folder

    ds = load_folder(root, split)
    return ds.named is None or any(nm for per_image in ds.named for nm in per_image)


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Label-preserving augmentation of a float batch [B, 3, S, S] in [0, 1].

    Random flips, a shift of up to S/16 pixels (reflect padding), mild brightness and
    contrast jitter, and on some images a light blur or pixel noise, so the evaluator is
    not thrown by the softer, noisier look of generated images. No scaling: it would
    change the 'size' attribute.
    """
    B, _, S, _ = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen).to(dev)

    if flip:
        x = torch.where(rand(B, 1, 1, 1) < 0.5, x.flip(3), x)
        x = torch.where(rand(B, 1, 1, 1) < 0.5, x.flip(2), x)
    pad = max(1, S // 16)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    off = torch.randint(0, 2 * pad + 1, (B, 2), generator=gen).tolist()
    x = torch.stack([xp[i, :, dy:dy + S, dx:dx + S] for i, (dy, dx) in enumerate(off)])
    # brightness / contrast
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + 0.16 * (rand(B, 1, 1, 1) - 0.5)) + mean
    x = x * (1 + 0.16 * (rand(B, 1, 1, 1) - 0.5))
    # light blur on ~25% of the batch (one sigma per batch)
    sigma = 0.4 + 0.6 * float(torch.rand((), generator=gen))
    t = torch.arange(-1, 2, dtype=x.dtype, device=dev)
    k1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k1 = k1 / k1.sum()
    k2 = (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    x = torch.where(rand(B, 1, 1, 1) < 0.25, blurred, x)
    # pixel noise on ~half of the batch
    noise_std = 0.03 * rand(B, 1, 1, 1) * (rand(B, 1, 1, 1) < 0.5)
    x = x + noise_std * torch.randn(x.shape, generator=gen).to(dev)
    return x.clamp_(0.0, 1.0)


@torch.no_grad()
def predict_uint8(model: AttributeEvaluator, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted value indices [N, A] for uint8 images [N, 3, S, S]."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(dev).float() / 255.0
        out.append(torch.stack([v.argmax(1) for v in model(x).values()], dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, len(model.heads), dtype=torch.long)


def accuracy_table(pred: torch.Tensor, target: torch.Tensor, names: list[str]) -> dict:
    """Per-attribute accuracy plus 'all' (every attribute of the image right) and the count."""
    right = pred == target  # (N, A)
    res = {k: float(right[:, a].float().mean()) for a, k in enumerate(names)}
    res["all"] = float(right.all(dim=1).float().mean())
    res["n_images"] = int(len(target))
    return res


# ----------------------------------------------------------------------------- training
def _write_dir_atomically(final: Path, fill) -> None:
    """Fill a temp dir beside ``final``, then swap it in; an existing ``final`` survives failures."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def format_ceiling(metrics: dict) -> str:
    splits = [s for s in ("test", "novel") if s in metrics.get("ceiling", {})]
    names = metrics["attributes"] + ["all"]
    lines = [f"{'attribute':<16}" + "".join(f"{s:>10}" for s in splits)]
    for k in names:
        lines.append(f"{k:<16}" + "".join(f"{metrics['ceiling'][s][k]:>10.2%}" for s in splits))
    lines.append(f"{'images':<16}" + "".join(f"{metrics['ceiling'][s]['n_images']:>10d}" for s in splits))
    return "\n".join(lines)


def train_evaluator(cfg, eval_splits: tuple[str, ...] = ("test", "novel")) -> Path:
    """Train the attribute evaluator on real images of ``cfg.data.root``/``cfg.data.split``.

    Saves the model and ``metrics.json`` (per-attribute accuracy on the real ``eval_splits``:
    the ceiling of attribute accuracy) to ``cfg.train.out_dir``; returns that path.
    """
    from tqdm import tqdm

    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.train
    if d.crop:
        raise T2IError("data.crop must be false for the evaluator: a random-resized crop changes the 'size' attribute "
                       "(the evaluator augments with small shifts instead)")
    if d.num_scales != 1:
        raise T2IError(f"data.num_scales must be 1 for the evaluator, got {d.num_scales}")
    if t.max_steps <= 0 or t.batch_size <= 0:
        raise T2IError("train.max_steps and train.batch_size must be positive")
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    from t2igan.core.device import pick_device

    device = pick_device(t.device)
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    out_dir = Path(t.out_dir)

    images, targets, values = labelled_split(d.root, d.split, d.image_size, progress=t.progress)
    names = list(values)
    print(f"evaluator: training on {len(images)} real images of {d.root} (split '{d.split}'), "
          f"{len(names)} attributes, device {device}", flush=True)
    evals = {}
    for s in eval_splits:
        try:
            evals[s] = labelled_split(d.root, s, d.image_size)
        except T2IError as e:
            print(f"evaluator: no ceiling on split '{s}': {e}", flush=True)
    for s, (_, _, v) in evals.items():
        if v != values:
            raise T2IError(f"split '{s}' of {d.root} has different attribute values than split '{d.split}'")

    model = AttributeEvaluator(values, width=m.width, feature_dim=m.feature_dim, image_size=d.image_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=o.lr_g, betas=(o.beta1, o.beta2))
    warmup = max(1, t.max_steps // 50)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 0 over max_steps
        if step < warmup:
            return o.lr_g * (step + 1) / warmup
        return o.lr_g * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, t.max_steps - warmup)))

    model.train()
    t0 = time.time()
    n = len(images)
    perm, pos = torch.randperm(n, generator=gen), 0
    bar = tqdm(range(t.max_steps), desc="evaluator", unit="step", disable=not t.progress, dynamic_ncols=True)
    step, loss_avg = 0, None
    for step in bar:
        if t.max_minutes > 0 and time.time() - t0 > 60 * t.max_minutes:
            print(f"evaluator: stopping at step {step}: train.max_minutes={t.max_minutes} reached", flush=True)
            break
        if pos + t.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + t.batch_size]
        pos += t.batch_size
        x = augment(images[idx].to(device).float() / 255.0, gen, flip=d.flip)
        y = targets[idx].to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(x)
        loss = sum(F.cross_entropy(lg, y[:, a]) for a, lg in enumerate(logits.values()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        loss_val = float(loss.detach())
        loss_avg = loss_val if loss_avg is None else 0.98 * loss_avg + 0.02 * loss_val
        if step % max(1, t.log_every) == 0:
            bar.set_postfix(loss=f"{loss_avg:.3f}", lr=f"{lr_at(step):.2e}")
    else:
        step = t.max_steps
    bar.close()
    seconds = time.time() - t0

    model.eval()
    ceiling = {s: accuracy_table(predict_uint8(model, im), tg, names) for s, (im, tg, _) in evals.items()}
    metrics = {
        "attributes": names,
        "ceiling": ceiling,  # accuracy on real images of each split
        "train": {"root": str(d.root), "split": d.split, "n_images": n, "steps": step, "batch_size": t.batch_size,
                  "seconds": round(seconds, 1), "device": str(device), "threads": torch.get_num_threads(),
                  "seed": t.seed, "lr": o.lr_g, "weight_decay": o.weight_decay,
                  "augmentation": ("flips, " if d.flip else "no flips, ") +
                                  "shift <= S/16 (reflect), brightness/contrast +-8%, blur 25%, noise 50%"},
        "model": {k: v for k, v in model.config.items() if k != "attribute_values"},
    }
    if "test" in ceiling:
        metrics["min_test_accuracy"] = min(ceiling["test"][k] for k in names)

    def fill(tmp: Path) -> None:
        model.cpu().save_pretrained(tmp)
        (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    _write_dir_atomically(out_dir, fill)
    print(f"evaluator: {step} steps in {seconds / 60:.1f} min; accuracy on real images (the ceiling):")
    print(format_ceiling(metrics))
    if not captions_name_attributes(d.root, d.split):
        print("evaluator: the captions of this dataset name no attribute (emoji): no attribute accuracy is measured "
              "with it; its heads shape the feature space of FID-SF / KID-SF and nearest-neighbour retrieval")
    elif "test" in ceiling and metrics["min_test_accuracy"] < 0.97:
        print(f"evaluator: WARNING: lowest test accuracy {metrics['min_test_accuracy']:.2%} is below 97%; "
              "attribute accuracy measured with it is not meaningful")
    print(f"evaluator: saved to {out_dir}", flush=True)
    return out_dir
