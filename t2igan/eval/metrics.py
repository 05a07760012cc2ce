"""Metrics: attribute accuracy, and FID / KID in the attribute evaluator's feature space.

FID-SF and KID-SF are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` with ``feature=EvaluatorFeatures(evaluator)``: the Inception
network is replaced by the evaluator's penultimate features (``feature_dim`` wide), the
statistics and the distance are torchmetrics' own. torchmetrics passes the images of a
custom extractor through unchanged, so they go in as float ``[B, 3, H, W]`` in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn as nn

from t2igan import T2IError


# ----------------------------------------------------------------------------- attribute accuracy
def attribute_accuracy(
    pred: dict[str, torch.Tensor],
    target: list[dict[str, str]],
    named: list[list[str]],
    attribute_values: dict[str, list[str]],
) -> dict:
    """Score predictions on the attributes each sample's caption names.

    pred: attribute -> LongTensor [N] of value indices (into ``attribute_values[attr]``).
    target: per sample, the true values {attribute: value name}.
    named: per sample, the attributes its caption names; the others are not scored.

    Returns ``{attr: {"accuracy", "correct", "count"}, ..., "all_named": {...}}`` where
    an attribute's count is the number of samples whose caption names it, and
    "all_named" is over the samples naming at least one attribute: the fraction with
    every named attribute right. An accuracy over zero samples is ``None``.
    """
    n = len(target)
    if len(named) != n:
        raise T2IError(f"attribute_accuracy: {n} targets but {len(named)} 'named' lists")
    index = {k: {v: i for i, v in enumerate(vals)} for k, vals in attribute_values.items()}
    for k, p in pred.items():
        if k not in index:
            raise T2IError(f"attribute_accuracy: prediction for unknown attribute '{k}'")
        if p.dim() != 1 or len(p) != n:
            raise T2IError(f"attribute_accuracy: prediction '{k}' has shape {tuple(p.shape)}, expected ({n},)")
    pred_list = {k: p.tolist() for k, p in pred.items()}
    correct = {k: 0 for k in index}
    count = {k: 0 for k in index}
    all_right = all_count = 0
    for i in range(n):
        if not named[i]:
            continue
        ok_all = True
        for k in named[i]:
            if k not in index:
                raise T2IError(f"attribute_accuracy: sample {i} names unknown attribute '{k}'")
            if k not in pred_list:
                raise T2IError(f"attribute_accuracy: no prediction for attribute '{k}' (named by sample {i})")
            value = target[i].get(k)
            if value not in index[k]:
                raise T2IError(f"attribute_accuracy: sample {i}: attribute '{k}' has unknown value {value!r}")
            ok = pred_list[k][i] == index[k][value]
            correct[k] += ok
            count[k] += 1
            ok_all = ok_all and ok
        all_right += ok_all
        all_count += 1

    def entry(c: int, m: int) -> dict:
        return {"accuracy": c / m if m else None, "correct": int(c), "count": int(m)}

    out = {k: entry(correct[k], count[k]) for k in index}
    out["all_named"] = entry(all_right, all_count)
    return out


# ----------------------------------------------------------------------------- FID-SF / KID-SF
class EvaluatorFeatures(nn.Module):
    """torchmetrics feature extractor: float images [B, 3, H, W] in [0, 1] -> evaluator features [B, D].

    ``num_features`` lets torchmetrics skip its probe pass. The last (input, output) pair
    is remembered, so FID and KID updated with the same tensor (and the caller asking
    for the same features) cost one evaluator pass.
    """

    def __init__(self, evaluator: nn.Module):
        super().__init__()
        self.evaluator = evaluator
        self.num_features = int(evaluator.feature_dim)
        self._last: tuple | None = None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self._last
        if last is not None and last[0] is x and last[1] == x._version:
            return last[2]
        self.evaluator.eval()
        f = self.evaluator.features(x).float()  # (B, D)
        self._last = (x, x._version, f)
        return f

    def clear(self) -> None:
        self._last = None

    def train(self, mode: bool = True) -> "EvaluatorFeatures":
        # torchmetrics may toggle train mode on its children; the evaluator always runs in eval mode
        super().train(mode)
        self.evaluator.eval()
        return self


def make_fid(extractor: EvaluatorFeatures):
    """torchmetrics FID with the evaluator as feature extractor (inputs: float in [0, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=extractor, normalize=True, reset_real_features=True)


def make_kid(extractor: EvaluatorFeatures, subset_size: int = 1000, subsets: int = 100):
    """torchmetrics KID with the evaluator as feature extractor (inputs: float in [0, 1])."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return KernelInceptionDistance(feature=extractor, subsets=subsets, subset_size=subset_size, normalize=True)


def kid_compute(kid, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets); its random subsets drawn from a fixed seed, global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


class PrecomputedFeatures(nn.Module):
    """torchmetrics ``feature`` module for features computed elsewhere (one network pass feeds FID,
    KID and IS, and cached reference features feed them without images): returns its input
    ``[B, num_features]`` unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if f.dim() != 2 or f.shape[1] != self.num_features:
            raise T2IError(f"expected features [B, {self.num_features}], got shape {tuple(f.shape)}")
        return f


class FeatureStats:
    """torchmetrics FID and KID between a reference and a compared set of features (fed in batches).

    Features, not images, go in: the caller computes them once per batch (or reads the
    reference set's from the cache) and the statistics and distances are torchmetrics' own.
    """

    def __init__(self, num_features: int, kid_subset_size: int = 1000, kid_subsets: int = 100, device="cpu"):
        import warnings

        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        self.num_features = int(num_features)
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        self.fid = FrechetInceptionDistance(feature=PrecomputedFeatures(num_features), reset_real_features=True).to(device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = KernelInceptionDistance(feature=PrecomputedFeatures(num_features), subsets=kid_subsets,
                                               subset_size=kid_subset_size).to(device)
        self.device = torch.device(device)
        self.n = {True: 0, False: 0}

    @torch.no_grad()
    def update(self, feats: torch.Tensor, real: bool) -> None:
        f = feats.to(self.device, torch.float32)
        self.fid.update(f, real=real)
        self.kid.update(f, real=real)
        self.n[real] += len(f)

    def compute(self, seed: int = 0) -> dict:
        n_real, n_fake = self.n[True], self.n[False]
        if min(n_real, n_fake) < 2:
            raise T2IError(f"FID/KID need at least 2 images on each side, got {n_real} real and {n_fake} compared")
        fid = float(self.fid.compute())
        subset = min(self.kid_subset_size, n_real, n_fake)
        self.kid.subset_size = subset
        kid_mean, kid_std = kid_compute(self.kid, seed)
        return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std, "n_real": n_real, "n_fake": n_fake,
                "kid_subset_size": subset, "kid_subsets": self.kid_subsets}


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> dict:
    """torchmetrics ``InceptionScore`` over precomputed unbiased logits ``[N, C]``: mean and std over
    ``splits`` (torchmetrics shuffles the samples with torch's RNG, seeded here; its std is the
    unbiased one, ddof=1, where torch-fidelity reports ddof=0)."""
    from torchmetrics.image.inception import InceptionScore

    if len(logits) < splits:
        raise T2IError(f"IS with {splits} splits needs at least {splits} images, got {len(logits)}")
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        m = InceptionScore(feature=PrecomputedFeatures(logits.shape[1]), splits=splits)
    m.update(logits.double().cpu())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = m.compute()
    return {"mean": float(mean), "std": float(std), "splits": splits, "n": int(len(logits))}


class FeatureDistances:
    """FID-SF and KID-SF between a reference set and a compared set of images, fed in batches.

        fd = FeatureDistances(extractor)
        fd.update(real_batch, real=True); fd.update(fake_batch, real=False)
        fd.compute(seed=0)  # {"fid", "kid_mean", "kid_std", "n_real", "n_fake", "kid_subset_size", ...}

    ``update_features`` takes features already computed by ``extractor`` (e.g. cached).
    """

    def __init__(self, extractor: EvaluatorFeatures, kid_subset_size: int = 1000, kid_subsets: int = 100):
        self.extractor = extractor
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        dev = next(extractor.evaluator.parameters()).device
        self.stats = FeatureStats(extractor.num_features, kid_subset_size, kid_subsets, device=dev)
        self.n = self.stats.n

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        dev = next(self.extractor.evaluator.parameters()).device
        self.stats.update(self.extractor(images.to(dev, torch.float32)), real=real)

    def update_features(self, feats: torch.Tensor, real: bool) -> None:
        self.stats.update(feats, real=real)

    def compute(self, seed: int = 0) -> dict:
        out = self.stats.compute(seed)
        self.extractor.clear()
        return out


# ----------------------------------------------------------------------------- diversity
def pairwise_diversity(feats: torch.Tensor, groups: int) -> dict:
    """Mean pairwise distance between features of images of the same caption (different noise).

    feats: ``[groups * k, D]``, caption-major (k images per caption, k >= 2). Per caption: the
    mean Euclidean distance over its k(k-1)/2 pairs; returned: mean and std over captions.
    A collapsed generator (same image whatever the noise) scores 0.
    """
    if groups < 1 or len(feats) % groups or len(feats) // groups < 2:
        raise T2IError(f"diversity needs >= 2 images for each of {groups} captions, got {len(feats)} images")
    k = len(feats) // groups
    f = feats.double().reshape(groups, k, -1)
    d = torch.cdist(f, f)  # (G, k, k)
    iu = torch.triu_indices(k, k, offset=1)
    per = d[:, iu[0], iu[1]].mean(dim=1)  # (G,)
    return {"mean": float(per.mean()), "std": float(per.std()) if groups > 1 else 0.0,
            "captions": int(groups), "images_per_caption": int(k)}
