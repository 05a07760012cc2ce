"""Nearest-neighbour retrieval of the intended image from a generated one (emoji benchmark).

For datasets whose captions describe one particular image and name no attribute (emoji:
"red apple", "thumbs up sign: medium skin tone"), each generated image is a query: the
real images of the split (the gallery) are ranked by cosine similarity to it in the
attribute evaluator's penultimate feature space; a hit at k is the caption's own image
among the k nearest. Group hits (nearest image has the same category / the same base
emoji) are reported beside it, each with its chance level.

    r = retrieval_hits(gen_feats, real_feats, target, groups={"category": labels})
    r["hit@1"], r["chance@1"], r["groups"]["category"]["hit@1"]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from t2igan import T2IError

PROTOCOL = ("nearest-neighbour retrieval: each generated image (sample k, caption of image i) ranks all L real "
            "images of split S (the gallery; L = n_images) by cosine similarity of the evaluator's penultimate "
            "features (the FID-SF space); hit@k = the caption's own image is among the k nearest (ties broken by "
            "torch.topk); chance@k = k / L. Group hit@1 = the nearest real image has the same label as image i "
            "(per dataset attribute, e.g. category, and for emoji the base emoji: the id without skin-tone "
            "(1f3fb-1f3ff) and fe0f code points); its chance = mean over samples of (gallery images with that "
            "label) / L. No real-image ceiling: a real image finds itself (hit@1 = 1 by construction)")


def retrieval_hits(query: torch.Tensor, gallery: torch.Tensor, target: torch.Tensor, ks=(1, 5),
                   groups: dict[str, list] | None = None, chunk: int = 1024) -> dict:
    """Retrieval of ``target[n]`` (gallery index) from ``query[n]`` by cosine similarity.

    query: [N, D] features; gallery: [L, D]; target: LongTensor [N] of gallery indices;
    groups: name -> per-gallery-image label (length L). Returns ``{"hit@k", "chance@k" for
    k in ks, "n_queries", "gallery_size", "groups": {name: {"hit@1", "chance"}}}``.
    """
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise T2IError(f"retrieval needs features [N, D] and [L, D], got {tuple(query.shape)} and {tuple(gallery.shape)}")
    N, L = len(query), len(gallery)
    if N == 0 or L == 0:
        raise T2IError(f"retrieval needs at least one query and one gallery image, got {N} and {L}")
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if len(target) != N:
        raise T2IError(f"retrieval: {N} queries but {len(target)} targets")
    if int(target.min()) < 0 or int(target.max()) >= L:
        raise T2IError(f"retrieval: target index out of range 0..{L - 1}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise T2IError(f"retrieval: k must be >= 1, got {ks}")
    if not torch.isfinite(query).all() or not torch.isfinite(gallery).all():
        raise T2IError("retrieval: non-finite features (NaN/inf)")
    kmax = min(ks[-1], L)
    g = F.normalize(gallery.double(), dim=1)
    q = F.normalize(query.double(), dim=1)
    top = torch.cat([torch.topk(q[i:i + chunk] @ g.T, kmax, dim=1).indices for i in range(0, N, chunk)])  # (N, kmax)
    hit = top == target[:, None]  # (N, kmax)
    out: dict = {}
    for k in ks:
        out[f"hit@{k}"] = float(hit[:, :k].any(dim=1).double().mean())
        out[f"chance@{k}"] = min(k, L) / L
    out["n_queries"], out["gallery_size"] = int(N), int(L)
    out["groups"] = {}
    for name, labels in (groups or {}).items():
        labels = list(labels)
        if len(labels) != L:
            raise T2IError(f"retrieval: group '{name}' has {len(labels)} labels for {L} gallery images")
        codes = {v: j for j, v in enumerate(dict.fromkeys(labels))}
        lab = torch.tensor([codes[v] for v in labels], dtype=torch.long)
        share = torch.bincount(lab, minlength=len(codes)).double() / L  # fraction of the gallery per label
        want = lab[target]
        out["groups"][name] = {"hit@1": float((lab[top[:, 0]] == want).double().mean()),
                               "chance": float(share[want].mean()), "n_labels": len(codes)}
    return out
