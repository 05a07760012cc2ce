"""``t2igan eval RUN --protocol NAME``: the sample counts and FID backbone of a paper's evaluation.

A preset sets ``--n-samples``, ``--fid-backbone`` and the splits; options given explicitly on
the command line win and are recorded as overrides. The result's ``protocol.preset`` says what
the preset asked for, what was run, and where this evaluator's protocol differs from the paper's.

The sampling rule is always t2igan's (``protocol.samples`` in the result): split S with L images
gives N = min(n_samples, 10 L) samples, sample k is image k % L with its caption number
(k // L) % (captions of that image), one image per caption. With 10 captions per image
(CUB, Oxford-102) and n_samples >= 10 L this is "every test caption once": DF-GAN's 10 x 2,933
= 29,330 CUB samples.
"""
from __future__ import annotations

from t2igan import T2IError

PRESETS: dict[str, dict] = {
    "dfgan-cub": {
        "paper": "DF-GAN (Tao et al., CVPR 2022) / GALIP, CUB-200-2011",
        "n_samples": 30000, "fid_backbone": "torchvision-inception", "splits": "test",
        "paper_protocol": "10 images per test caption set (DF-GAN samples 10 rounds over the 2,933 test images, one "
                          "caption each, = 29,330 images); FID against the test-set statistics; torchvision ImageNet "
                          "Inception (pytorch-fid InceptionV3([3]) of that time); truncation as the run's config",
        "differences": "one image per (image, caption) pair over the 10 captions of each test image, where DF-GAN "
                       "draws a random caption per image in each round",
    },
    "dfgan-coco": {
        "paper": "DF-GAN / GALIP, COCO-2014",
        "n_samples": 30000, "fid_backbone": "torchvision-inception", "splits": "test",
        "paper_protocol": "30,000 images from captions of the COCO val2014 split vs its statistics; torchvision "
                          "ImageNet Inception",
        "differences": "the first 30,000 samples of t2igan's rule (image k, caption 0 while k < L)",
    },
    "coco-30k": {
        "paper": "COCO 30k FID (AttnGAN / DM-GAN / XMC-GAN convention, TF Inception)",
        "n_samples": 30000, "fid_backbone": "tf-inception", "splits": "test",
        "paper_protocol": "30,000 images from 30,000 val2014 captions vs the val images, TF FID Inception",
        "differences": "reference = all real images of the split (not a 30k subset)",
    },
    "lafite-fid50k": {
        "paper": "LAFITE (Zhou et al., CVPR 2022), StyleGAN2-ADA metrics fid50k",
        "n_samples": 50000, "fid_backbone": "tf-inception", "splits": "test",
        "paper_protocol": "50,000 generated images vs the real set, TF FID Inception (NVIDIA's TorchScript port)",
        "differences": "N is capped at 10 x (images of the split); the reference is the split's real images",
    },
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise T2IError(f"--protocol must be one of {', '.join(PRESETS)}, got {name!r}")
    return dict(PRESETS[name], name=name)


def apply(name: str | None, n_samples: int | None, fid_backbone: str | None, splits: str | None) -> tuple[int, str, str | None, dict | None]:
    """(n_samples, fid_backbone, splits, record) after applying preset ``name`` to the command-line values
    (None = not given on the command line). Without a preset: the defaults 5000 / tf-inception."""
    if name is None:
        return (5000 if n_samples is None else n_samples), (fid_backbone or "tf-inception"), splits, None
    p = preset(name)
    over = {k: v for k, v in (("n_samples", n_samples), ("fid_backbone", fid_backbone), ("splits", splits))
            if v is not None and v != p[k]}
    rec = dict(p, overridden=over)
    return (p["n_samples"] if n_samples is None else n_samples, fid_backbone or p["fid_backbone"],
            splits if splits is not None else p["splits"], rec)


def record_run(rec: dict | None, res: dict) -> dict | None:
    """The preset record completed with what was run (samples per split, backbone)."""
    if rec is None:
        return None
    rec = dict(rec)
    rec["ran"] = {"fid_backbone": (res.get("inception") or {}).get("backbone"),
                  "samples": {s: sp.get("n_samples") for s, sp in res.get("splits", {}).items()},
                  "real_images": {s: sp.get("n_images") for s, sp in res.get("splits", {}).items()}}
    short = [s for s, n in rec["ran"]["samples"].items() if n is not None and n < rec["n_samples"]]
    if short:
        rec["ran"]["note"] = (f"split(s) {', '.join(short)} gave fewer than the preset's {rec['n_samples']} samples "
                              "(N = min(n_samples, 10 x images of the split))")
    return rec
