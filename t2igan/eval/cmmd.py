"""CMMD (Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image
Generation", CVPR 2024) and per-image scores with the top and bottom images of a run.

CMMD is the squared MMD between the CLIP image embeddings of the generated and the real images
with a Gaussian RBF kernel ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))``, ``sigma = 10``, times
``scale = 1000``, using the minimum-variance (biased, diagonal included) estimator
``mean K_xx + mean K_yy - 2 mean K_xy``, on L2-normalised embeddings: the constants and estimator
of the reference code (google-research/cmmd, ``distance.py``). The reference embeds with CLIP
ViT-L/14 at 336 px (bicubic resize, no crop); here any local Hugging Face CLIP folder
(``--clip DIR``) with its own processor, so a CMMD is comparable only with the same CLIP model
(its SHA-256 is in the result).

Per image, two scores are kept (``eval/per_image_<split>.jsonl``):
* ``clip_score``: 100 x cosine of the image's and its caption's CLIP embeddings (the per-pair
  term of torchmetrics' CLIPScore, not clamped);
* ``cmmd_witness``: the MMD witness function ``scale x (mean_j k(x, real_j) - mean_j k(x, gen_j))``:
  positive where the image lies where the real images are denser than the generated ones.
The grid ``eval/top_bottom_<split>.png`` shows the 8 best and 8 worst generated images by CLIP
score (regenerated from their batch seeds, which the evaluation's sampling rule makes exact).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from t2igan import T2IError

SIGMA = 10.0
SCALE = 1000.0
PROTOCOL = (f"CMMD: {SCALE:g} x MMD^2 (minimum-variance estimator, diagonal included) of L2-normalised CLIP image "
            f"embeddings, Gaussian RBF kernel sigma={SIGMA:g} (google-research/cmmd constants), N generated vs all L "
            "real images of split S; 'real' column: the split's real images, two random halves (torch seed) against "
            "each other (the noise floor at that size)")


def normalise(e: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings [N, D] in float64."""
    e = e.double()
    return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _kernel_mean(x: torch.Tensor, y: torch.Tensor, sigma: float, rows: bool = False, chunk: int = 4096):
    """mean over all pairs of k(x_i, y_j) (or, with rows=True, the per-row means [len(x)]), in chunks."""
    gamma = 1.0 / (2 * sigma ** 2)
    ysq = (y * y).sum(1)
    parts = []
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk]
        d2 = (xi * xi).sum(1)[:, None] + ysq[None, :] - 2 * xi @ y.T  # (c, M)
        parts.append(torch.exp(-gamma * d2).mean(1))
    r = torch.cat(parts)
    return r if rows else r.mean()


def mmd(x: torch.Tensor, y: torch.Tensor, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """scale x (mean K_xx + mean K_yy - 2 mean K_xy) for embeddings x [N, D], y [M, D] (used as given)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or len(x) < 1 or len(y) < 1:
        raise T2IError(f"CMMD needs two non-empty embedding sets [N, D], [M, D], got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    return float(scale * (_kernel_mean(x, x, sigma) + _kernel_mean(y, y, sigma) - 2 * _kernel_mean(x, y, sigma)))


def cmmd(gen: torch.Tensor, real: torch.Tensor) -> float:
    """CMMD of raw CLIP image embeddings (normalised here)."""
    return mmd(normalise(gen), normalise(real))


def witness(gen: torch.Tensor, real: torch.Tensor, sigma: float = SIGMA, scale: float = SCALE) -> torch.Tensor:
    """Per generated image [N]: scale x (mean_j k(g, real_j) - mean_j k(g, gen_j)) (normalised embeddings)."""
    g, r = normalise(gen), normalise(real)
    return scale * (_kernel_mean(g, r, sigma, rows=True) - _kernel_mean(g, g, sigma, rows=True))


def split_scores(gen_codes: torch.Tensor, real_codes: torch.Tensor, seed: int) -> dict:
    """{"generated": {"value", "n_generated", "n_reference"}, "real": halves of the real set} for one split."""
    out = {"generated": {"value": cmmd(gen_codes, real_codes), "n_generated": len(gen_codes),
                         "n_reference": len(real_codes)}}
    if len(real_codes) >= 4:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(real_codes), generator=g)
        h = len(perm) // 2
        out["real"] = {"value": cmmd(real_codes[perm[:h]], real_codes[perm[h:2 * h]]), "n_generated": h,
                       "n_reference": h}
    return out


def per_image_clip_scores(image_codes: torch.Tensor, text_codes: torch.Tensor) -> torch.Tensor:
    """100 x cosine of each image embedding with its caption's [N]."""
    if image_codes.shape != text_codes.shape:
        raise T2IError(f"per-image CLIP score: {tuple(image_codes.shape)} image vs {tuple(text_codes.shape)} text codes")
    return 100 * torch.nn.functional.cosine_similarity(image_codes.double(), text_codes.double(), dim=1)


def write_per_image(path: Path, captions: list[str], scores: dict[str, torch.Tensor]) -> Path:
    """JSONL, one line per generated sample k: {"k", "caption", <score name>: value, ...} (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for k, c in enumerate(captions):
            f.write(json.dumps({"k": k, "caption": c, **{n: float(v[k]) for n, v in scores.items()}}) + "\n")
    os.replace(tmp, path)
    return path


@torch.no_grad()
def regenerate(pipe, captions: list[str], ks: list[int], batch_size: int, seed: int) -> dict[int, torch.Tensor]:
    """Generated images of samples ``ks`` ({k: float [3, H, W]}), remade batch by batch with the evaluation's
    seeds (batch b = samples b*batch_size.. is pipe.generate(captions, seed=seed + b, n=1))."""
    out: dict[int, torch.Tensor] = {}
    for b in sorted({k // batch_size for k in ks}):
        imgs = pipe.generate(captions[b * batch_size:(b + 1) * batch_size], seed=seed + b, n=1)
        for k in ks:
            if k // batch_size == b:
                out[k] = imgs[k - b * batch_size].float().clamp(0, 1).cpu()
    return out


def save_top_bottom(pipe, captions: list[str], score: torch.Tensor, path: Path, batch_size: int, seed: int,
                    n: int = 8) -> dict:
    """A 2-row grid: the ``n`` highest-scoring generated images (top row, best first) and the ``n`` lowest
    (bottom row, worst first). Returns {"path", "top": [{k, caption, score}], "bottom": [...]}."""
    from torchvision.utils import save_image

    n = min(n, len(score) // 2)
    if n < 1:
        raise T2IError(f"top/bottom grid needs at least 2 samples, got {len(score)}")
    order = torch.argsort(score, descending=True).tolist()
    top, bottom = order[:n], order[::-1][:n]
    imgs = regenerate(pipe, captions, top + bottom, batch_size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    save_image(torch.stack([imgs[k] for k in top + bottom]), tmp, nrow=n, padding=2)
    os.replace(tmp, path)

    def rows(ks):
        return [{"k": k, "caption": captions[k], "score": float(score[k])} for k in ks]

    return {"path": str(path), "top": rows(top), "bottom": rows(bottom)}
