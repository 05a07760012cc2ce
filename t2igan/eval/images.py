"""FID / KID / IS with the standard Inception, on tensors or on folders of images.

    inc = InceptionFeatures.from_file(path)
    ref = inception_features(inc, real_uint8)                 # {"2048", "logits_unbiased"}
    res = inception_metrics(ref, inception_features(inc, fake), seed=0)

``t2igan eval images DIR --ref DIR2`` scores a folder of images against another
(``score_folders``); images are decoded as torch-fidelity decodes them (PIL, RGB, uint8).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from t2igan import T2IError
from t2igan.eval.metrics import FeatureStats, inception_score

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@torch.no_grad()
def inception_features(inc, images, batch_size: int = 50, progress: bool = False, desc: str = "inception") -> dict[str, torch.Tensor]:
    """Features of images (uint8 or float [0, 1] ``[N, 3, H, W]`` tensor or array) in batches (CPU results)."""
    from tqdm import tqdm

    out: dict[str, list] = {}
    n = len(images)
    for i in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
        x = images[i:i + batch_size]
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        for k, v in inc.features(x).items():
            out.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def inception_metrics(ref: dict[str, torch.Tensor], gen: dict[str, torch.Tensor], seed: int = 0,
                      kid_subset_size: int = 1000, kid_subsets: int = 100, is_splits: int = 10) -> dict:
    """FID and KID (2048-d pool features, ``gen`` vs ``ref``) and IS of ``gen``, all torchmetrics."""
    st = FeatureStats(ref["2048"].shape[1], kid_subset_size, kid_subsets)
    st.update(ref["2048"], real=True)
    st.update(gen["2048"], real=False)
    d = st.compute(seed)
    out = {"fid": d["fid"], "kid": {"mean": d["kid_mean"], "std": d["kid_std"], "subset_size": d["kid_subset_size"],
                                    "subsets": d["kid_subsets"]},
           "n_reference": d["n_real"], "n_compared": d["n_fake"]}
    n = len(gen["2048"])
    logits = gen.get("logits_unbiased")
    out["is"] = inception_score(logits, splits=is_splits, seed=seed) if logits is not None and n >= is_splits else None
    if n < 2048 or d["n_real"] < 2048:
        out["note"] = (f"FID from {min(n, d['n_real'])} < 2048 samples: the 2048-d covariance is rank-deficient; "
                       "compare only with FIDs of the same sample count")
    return out


def extractor_key(inc) -> dict:
    """The cache-key part that names the feature network (the tf-inception key is the one used before
    backbones could be chosen, so existing caches stay valid)."""
    if inc.backbone == "tf-inception":
        return {"extractor": "fid-inception-v3", "weights_sha256": inc.weights_sha256}
    return {"extractor": inc.backbone, "weights_sha256": inc.weights_sha256}


def list_images(folder: str | os.PathLike) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise T2IError(f"image folder not found: {d}")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise T2IError(f"{d}: no images ({', '.join(IMAGE_EXTS)}) in the folder")
    return files


def load_images(files: list[Path]) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]``; every image must have the same size (as torch-fidelity requires)."""
    from PIL import Image, UnidentifiedImageError

    arrs, size0 = [], None
    for p in files:
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise T2IError(f"cannot read image {p}: {e.__class__.__name__}") from None
        if size0 is None:
            size0 = (a.shape[1], a.shape[0], files[0])
        elif (a.shape[1], a.shape[0]) != size0[:2]:
            raise T2IError(f"images of mixed sizes: {p} is {a.shape[1]}x{a.shape[0]} but {size0[2]} is "
                           f"{size0[0]}x{size0[1]}; resize them to one size first")
        arrs.append(a)
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def score_folders(gen_dir, ref_dir, inception_weights=None, batch_size: int = 50, device="cpu", seed: int = 0,
                  kid_subset_size: int = 1000, kid_subsets: int = 100, is_splits: int = 10, cache_dir=None,
                  use_cache: bool = True, progress: bool = True, fid_backbone: str = "tf-inception") -> dict:
    """FID / KID of the images in ``gen_dir`` against ``ref_dir``, IS of ``gen_dir`` (Inception from a local file;
    ``fid_backbone``: 'tf-inception' or 'torchvision-inception', see ``eval/backbones.py``)."""
    from t2igan.eval.backbones import load_fid_backbone
    from t2igan.eval.refcache import cache_key, cached_features

    gen_files, ref_files = list_images(gen_dir), list_images(ref_dir)  # errors before the network loads
    inc = load_fid_backbone(fid_backbone, inception_weights, device=device, cache_dir=cache_dir)
    gen_imgs, ref_imgs = load_images(gen_files), load_images(ref_files)

    def ref_fp() -> str:
        return cache_key(files=[(str(p.resolve()), p.stat().st_size, int(p.stat().st_mtime)) for p in ref_files])

    ref, cinfo = cached_features(
        {"kind": "image-folder", "folder": str(Path(ref_dir).resolve()), "files": ref_fp(),
         **extractor_key(inc),
         "resize": "inception-tf1-bilinear-299" if inc.backbone == "tf-inception" else "torch-bilinear-299-float"},
        lambda: inception_features(inc, ref_imgs, batch_size, progress, "reference"), cache_dir, use_cache)
    gen = inception_features(inc, gen_imgs, batch_size, progress, "images")
    res = inception_metrics(ref, gen, seed, kid_subset_size, kid_subsets, is_splits)
    res.update({
        "fid_backbone": inc.backbone,
        "images": str(gen_dir), "reference": str(ref_dir),
        "image_size": [int(gen_imgs.shape[-1]), int(gen_imgs.shape[-2])],
        "reference_image_size": [int(ref_imgs.shape[-1]), int(ref_imgs.shape[-2])],
        "feature_extractor": inc.describe(),
        "reference_cache": cinfo,
        "protocol": {"decode": "PIL .convert('RGB'), uint8 (as torch-fidelity)", "seed": seed,
                     "kid": f"polynomial kernel degree 3, {kid_subsets} subsets of min({kid_subset_size}, N) "
                            f"drawn with torch seed {seed}",
                     "is": f"{is_splits} splits, samples shuffled with torch seed {seed}; std with ddof=1 (torchmetrics)"},
    })
    return res
