"""Similarity matrices of a text encoder on a dataset: ``t2igan eval embed``.

For ``n`` images of a split (a class-balanced random subset, sorted by class), caption 0
of each is encoded; the report holds

* ``text_text.png``: cosine similarity of every caption with every caption;
* ``text_image.png`` (with ``--damsm RUN`` and an encoder whose width matches the run's
  image encoder): cosine of every caption with every image's DAMSM global code. This is a
  joint space only for the text encoder trained with that image encoder (``damsm:RUN``);
  for any other encoder the figure is reported but marked ``joint_space: false``;
* ``embed_report.json``: retrieval accuracy. Text->image top-1/top-5 (the caption's own
  image among the ``n``), class-level text->image top-1 (the best image has the caption's
  class), and text->text class top-1 (the nearest *other* caption has the same class).

Rows and columns are grouped by class: an attribute for SynthFlowers (default the petal
colour), the class ids of CUB/Oxford (``class_info.pickle``), or the COCO/plain folders'
... nothing (an error: there is no class to group by). Colours: blue = -1, white = 0,
red = +1, black lines between classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2igan import T2IError


def class_labels(data, class_attr: str) -> list[str]:
    if data.attributes:
        keys = sorted(data.attributes[0])
        if class_attr not in data.attributes[0]:
            raise T2IError(f"{data.root}: no attribute {class_attr!r} to group by (attributes: {', '.join(keys)})")
        return [str(a[class_attr]) for a in data.attributes]
    ids = data.meta.get("class_ids") if data.meta else None
    if ids is not None:
        return [str(int(c)) for c in ids]
    raise T2IError(f"{data.root} [{data.split}]: no classes to group by (neither attributes nor class ids)")


def pick(labels: list[str], n: int, seed: int) -> list[int]:
    """A class-balanced random subset of ``n`` indices, sorted by class (then index)."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, c in enumerate(labels):
        by.setdefault(c, []).append(i)
    for v in by.values():
        rng.shuffle(v)
    chosen, k = [], 0
    while len(chosen) < min(n, len(labels)):
        for c in sorted(by):
            if k < len(by[c]) and len(chosen) < n:
                chosen.append(by[c][k])
        k += 1
    return sorted(chosen, key=lambda i: (labels[i], i))


def matrix_png(sim: np.ndarray, labels: list[str], path: Path, cell: int = 0) -> None:
    """Blue-white-red image of a similarity matrix with black lines between classes."""
    from PIL import Image

    n, m = sim.shape
    cell = cell or max(1, 600 // max(n, m))
    s = np.clip(sim, -1, 1)
    rgb = np.empty((n, m, 3), np.float32)
    pos, neg = np.clip(s, 0, 1), np.clip(-s, 0, 1)
    rgb[..., 0] = 1 - neg  # red stays for positives, fades for negatives
    rgb[..., 1] = 1 - np.maximum(pos, neg)
    rgb[..., 2] = 1 - pos
    img = (rgb * 255).round().astype(np.uint8).repeat(cell, 0).repeat(cell, 1)
    bounds = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    for b in bounds:
        img[b * cell, :, :] = 0
        if m == n:
            img[:, b * cell, :] = 0
    Image.fromarray(img).save(path)


def retrieval(sim_ti: np.ndarray, labels: list[str]) -> dict:
    n = sim_ti.shape[0]
    order = np.argsort(-sim_ti, axis=1)
    own = np.arange(n)[:, None]
    lab = np.asarray(labels)
    return {"t2i_top1": round(float((order[:, :1] == own).any(1).mean()), 4),
            "t2i_top5": round(float((order[:, :5] == own).any(1).mean()), 4),
            "t2i_class_top1": round(float((lab[order[:, 0]] == lab).mean()), 4),
            "chance_top1": round(1 / n, 4), "chance_top5": round(min(5, n) / n, 4)}


@torch.no_grad()
def embed_report(spec: str, data_root: str, out_dir: str, split: str = "test", damsm: str | None = None,
                 class_attr: str = "petal_colour", n: int = 200, seed: int = 0, batch_size: int = 100) -> dict:
    from t2igan.core import weights as ckpt
    from t2igan.data.birds import load_any
    from t2igan.text.spec import load_caption_encoder

    data = load_any(data_root, split)
    labels_all = class_labels(data, class_attr)
    idx = pick(labels_all, n, seed)
    labels = [labels_all[i] for i in idx]
    caps = [data.captions[i][0] for i in idx]
    enc = load_caption_encoder(spec)
    sent = F.normalize(enc.encode_all(caps, batch_size), dim=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tt = (sent @ sent.t()).numpy()
    matrix_png(tt, labels, out / "text_text.png")
    masked = tt.copy()
    np.fill_diagonal(masked, -np.inf)
    lab = np.asarray(labels)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(lab), dtype=bool)
    report = {
        "encoder": spec, "encoder_name": enc.name, "dim": enc.sentence_dim, "data": str(data_root), "split": split,
        "n": len(idx), "caption": "caption 0 of each image", "class": class_attr if data.attributes else "class id",
        "classes": sorted(set(labels)),
        "text_text": {"class_top1": round(float((lab[masked.argmax(1)] == lab).mean()), 4),
                      "mean_cos_same_class": round(float(tt[same & off].mean()), 4) if (same & off).any() else None,
                      "mean_cos_other_class": round(float(tt[~same].mean()), 4) if (~same).any() else None,
                      "png": str(out / "text_text.png")},
    }
    if damsm:
        from t2igan.core.folder import resolve_dir
        from t2igan.data.folder import load_image
        from t2igan.text import damsm as damsm_mod

        d = resolve_dir(damsm)
        cfg, state = ckpt.read_component(d / "image_encoder", "damsm_image_encoder")
        img_enc = damsm_mod.ImageEncoder(**cfg)
        ckpt.load_state_strict(img_enc, state, str(d / "image_encoder"))
        img_enc.eval()
        if img_enc.nef != enc.sentence_dim:
            report["text_image"] = {"skipped": f"the DAMSM image codes are {img_enc.nef}-d, the encoder's sentences "
                                               f"{enc.sentence_dim}-d: no common space"}
        else:
            size = img_enc.image_size
            ims = np.stack([load_image(data.image_paths[i], size) for i in idx])  # (n, S, S, 3) uint8
            x = torch.from_numpy(ims).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            codes = torch.cat([img_enc(x[i:i + batch_size])[1] for i in range(0, len(x), batch_size)])
            ti = (sent @ F.normalize(codes, dim=1).t()).numpy()
            matrix_png(ti, labels, out / "text_image.png")
            own = str(spec).startswith("damsm:") and resolve_dir(str(spec)[6:]).resolve() == d.resolve()
            report["text_image"] = {**retrieval(ti, labels), "damsm_run": str(d), "joint_space": own,
                                    "png": str(out / "text_image.png")}
    ckpt.write_json(out / "embed_report.json", report)
    return report
