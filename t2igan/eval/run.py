"""Evaluate a text-to-image pipeline on a labelled dataset (SynthFlowers).

For each split (``test``, ``novel``): attribute accuracy of generated images on the
attributes their captions name, FID-SF and KID-SF (torchmetrics FID/KID in the attribute
evaluator's feature space), each beside the same measurement on real images (the
ceiling). The protocol, sample counts and the feature extractor are written into the
result.

    res = evaluate_run("runs/dfgan_synth64", "runs/evaluator_synth64")
    print(format_table(res))
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.eval.evaluator import TRAIN_HINT, AttributeEvaluator, weights_digest
from t2igan.eval.metrics import EvaluatorFeatures, FeatureDistances, attribute_accuracy

RESIZE_NOTE = ("real images: decoded from disk to the evaluator's image_size (centre square crop, PIL Lanczos, "
               "uint8); generated images: float in [0, 1] (clamped), resized inside the evaluator to its image_size "
               "with torch bilinear interpolation, antialias=True, when their side differs")


def _resolve_device(device) -> torch.device:
    from t2igan.train.trainer import pick_device

    return pick_device("auto" if device is None else str(device))


def load_evaluator(evaluator, device=None) -> AttributeEvaluator:
    """An AttributeEvaluator instance, or a directory to load one from."""
    if isinstance(evaluator, AttributeEvaluator):
        return evaluator.to(device) if device is not None else evaluator
    if isinstance(evaluator, (str, os.PathLike)):
        if not Path(evaluator).is_dir():
            raise T2IError(f"evaluator directory not found: {evaluator} ({TRAIN_HINT})")
        return AttributeEvaluator.from_pretrained(evaluator, device=device or "cpu")
    raise T2IError(f"evaluator must be an AttributeEvaluator or a directory, got {type(evaluator).__name__}")


def _labelled(root, split: str, evaluator: AttributeEvaluator):
    from t2igan.data.folder import load_folder

    ds = load_folder(root, split)
    if ds.attributes is None:
        raise T2IError(f"dataset {root} (split '{split}') has no attribute labels (attributes.jsonl); "
                       "attribute accuracy needs a labelled dataset such as SynthFlowers (`t2igan data synth`)")
    if len(ds) == 0:
        raise T2IError(f"dataset {root}: split '{split}' is empty")
    ev_values = evaluator.attribute_values
    ds_values = ds.attribute_values or {}
    for k, vals in ds_values.items():
        if k in ev_values and sorted(vals) != sorted(ev_values[k]):
            raise T2IError(f"dataset {root} attribute '{k}' has values {vals}, the evaluator was trained on "
                           f"{ev_values[k]}: train an evaluator on this dataset ({TRAIN_HINT})")
    named = ds.named if ds.named is not None else [[sorted(a) for _ in c] for a, c in zip(ds.attributes, ds.captions)]
    for i, nm in enumerate(named):
        for per_caption in nm:
            for k in per_caption:
                if k not in ev_values:
                    raise T2IError(f"dataset {root} image '{ds.ids[i]}': captions name attribute '{k}', "
                                   f"which the evaluator does not predict (it has: {', '.join(ev_values)})")
    return ds, named


@torch.no_grad()
def _real_pass(evaluator, extractor, images_u8: torch.Tensor, batch_size: int, sinks: list, dev) -> dict[str, torch.Tensor]:
    """Predictions for uint8 images [N, 3, S, S]; every batch also goes into each FeatureDistances in ``sinks``
    as (fd, real_flag)."""
    preds: dict[str, list] = {k: [] for k in evaluator.attribute_values}
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i:i + batch_size].to(dev).float().div_(255.0)
        f = extractor(x)
        for k, lg in evaluator.classify(f).items():
            preds[k].append(lg.argmax(1).cpu())
        for fd, real in sinks:
            fd.update(x, real=real)
    return {k: torch.cat(v) for k, v in preds.items()}


def _u8(ds, size: int) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(ds.images_uint8(size))).permute(0, 3, 1, 2).contiguous()


def evaluate_pipeline(pipe, data_root, evaluator, splits=("test", "novel"), n_samples: int = 5000, batch_size: int = 100,
                      seed: int = 0, device=None, progress: bool = True) -> dict:
    """Score ``pipe`` (anything with ``generate(captions, seed, n=1) -> float [B, 3, H, W] in [0, 1]``).

    evaluator: an AttributeEvaluator or its directory; device: where the evaluator runs
    (None: where it already is). Returns a JSON-able dict (see ``protocol`` in it).
    """
    from tqdm import tqdm

    if isinstance(splits, str):
        splits = (splits,)
    if n_samples < 2 or batch_size < 1:
        raise T2IError(f"n_samples must be >= 2 and batch_size >= 1, got {n_samples} and {batch_size}")
    evaluator = load_evaluator(evaluator, None if device is None else _resolve_device(device)).eval()
    dev = next(evaluator.parameters()).device
    extractor = EvaluatorFeatures(evaluator)
    size = evaluator.image_size
    values = evaluator.attribute_values
    result = {
        "protocol": {
            "samples": "split S with L images: N = min(n_samples, 10 * L); sample k (0..N-1) is image k % L with its "
                       "caption number (k // L) % (captions of that image); one generated image per caption",
            "seeds": f"samples are generated in batches of {batch_size} in order k; batch b (samples "
                     f"b*{batch_size}..) is pipe.generate(captions, seed={seed} + b, n=1)",
            "attribute_accuracy": "evaluator argmax on each attribute the sample's caption names, per attribute over "
                                  "the samples naming it; all_named = fraction of samples (naming >= 1 attribute) with "
                                  "every named attribute right",
            "real_ceiling": "the same N (image, caption) samples scored on the real image of each caption",
            "fid_kid": "torchmetrics FrechetInceptionDistance / KernelInceptionDistance with feature = the evaluator's "
                       "penultimate features (custom extractor, float [0, 1] input): N generated images vs all L real "
                       "images of split S; KID: polynomial kernel (degree 3), subsets of min(1000, N, L), 100 subsets "
                       f"drawn with torch seed {seed}",
            "fid_kid_ceiling": f"min(N, #train) real train images (a fixed random subset, torch seed {seed}) vs all L "
                               "real images of split S",
            "resize": RESIZE_NOTE,
            "n_samples": n_samples, "batch_size": batch_size, "seed": seed,
        },
        "feature_extractor": {
            "name": "t2igan AttributeEvaluator (penultimate features)",
            "dir": evaluator.source_dir, "weights_sha256": weights_digest(evaluator),
            "image_size": size, "feature_dim": evaluator.feature_dim, "width": evaluator.width,
        },
        "data_root": str(data_root),
        "generated_image_size": None,
        "splits": {},
    }
    train_u8 = None
    for s in splits:
        ds, named_all = _labelled(data_root, s, evaluator)
        L = len(ds)
        N = min(int(n_samples), 10 * L)
        img_idx = [k % L for k in range(N)]
        cap_idx = [(k // L) % len(ds.captions[k % L]) for k in range(N)]
        captions = [ds.captions[i][c] for i, c in zip(img_idx, cap_idx)]
        targets = [ds.attributes[i] for i in img_idx]
        named = [list(named_all[i][c]) for i, c in zip(img_idx, cap_idx)]

        gen_fd = FeatureDistances(extractor)
        ceil_fd = FeatureDistances(extractor)
        real_u8 = _u8(ds, size)
        real_pred_img = _real_pass(evaluator, extractor, real_u8, batch_size, [(gen_fd, True), (ceil_fd, True)], dev)
        idx = torch.tensor(img_idx, dtype=torch.long)
        real_pred = {k: v[idx] for k, v in real_pred_img.items()}

        gen_pred: dict[str, list] = {k: [] for k in values}
        starts = range(0, N, batch_size)
        bar = tqdm(starts, desc=f"eval {s}", unit="batch", disable=not progress, dynamic_ncols=True)
        for b, start in enumerate(bar):
            caps = captions[start:start + batch_size]
            imgs = pipe.generate(caps, seed=seed + b, n=1)
            imgs = _check_generated(imgs, len(caps))
            if result["generated_image_size"] is None:
                result["generated_image_size"] = [int(imgs.shape[-2]), int(imgs.shape[-1])]
            with torch.no_grad():
                x = imgs.to(dev)
                f = extractor(x)
                for k, lg in evaluator.classify(f).items():
                    gen_pred[k].append(lg.argmax(1).cpu())
                gen_fd.update(x, real=False)
        bar.close()
        gen_pred_t = {k: torch.cat(v) for k, v in gen_pred.items()}

        if train_u8 is None:
            from t2igan.data.folder import load_folder

            train_u8 = _u8(load_folder(data_root, "train"), size)
        g = torch.Generator().manual_seed(seed)
        ref = torch.randperm(len(train_u8), generator=g)[:N]
        ref, _ = ref.sort()
        _real_pass(evaluator, extractor, train_u8[ref], batch_size, [(ceil_fd, False)], dev)

        gen_dist = gen_fd.compute(seed)
        ceil_dist = ceil_fd.compute(seed)
        result["splits"][s] = {
            "n_images": L, "n_samples": N, "n_train_reference": int(len(ref)),
            "generated": {
                "attributes": attribute_accuracy(gen_pred_t, targets, named, values),
                "fid_sf": gen_dist["fid"],
                "kid_sf": {"mean": gen_dist["kid_mean"], "std": gen_dist["kid_std"],
                           "subset_size": gen_dist["kid_subset_size"], "subsets": gen_dist["kid_subsets"]},
                "n_compared": gen_dist["n_fake"], "n_reference": gen_dist["n_real"],
            },
            "real": {
                "attributes": attribute_accuracy(real_pred, targets, named, values),
                "fid_sf": ceil_dist["fid"],
                "kid_sf": {"mean": ceil_dist["kid_mean"], "std": ceil_dist["kid_std"],
                           "subset_size": ceil_dist["kid_subset_size"], "subsets": ceil_dist["kid_subsets"]},
                "n_compared": ceil_dist["n_fake"], "n_reference": ceil_dist["n_real"],
            },
        }
    return result


def _check_generated(imgs, n: int) -> torch.Tensor:
    if not isinstance(imgs, torch.Tensor):
        raise T2IError(f"pipeline.generate must return a tensor [B, 3, H, W], got {type(imgs).__name__}")
    if imgs.dim() != 4 or imgs.shape[0] != n or imgs.shape[1] != 3:
        raise T2IError(f"pipeline.generate returned shape {tuple(imgs.shape)} for {n} captions, expected [{n}, 3, H, W]")
    if not imgs.is_floating_point():
        raise T2IError(f"pipeline.generate returned dtype {imgs.dtype}, expected float images in [0, 1]")
    imgs = imgs.float()
    if not torch.isfinite(imgs).all():
        raise T2IError("pipeline.generate returned non-finite pixel values (NaN/inf)")
    return imgs.clamp(0.0, 1.0)


def evaluate_run(run_dir, evaluator_dir, n_samples: int = 5000, splits=("test", "novel"), seed: int = 0,
                 batch_size: int = 100, device="auto", out=None, data_root=None, progress: bool = True) -> dict:
    """Evaluate the pipeline of a training run; writes ``run_dir/eval/metrics.json`` (or ``out``) atomically."""
    from t2igan.config import load_config

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise T2IError(f"run folder not found: {run_dir}")
    if data_root is not None:  # also lets a bare pipeline folder (e.g. a snapshot) be scored
        root = Path(data_root)
    elif not cfg_path.is_file():
        raise T2IError(f"{run_dir} has no config.yaml: not a t2igan training run folder (pass --data-root "
                       "to score a pipeline folder)")
    else:
        data = getattr(load_config(cfg_path), "data", None)
        if data is None:
            raise T2IError(f"{cfg_path} has no data section; pass data_root")
        root = Path(data.root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root} (from {'data_root' if data_root is not None else cfg_path}; "
                       "run from the folder it is relative to, or pass data_root)")
    if not Path(evaluator_dir).is_dir():
        raise T2IError(f"evaluator directory not found: {evaluator_dir} ({TRAIN_HINT})")
    dev = _resolve_device(device)
    evaluator = AttributeEvaluator.from_pretrained(evaluator_dir, device=dev)
    from t2igan.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(run_dir, device=dev)
    res = evaluate_pipeline(pipe, root, evaluator, splits=splits, n_samples=n_samples, batch_size=batch_size,
                            seed=seed, device=dev, progress=progress)
    res["run_dir"] = str(run_dir)
    out_path = Path(out) if out is not None else run_dir / "eval" / "metrics.json"
    res["output"] = str(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return res


def _pct(entry) -> str:
    acc = entry.get("accuracy") if isinstance(entry, dict) else None
    return "-" if acc is None else f"{100 * acc:.1f}%"


def format_table(result: dict) -> str:
    """Text table: rows = attributes, all_named, FID-SF, KID-SF; columns per split = generated / real ceiling."""
    splits = list(result["splits"])
    attrs: list[str] = []
    for s in splits:
        for k in result["splits"][s]["generated"]["attributes"]:
            if k != "all_named" and k not in attrs:
                attrs.append(k)
    cw = 11
    head1 = f"{'':<16}" + "".join(f"{s:^{2 * cw}}" for s in splits)
    head2 = f"{'metric':<16}" + "".join(f"{'generated':>{cw}}{'real':>{cw}}" for _ in splits)
    lines = [head1, head2]
    for k in attrs + ["all_named"]:
        row = f"{k:<16}"
        for s in splits:
            sp = result["splits"][s]
            row += f"{_pct(sp['generated']['attributes'].get(k)):>{cw}}{_pct(sp['real']['attributes'].get(k)):>{cw}}"
        lines.append(row)
    row_f, row_k = f"{'FID-SF':<16}", f"{'KID-SF (x1e3)':<16}"
    for s in splits:
        sp = result["splits"][s]
        row_f += f"{sp['generated']['fid_sf']:>{cw}.3f}{sp['real']['fid_sf']:>{cw}.3f}"
        row_k += f"{1e3 * sp['generated']['kid_sf']['mean']:>{cw}.3f}{1e3 * sp['real']['kid_sf']['mean']:>{cw}.3f}"
    lines += [row_f, row_k]
    counts = "; ".join(f"{s}: {result['splits'][s]['n_samples']} samples, {result['splits'][s]['n_images']} real images, "
                       f"{result['splits'][s]['n_train_reference']} train reference" for s in splits)
    fe = result.get("feature_extractor", {})
    lines.append(f"({counts}; 'real' = same captions on real images / real train vs real split; "
                 f"features: {fe.get('dir')} sha256 {str(fe.get('weights_sha256'))[:12]})")
    return "\n".join(lines)
