"""Evaluate a text-to-image pipeline on a labelled dataset (SynthFlowers).

For each split (``test``, ``novel``): attribute accuracy of generated images on the
attributes their captions name, FID-SF and KID-SF (torchmetrics FID/KID in the attribute
evaluator's feature space), each beside the same measurement on real images (the
ceiling). With DAMSM encoders: R-precision; with the FID Inception: FID/KID/IS; with a
local CLIP folder (``clip_weights``): CLIP score and CLIP R-precision (``eval/clip.py``).
The protocol, sample counts and the feature extractors are written into the result.

    res = evaluate_run("runs/dfgan_synth64", "runs/evaluator_synth64")
    print(format_table(res))
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.eval.evaluator import TRAIN_HINT, AttributeEvaluator, weights_digest
from t2igan.eval.metrics import EvaluatorFeatures, FeatureDistances, attribute_accuracy
from t2igan.eval.cmmd import PROTOCOL as CMMD_PROTOCOL
from t2igan.eval.retrieval import PROTOCOL as _RETRIEVAL_PROTOCOL
from t2igan.eval.retrieval import retrieval_hits
from t2igan.eval.table import format_table  # noqa: F401 - re-exported: t2igan.eval.run.format_table

RESIZE_NOTE = ("real images: decoded from disk to the evaluator's image_size (centre square crop, PIL Lanczos, "
               "uint8); generated images: float in [0, 1] (clamped), resized inside the evaluator to its image_size "
               "with torch bilinear interpolation, antialias=True, when their side differs")


def _resolve_device(device) -> torch.device:
    from t2igan.core.device import pick_device

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
def _real_pass(evaluator, extractor, images_u8: torch.Tensor, batch_size: int, sinks: list, dev,
               feats: list | None = None) -> dict[str, torch.Tensor]:
    """Predictions for uint8 images [N, 3, S, S]; every batch also goes into each FeatureDistances in ``sinks``
    as (fd, real_flag), and its features (on the CPU) into ``feats`` when given."""
    preds: dict[str, list] = {k: [] for k in evaluator.attribute_values}
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i:i + batch_size].to(dev).float().div_(255.0)
        f = extractor(x)
        if feats is not None:
            feats.append(f.cpu())
        for k, lg in evaluator.classify(f).items():
            preds[k].append(lg.argmax(1).cpu())
        for fd, real in sinks:
            fd.update(x, real=real)
    return {k: torch.cat(v) for k, v in preds.items()}


def _u8(ds, size: int) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(ds.images_uint8(size))).permute(0, 3, 1, 2).contiguous()


def _empty_captions_as_padding(fn):
    """Run ``fn(pipe, ...)`` with ``pipe`` generating a caption that keeps no known word from the
    padding token (``EmptyCaptionsAsPadding``), restoring the pipeline's policy afterwards."""
    @functools.wraps(fn)
    def wrapped(pipe, *args, **kwargs):
        with EmptyCaptionsAsPadding(pipe):
            return fn(pipe, *args, **kwargs)
    return wrapped


@_empty_captions_as_padding
def evaluate_pipeline(pipe, data_root, evaluator=None, splits=("test", "novel"), n_samples: int = 5000,
                      batch_size: int = 100, seed: int = 0, device=None, progress: bool = True, inception=None,
                      damsm=None, diversity_captions: int = 0, diversity_k: int = 8, is_splits: int = 10,
                      rp_bins: int = 10, cache_dir=None, use_cache: bool = True, caption_sets=(), clip=None,
                      per_image: dict | None = None, domain=None, face=None) -> dict:
    """Score ``pipe`` (anything with ``generate(captions, seed, n=1) -> float [B, 3, H, W] in [0, 1]``).

    caption_sets: ``CaptionSet``s (``t2igan.data.caption_set``) scored by attribute accuracy
    only, each as an entry of ``splits`` under its name (needs the evaluator).

    evaluator: an AttributeEvaluator or its directory (attribute accuracy, FID-SF/KID-SF,
    diversity), or None; inception: an ``InceptionFeatures`` (FID/KID/IS) or None; damsm: a
    ``DAMSMScorer`` (R-precision) or None; clip: a ``CLIPScorer`` (CLIP score, CLIP R-precision)
    or None; per_image: a dict that receives, per split, the generated images' captions, CLIP scores
    and CMMD witness values (with clip); domain: a ``DomainInception`` (accuracy / IS / FID with the
    domain-tuned Inception, ``eval/domain_inception.py``) or None; face: a face embedder
    (``eval/face.py``: FSD / FSS of each generated image against the real image its caption
    describes) or None. device: where the evaluator runs (None: where it
    already is). Returns a JSON-able dict (see ``protocol`` in it).
    """
    from tqdm import tqdm

    if isinstance(splits, str):
        splits = (splits,)
    if n_samples < 2 or batch_size < 1:
        raise T2IError(f"n_samples must be >= 2 and batch_size >= 1, got {n_samples} and {batch_size}")
    if evaluator is None and inception is None and damsm is None and clip is None and domain is None and face is None:
        raise T2IError("nothing to measure: give an attribute evaluator, Inception weights, DAMSM encoders, CLIP "
                       "weights or a domain Inception")
    caption_sets = list(caption_sets)
    if caption_sets and evaluator is None:
        raise T2IError("caption sets are scored by attribute accuracy: give an attribute evaluator")
    for cs in caption_sets:
        if cs.name in splits or [c.name for c in caption_sets].count(cs.name) > 1:
            raise T2IError(f"caption set '{cs.name}' ({cs.path}): its name is also a split or another caption set")
    if evaluator is not None:
        evaluator = load_evaluator(evaluator, None if device is None else _resolve_device(device)).eval()
        dev = next(evaluator.parameters()).device
        extractor = EvaluatorFeatures(evaluator)
        size = evaluator.image_size
        values = evaluator.attribute_values
    gen_size = int(getattr(pipe, "image_size", 0) or (evaluator.image_size if evaluator is not None else 64))
    result = {
        "protocol": {
            "samples": "split S with L images: N = min(n_samples, 10 * L); sample k (0..N-1) is image k % L with its "
                       "caption number (k // L) % (captions of that image); one generated image per caption; a "
                       "word-vocabulary (DAMSM) text encoder drops unknown words and generates a caption left with "
                       "no known word from the padding token alone ('vocabulary' counts them)",
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
            "inception": "FID / KID: 2048-d pool features of the FID Inception-v3, N generated vs all L real images of "
                         f"split S (real images decoded at the generated image size, centre square crop, PIL Lanczos); "
                         f"IS: N generated images, {is_splits} splits; ceiling: the same train subset as FID-SF",
            "r_precision": f"DAMSM global image code vs sentence codes of the true caption + 99 random captions of other "
                           f"images of split S (text differs from the true caption; drawn with seed {seed}); hit = "
                           f"true caption ranks first by cosine; mean +- std over {rp_bins} contiguous bins of the N "
                           "samples; ceiling: the real image of each sample; a caption with no word in the DAMSM "
                           "vocabulary is encoded from the padding token alone (id 0, length 1)",
            "clip_score": "torchmetrics CLIPScore on the N (generated image, its caption) pairs = max(100 * mean cosine "
                          "of CLIP's projected image and text embeddings, 0) (the clamp is on the mean); generated "
                          "images rounded to uint8, then CLIP's own processor (see clip.preprocess); ceiling: the "
                          "real image of each sample (decoded at the generated image size, centre square crop, PIL "
                          "Lanczos, uint8) with the same caption",
            "clip_r_precision": f"as r_precision (the same true + 99 candidate captions, seed {seed}; {rp_bins} bins) "
                                "with CLIP's projected image embedding vs the projected text embeddings of the "
                                "captions (tokenised padded to the batch's longest, truncated to the model's context)",
            "diversity": f"first {diversity_captions} sample captions x {diversity_k} images each "
                         f"(pipe.generate(captions, seed={seed} + 1000003, n={diversity_k})): per caption the mean "
                         "pairwise Euclidean distance of the evaluator's features, mean +- std over captions; "
                         f"real_random: the same on groups of {diversity_k} random real images of split S (its scale)",
            "retrieval": RETRIEVAL_PROTOCOL,
            "cmmd": CMMD_PROTOCOL,
            "resize": RESIZE_NOTE,
            "caption_sets": CAPTION_SET_PROTOCOL.format(batch_size=batch_size, seed=seed),
            "n_samples": n_samples, "batch_size": batch_size, "seed": seed,
        },
        "feature_extractor": None,
        "data_root": str(data_root),
        "generated_image_size": None,
        "splits": {},
    }
    if evaluator is not None:
        result["feature_extractor"] = {
            "name": "t2igan AttributeEvaluator (penultimate features)",
            "dir": evaluator.source_dir, "weights_sha256": weights_digest(evaluator),
            "image_size": size, "feature_dim": evaluator.feature_dim, "width": evaluator.width,
        }
    result["inception"] = inception.describe() if inception is not None else None
    result["inception_domain"] = domain.describe() if domain is not None else None
    if inception is not None:
        result["protocol"]["inception"] = result["protocol"]["inception"].replace(
            "the FID Inception-v3", f"the {inception.backbone} backbone ({inception.describe()['resize']})")
    result["damsm"] = damsm.describe() if damsm is not None else None
    result["clip"] = clip.describe() if clip is not None else None
    train_u8 = train_ds = None
    from t2igan.data.folder import load_folder

    for s in splits:
        if evaluator is not None:
            ds, named_all = _labelled(data_root, s, evaluator)
        else:
            ds = load_folder(data_root, s)
            if len(ds) == 0:
                raise T2IError(f"dataset {data_root}: split '{s}' is empty")
            named_all = None
        L = len(ds)
        N = min(int(n_samples), 10 * L)
        img_idx = [k % L for k in range(N)]
        cap_idx = [(k // L) % len(ds.captions[k % L]) for k in range(N)]
        captions = [ds.captions[i][c] for i, c in zip(img_idx, cap_idx)]
        entry: dict = {"n_images": L, "n_samples": N, "generated": {}, "real": {}}
        result["splits"][s] = entry

        retrieval = False
        if evaluator is not None:
            targets = [ds.attributes[i] for i in img_idx]
            named = [list(named_all[i][c]) for i, c in zip(img_idx, cap_idx)]
            # captions that name no attribute (emoji) describe one image: nearest-neighbour retrieval instead
            retrieval = not any(nm for per_image in named_all for nm in per_image)
            if retrieval:
                _check_retrieval_evaluator(data_root, ds, evaluator)
            real_feats: list | None = [] if retrieval else None
            gen_feats: list[torch.Tensor] = []
            gen_fd = FeatureDistances(extractor)
            ceil_fd = FeatureDistances(extractor)
            real_u8 = _u8(ds, size)
            real_pred_img = _real_pass(evaluator, extractor, real_u8, batch_size, [(gen_fd, True), (ceil_fd, True)], dev,
                                       feats=real_feats)
            idx = torch.tensor(img_idx, dtype=torch.long)
            real_pred = {k: v[idx] for k, v in real_pred_img.items()}
            gen_pred: dict[str, list] = {k: [] for k in values}
        gen_inc: dict[str, list] = {}
        gen_dom: dict[str, list] = {}
        gen_codes: list[torch.Tensor] = []
        gen_face: list[torch.Tensor] = []
        gen_clip = clip.pairs() if clip is not None else None
        starts = range(0, N, batch_size)
        bar = tqdm(starts, desc=f"eval {s}", unit="batch", disable=not progress, dynamic_ncols=True)
        for b, start in enumerate(bar):
            caps = captions[start:start + batch_size]
            imgs = pipe.generate(caps, seed=seed + b, n=1)
            imgs = _check_generated(imgs, len(caps))
            if result["generated_image_size"] is None:
                result["generated_image_size"] = [int(imgs.shape[-2]), int(imgs.shape[-1])]
                gen_size = int(imgs.shape[-1])
            with torch.no_grad():
                if evaluator is not None:
                    x = imgs.to(dev)
                    f = extractor(x)
                    for k, lg in evaluator.classify(f).items():
                        gen_pred[k].append(lg.argmax(1).cpu())
                    if retrieval:
                        gen_feats.append(f.cpu())
                    gen_fd.update(x, real=False)
                if inception is not None:
                    for k, v in inception.features(imgs).items():
                        gen_inc.setdefault(k, []).append(v.cpu())
                if domain is not None:
                    for k, v in domain.features(imgs).items():
                        gen_dom.setdefault(k, []).append(v)
                if damsm is not None:
                    gen_codes.append(damsm.image_codes(imgs))
                if clip is not None:
                    gen_clip.update(imgs, caps)
                if face is not None:
                    gen_face.append((imgs.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu())
        bar.close()

        if evaluator is not None or inception is not None or domain is not None:
            if train_ds is None:
                train_ds = load_folder(data_root, "train")
            g = torch.Generator().manual_seed(seed)
            ref = torch.randperm(len(train_ds), generator=g)[:N]
            ref, _ = ref.sort()
            entry["n_train_reference"] = int(len(ref))
        if evaluator is not None:
            if train_u8 is None:
                train_u8 = _u8(train_ds, size)
            gen_pred_t = {k: torch.cat(v) for k, v in gen_pred.items()}
            _real_pass(evaluator, extractor, train_u8[ref], batch_size, [(ceil_fd, False)], dev)
            gen_dist = gen_fd.compute(seed)
            ceil_dist = ceil_fd.compute(seed)
            for side, pred, dist in (("generated", gen_pred_t, gen_dist), ("real", real_pred, ceil_dist)):
                if not retrieval:
                    entry[side]["attributes"] = attribute_accuracy(pred, targets, named, values)
                entry[side].update({
                    "fid_sf": dist["fid"],
                    "kid_sf": {"mean": dist["kid_mean"], "std": dist["kid_std"],
                               "subset_size": dist["kid_subset_size"], "subsets": dist["kid_subsets"]},
                    "n_compared": dist["n_fake"], "n_reference": dist["n_real"],
                })
        if retrieval:
            entry["attribute_accuracy"] = "skipped: the captions of this split name no attribute"
            entry["generated"]["retrieval"] = _retrieval_split(ds, img_idx, torch.cat(gen_feats), torch.cat(real_feats))
        if inception is not None:
            entry.update(_inception_split(inception, ds, train_ds, ref, gen_inc, gen_size, seed, is_splits,
                                          batch_size, cache_dir, use_cache, progress))
        if domain is not None:
            from t2igan.eval.domain_inception import score_split

            # which samples count for accuracy: those whose caption names the label (SynthFlowers); all of them
            # for class ids and for captions that name no attribute at all (emoji: the caption is the emoji)
            nm = ds.named
            if domain.label == "class_id" or nm is None or not any(n for per in nm for n in per):
                names_label = [True] * N
            else:
                names_label = [domain.label in nm[i][c] for i, c in zip(img_idx, cap_idx)]
            entry["inception_domain"] = score_split(domain, ds, names_label, img_idx,
                                                    {k: torch.cat(v) for k, v in gen_dom.items()}, train_ds, ref,
                                                    gen_size, seed, is_splits)
        if face is not None:
            from t2igan.eval.face import fsd_fss

            # pairs: generated image k and the real image its caption belongs to, at the generated size
            entry["face"] = fsd_fss(torch.cat(gen_face), _u8(ds, gen_size)[torch.tensor(img_idx, dtype=torch.long)],
                                    face, batch_size=batch_size)
        if damsm is not None:
            entry["generated"]["r_precision"], entry["real"]["r_precision"] = _r_precision_split(
                damsm, ds, img_idx, cap_idx, torch.cat(gen_codes), gen_size, seed, rp_bins, batch_size)
        if clip is not None:
            for side, v in _clip_split(clip, ds, img_idx, cap_idx, gen_clip, gen_size, seed, rp_bins, batch_size,
                                       progress).items():
                per = v.pop("_per_image", None)
                if per is not None and per_image is not None:
                    per_image[s] = per
                entry[side].update(v)
        if evaluator is not None and diversity_captions > 0 and diversity_k >= 2:
            entry["generated"]["diversity"], entry["real"]["diversity"] = _diversity_split(
                pipe, extractor, captions[:diversity_captions], real_u8, diversity_k, seed)
        vocab = word_vocabulary(pipe)
        if vocab is not None:
            entry["vocabulary"] = vocabulary_coverage(vocab, captions)
    for cs in caption_sets:
        result["splits"][cs.name] = _caption_set_entry(pipe, cs, evaluator, extractor, data_root, n_samples,
                                                       batch_size, seed, dev, progress)
    return result


RETRIEVAL_PROTOCOL = ("only for splits whose captions name no attribute (emoji; attribute accuracy is then "
                      "skipped): " + _RETRIEVAL_PROTOCOL)


def _check_retrieval_evaluator(root, ds, evaluator) -> None:
    """Retrieval ranks real images in the evaluator's feature space: it must have been trained on this dataset."""
    ds_values = {k: sorted(map(str, v)) for k, v in (ds.attribute_values or {}).items()}
    ev_values = {k: sorted(v) for k, v in evaluator.attribute_values.items()}
    if ds_values != ev_values:
        raise T2IError(f"dataset {root} has attributes {sorted(ds_values) or 'none'} (in dataset.json), the evaluator "
                       f"{evaluator.source_dir or ''} predicts {sorted(ev_values)} with other values: its feature space "
                       "was not trained on this dataset (for emoji: `t2igan train configs/evaluator_emoji.yaml`, then "
                       "--evaluator runs/evaluator_emoji)")


def _retrieval_split(ds, img_idx, gen_feats, real_feats) -> dict:
    """Nearest-neighbour retrieval of each sample's own image among the real images of the split."""
    groups = {k: [a[k] for a in ds.attributes] for k in ds.attribute_values or {}}
    if (ds.meta or {}).get("generator") == "t2igan.data.emoji":
        from t2igan.data.emoji import emoji_base

        groups["base_emoji"] = [emoji_base(i) for i in ds.ids]
    return retrieval_hits(gen_feats, real_feats, torch.tensor(img_idx, dtype=torch.long), ks=(1, 5), groups=groups)


CAPTION_SET_PROTOCOL = (
    "a caption set (JSONL of caption, attribute labels, named attributes, optional image id) with C captions: "
    "N = min(n_samples, C) samples, sample k = record k, one generated image per caption, batch b (samples "
    "b*{batch_size}..) is pipe.generate(captions, seed={seed} + b, n=1); attribute accuracy only, as for the "
    "splits; real: the same records scored on the dataset image of each record's id (absent without ids). "
    "Word-vocabulary text encoders (DAMSM) drop unknown words; a caption left with no known word is generated "
    "from the empty caption (the padding token alone, id 0, length 1) and scored like every other caption; "
    "'vocabulary' counts such captions and 'attributes_known_words_only' repeats the accuracy without them")


def word_vocabulary(pipe):
    """The word Vocabulary a pipeline tokenises with (DAMSM text encoders), or None (e.g. MiniLM, CLIP)."""
    from t2igan.data.text import Vocabulary

    for v in (getattr(pipe, "vocab", None), getattr(getattr(pipe, "text_encoder", None), "vocab", None)):
        if isinstance(v, Vocabulary):
            return v
    return None


def vocabulary_coverage(vocab, captions: list[str]) -> dict:
    """How many captions keep every word / lose some / lose all words under ``vocab``; dropped-word share."""
    from collections import Counter

    some = none = total = dropped = 0
    lost = Counter()
    for c in captions:
        ids, unknown = vocab.encode(c)
        total += len(ids) + len(unknown)
        dropped += len(unknown)
        lost.update(unknown)
        some += bool(unknown)
        none += not ids
    return {"captions": len(captions), "with_unknown_words": some, "no_known_word": none,
            "dropped_word_fraction": dropped / total if total else 0.0, "words": total,
            "most_dropped": [[w, k] for w, k in lost.most_common(10)],
            "empty_caption_policy": "a caption with no known word is generated from the padding token alone"}


class EmptyCaptionsAsPadding:
    """Within the block, the pipeline encodes a caption with no known word as the empty caption."""

    def __init__(self, pipe):
        self.objs = [o for o in (pipe, getattr(pipe, "text_encoder", None)) if hasattr(o, "empty_captions")]

    def __enter__(self):
        self.saved = [o.empty_captions for o in self.objs]
        for o in self.objs:
            o.empty_captions = "pad"

    def __exit__(self, *exc):
        for o, v in zip(self.objs, self.saved):
            o.empty_captions = v


def _caption_set_entry(pipe, cs, evaluator, extractor, data_root, n_samples, batch_size, seed, dev, progress) -> dict:
    from tqdm import tqdm

    from t2igan.data.folder import load_folder, load_image
    from t2igan.eval.metrics import attribute_accuracy

    values = evaluator.attribute_values
    for i, (a, nm) in enumerate(zip(cs.attributes, cs.named)):  # a CaptionSet built in code, not read from a file
        for k in nm:
            if k not in values or a.get(k) not in values[k]:
                raise T2IError(f"caption set {cs.path}, record {i}: named attribute {k}={a.get(k)!r} is not one the "
                               f"evaluator predicts ({', '.join(f'{k2}: {v}' for k2, v in values.items())})")
    N = min(int(n_samples), len(cs))
    caps, targets, named = cs.captions[:N], cs.attributes[:N], cs.named[:N]
    entry: dict = {"kind": "captions", "captions_file": str(cs.path), "n_captions": len(cs), "n_samples": N,
                   "n_images": len(set(cs.ids[:N])) if cs.ids else 0, "generated": {}, "real": {}}
    vocab = word_vocabulary(pipe)
    preds: dict[str, list] = {k: [] for k in values}
    bar = tqdm(range(0, N, batch_size), desc=f"eval {cs.name}", unit="batch", disable=not progress, dynamic_ncols=True)
    with torch.no_grad():
        for b, start in enumerate(bar):
            chunk = caps[start:start + batch_size]
            imgs = _check_generated(pipe.generate(chunk, seed=seed + b, n=1), len(chunk))
            for k, lg in evaluator.classify(extractor(imgs.to(dev))).items():
                preds[k].append(lg.argmax(1).cpu())
    bar.close()
    extractor.clear()
    gen = {k: torch.cat(v) for k, v in preds.items()}
    entry["generated"]["attributes"] = attribute_accuracy(gen, targets, named, values)
    if vocab is not None:
        cov = vocabulary_coverage(vocab, caps)
        entry["vocabulary"] = cov
        if cov["no_known_word"]:
            keep = [i for i, c in enumerate(caps) if vocab.encode(c)[0]]
            idx = torch.tensor(keep, dtype=torch.long)
            entry["generated"]["attributes_known_words_only"] = attribute_accuracy(
                {k: v[idx] for k, v in gen.items()}, [targets[i] for i in keep], [named[i] for i in keep], values)
    if cs.ids:
        ds = load_folder(data_root, "all")
        where = dict(zip(ds.ids, ds.image_paths))
        uniq = list(dict.fromkeys(cs.ids[:N]))
        for i in uniq:
            if i not in where:
                raise T2IError(f"caption set {cs.path}: id '{i}' is not an image of {data_root}")
        import numpy as np

        u8 = torch.from_numpy(np.stack([load_image(where[i], evaluator.image_size) for i in uniq])).permute(0, 3, 1, 2)
        real_img = _real_pass(evaluator, extractor, u8.contiguous(), batch_size, [], dev)
        extractor.clear()
        pos = {i: j for j, i in enumerate(uniq)}
        idx = torch.tensor([pos[i] for i in cs.ids[:N]], dtype=torch.long)
        entry["real"]["attributes"] = attribute_accuracy({k: v[idx] for k, v in real_img.items()}, targets, named, values)
    return entry


def _inception_split(inception, ds, train_ds, ref_idx, gen_inc, gen_size, seed, is_splits, batch_size, cache_dir,
                     use_cache, progress) -> dict:
    """Inception FID/KID/IS of the generated set, and the real train-vs-split ceiling (features cached)."""
    import numpy as np

    from t2igan.eval.images import extractor_key as _extractor_key
    from t2igan.eval.images import inception_features, inception_metrics
    from t2igan.eval.refcache import cached_features, dataset_fingerprint

    def ref_feats(d, idx, what):
        def compute():
            u8 = torch.from_numpy(np.array(d.images_uint8(gen_size))).permute(0, 3, 1, 2)
            if idx is not None:
                u8 = u8[idx]
            return inception_features(inception, u8, batch_size=min(batch_size, 50), progress=progress, desc=what)

        parts = {"kind": "dataset-split", "dataset": dataset_fingerprint(d), "root": str(d.root), "split": d.split,
                 "size": gen_size, "resize": "centre square crop, PIL Lanczos, uint8",
                 "indices": None if idx is None else [int(i) for i in idx],
                 **_extractor_key(inception)}
        return cached_features(parts, compute, cache_dir, use_cache)

    split_f, split_info = ref_feats(ds, None, f"inception {ds.split} (reference)")
    train_f, train_info = ref_feats(train_ds, ref_idx, "inception train (ceiling)")
    gen = {k: torch.cat(v) for k, v in gen_inc.items()}
    g = inception_metrics(split_f, gen, seed, is_splits=is_splits)
    c = inception_metrics(split_f, train_f, seed, is_splits=is_splits)
    return {"inception": {"generated": g, "real": c, "reference_cache": split_info, "ceiling_cache": train_info}}


def _candidates(ds, img_idx, cap_idx, seed):
    """All captions of the split (flat) and, per sample, its caption + 99 mismatched ones ([N, 100] indices)."""
    from t2igan.eval.rprecision import draw_mismatched

    flat, owner, offset = [], [], []
    for i, caps in enumerate(ds.captions):
        offset.append(len(flat))
        flat.extend(caps)
        owner.extend([i] * len(caps))
    true_idx = torch.tensor([offset[i] + c for i, c in zip(img_idx, cap_idx)])
    return flat, draw_mismatched(true_idx, flat, 99, seed, owner)


def _r_precision_split(damsm, ds, img_idx, cap_idx, codes, gen_size, seed, bins, batch_size):
    import numpy as np

    from t2igan.eval.rprecision import r_precision

    flat, cands = _candidates(ds, img_idx, cap_idx, seed)
    sents = damsm.sentence_codes(flat)
    gen = r_precision(codes, cands, sents, bins)
    real_u8 = torch.from_numpy(np.array(ds.images_uint8(gen_size))).permute(0, 3, 1, 2)
    real_codes = torch.cat([damsm.image_codes(real_u8[i:i + batch_size]) for i in range(0, len(real_u8), batch_size)])
    real = r_precision(real_codes[torch.tensor(img_idx)], cands, sents, bins)
    return gen, real


def _clip_split(clip, ds, img_idx, cap_idx, gen_pairs, gen_size, seed, bins, batch_size, progress) -> dict:
    """CLIP score and CLIP R-precision of the generated samples and of the real image of each sample."""
    import numpy as np
    from tqdm import tqdm

    from t2igan.eval.rprecision import r_precision

    flat, cands = _candidates(ds, img_idx, cap_idx, seed)
    captions = [flat[int(t)] for t in cands[:, 0]]
    real_u8 = torch.from_numpy(np.array(ds.images_uint8(gen_size))).permute(0, 3, 1, 2)
    real_pairs = clip.pairs()
    for i in tqdm(range(0, len(img_idx), batch_size), desc=f"clip {ds.split} (real)", unit="batch",
                  disable=not progress, dynamic_ncols=True):
        real_pairs.update(real_u8[torch.tensor(img_idx[i:i + batch_size])], captions[i:i + batch_size])
    texts = clip.text_codes(flat)
    too_long = clip.count_too_long(flat)
    out = {side: {"clip_score": p.score(), "clip_r_precision": r_precision(p.image_codes(), cands, texts, bins),
                  "clip_captions_truncated": too_long}
           for side, p in (("generated", gen_pairs), ("real", real_pairs))}
    from t2igan.eval import cmmd

    first = {}
    for j, i in enumerate(img_idx):  # each real image once: the CMMD reference
        first.setdefault(i, j)
    real_codes = real_pairs.image_codes()[torch.tensor(sorted(first.values()))]
    gen_codes = gen_pairs.image_codes()
    for side, v in cmmd.split_scores(gen_codes, real_codes, seed).items():
        out[side]["cmmd"] = v
    out["generated"]["_per_image"] = {"captions": captions, "clip_score": cmmd.per_image_clip_scores(
        gen_codes, texts[cands[:, 0]]), "cmmd_witness": cmmd.witness(gen_codes, real_codes)}
    return out


def _diversity_split(pipe, extractor, captions, real_u8, k, seed):
    from t2igan.eval.metrics import pairwise_diversity

    with torch.no_grad():
        imgs = _check_generated(pipe.generate(captions, seed=seed + 1000003, n=k), len(captions) * k)
        gen = pairwise_diversity(extractor(imgs), len(captions))
        g = torch.Generator().manual_seed(seed)
        groups = min(len(captions), len(real_u8) // k)
        idx = torch.randperm(len(real_u8), generator=g)[:groups * k]
        real = pairwise_diversity(extractor(real_u8[idx].float() / 255), groups) if groups >= 1 else None
    extractor.clear()
    return gen, real


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


def evaluate_run(run_dir, evaluator_dir=None, n_samples: int = 5000, splits=None, seed: int = 0,
                 batch_size: int = 100, device="auto", out=None, data_root=None, progress: bool = True,
                 inception_weights=None, damsm_dir="auto", diversity_captions: int = 20, diversity_k: int = 8,
                 cache_dir=None, use_cache: bool = True, captions=(), clip_weights=None,
                 fid_backbone: str = "tf-inception", preset: dict | None = None, per_image: bool = False,
                 inception_domain=None, face_metrics=None) -> dict:
    """Evaluate the pipeline of a training run; writes ``run_dir/eval/metrics.json`` (or ``out``) atomically.

    fid_backbone: 'tf-inception' | 'torchvision-inception' (``eval/backbones.py``), the network
    ``inception_weights`` is for; preset: the ``--protocol`` preset (``eval/protocols.py``), written
    into the result; per_image: with CLIP, write each generated image's CLIP score and CMMD witness
    (``eval/per_image_<split>.jsonl``) and the top/bottom grid (``eval/top_bottom_<split>.png``);
    inception_domain: a domain-tuned Inception folder (``t2igan train`` task ``inception_domain``) or None.
    face_metrics: ``dlib`` | ``evaluator`` | ``auto`` (FSD / FSS, ``eval/face.py``) or None.

    evaluator_dir: attribute evaluator (None or a dataset without labels: skipped);
    inception_weights: the FID Inception file (None: ``$T2IGAN_INCEPTION_WEIGHTS`` if set, else
    skipped); damsm_dir: DAMSM run for R-precision ("auto": the run's text encoder when it is a
    DAMSM run with an image encoder; None: skipped); captions: caption-set JSONL files, or bare
    names NAME for ``<data root>/NAME.jsonl`` (e.g. "paraphrase"), scored by attribute accuracy;
    splits: None = "test" and "novel", the latter only when the dataset has it (emoji has none);
    clip_weights: a local Hugging Face CLIP
    folder for CLIP score / CLIP R-precision (None: ``$T2IGAN_CLIP_WEIGHTS`` if set, else skipped;
    "none": skipped).
    """
    from t2igan.config import load_config

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise T2IError(f"run folder not found: {run_dir}")
    cfg = load_config(cfg_path) if cfg_path.is_file() else None
    if data_root is not None:  # also lets a bare pipeline folder (e.g. a snapshot) be scored
        root = Path(data_root)
    elif cfg is None:
        raise T2IError(f"{run_dir} has no config.yaml: not a t2igan training run folder (pass --data-root "
                       "to score a pipeline folder)")
    else:
        data = getattr(cfg, "data", None)
        if data is None:
            raise T2IError(f"{cfg_path} has no data section; pass data_root")
        root = Path(data.root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root} (from {'data_root' if data_root is not None else cfg_path}; "
                       "run from the folder it is relative to, or pass data_root)")
    dev = _resolve_device(device)
    notes = []
    if splits is None:
        splits = default_splits(root, notes)
    evaluator = None
    if captions and evaluator_dir is None:
        raise T2IError("caption sets are scored by attribute accuracy: give an attribute evaluator (--evaluator)")
    if evaluator_dir is not None:
        from t2igan.data.folder import load_folder

        if not splits and captions:  # caption sets carry their own labels
            if not Path(evaluator_dir).is_dir():
                raise T2IError(f"evaluator directory not found: {evaluator_dir} ({TRAIN_HINT})")
            evaluator = AttributeEvaluator.from_pretrained(evaluator_dir, device=dev)
        elif load_folder(root, splits[0] if splits else "test").attributes is None:
            notes.append(f"attribute metrics skipped: {root} has no attribute labels")
        else:
            if not Path(evaluator_dir).is_dir():
                raise T2IError(f"evaluator directory not found: {evaluator_dir} ({TRAIN_HINT})")
            evaluator = AttributeEvaluator.from_pretrained(evaluator_dir, device=dev)
    inception = None
    from t2igan.eval.backbones import backbone_env_var, backbone_requested, load_fid_backbone

    if backbone_requested(fid_backbone, inception_weights):
        inception = load_fid_backbone(fid_backbone, inception_weights, device=dev, cache_dir=cache_dir)
    else:
        notes.append(f"FID/KID/IS (Inception, {fid_backbone} backbone) skipped: no --inception-weights and "
                     f"{backbone_env_var(fid_backbone)} is not set")
    damsm = None
    if damsm_dir == "auto":
        from t2igan.text.spec import damsm_run_with_image_encoder

        damsm_dir = damsm_run_with_image_encoder(getattr(cfg, "text_encoder", None) if cfg is not None else None)
        if damsm_dir is None:
            notes.append("R-precision skipped: the run's text encoder is not a DAMSM run with an image encoder "
                         "(pass --damsm DIR)")
    if damsm_dir is not None:
        from t2igan.eval.rprecision import DAMSMScorer

        damsm = DAMSMScorer.from_pretrained(damsm_dir, device=dev)
    sets = []
    if captions:
        from t2igan.data.caption_set import load_caption_set, resolve_caption_set

        if evaluator is None:
            raise T2IError(f"caption sets need attribute labels the evaluator predicts, and {root} has none")
        sets = [load_caption_set(resolve_caption_set(c, root), evaluator.attribute_values) for c in captions]
    from t2igan.eval.clip import ENV_VAR as CLIP_ENV
    from t2igan.eval.clip import CLIPScorer, clip_path_from_env

    clip = None
    clip_path = clip_path_from_env(clip_weights)
    if clip_path is not None:
        clip = CLIPScorer.from_pretrained(clip_path, device=dev)
    else:
        notes.append(f"CLIP score / CLIP R-precision skipped: no --clip and {CLIP_ENV} is not set")
    from t2igan.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(run_dir, device=dev)
    if per_image and clip is None:
        raise T2IError("--per-image ranks images by CLIP score: give a CLIP folder (--clip DIR)")
    per_image_scores: dict = {}
    domain = None
    if inception_domain is not None:
        from t2igan.eval.domain_inception import DomainInception

        domain = DomainInception.from_pretrained(inception_domain, device=dev)
    face = None
    if face_metrics is not None:
        from t2igan.eval.face import make_face_embedder

        face = make_face_embedder(face_metrics, evaluator)
    res = evaluate_pipeline(pipe, root, evaluator, splits=splits, n_samples=n_samples, batch_size=batch_size,
                            seed=seed, device=dev, progress=progress, inception=inception, damsm=damsm,
                            diversity_captions=diversity_captions, diversity_k=diversity_k, cache_dir=cache_dir,
                            use_cache=use_cache, caption_sets=sets, clip=clip, per_image=per_image_scores,
                            domain=domain, face=face)
    for s, sp in res["splits"].items():
        if isinstance(sp.get("attribute_accuracy"), str):
            notes.append(f"{s}: attribute accuracy {sp['attribute_accuracy']}; nearest-neighbour retrieval instead")
    if per_image:
        _per_image_outputs(res, per_image_scores, pipe, Path(out).parent if out is not None else run_dir / "eval",
                           batch_size, seed)
    if preset is not None:
        from t2igan.eval.protocols import record_run

        res["protocol"]["preset"] = record_run(preset, res)
    res["notes"] = notes
    res["run_dir"] = str(run_dir)
    out_path = Path(out) if out is not None else run_dir / "eval" / "metrics.json"
    res["output"] = str(out_path)
    write_json_atomic(out_path, res)
    return res


def _per_image_outputs(res: dict, scores: dict, pipe, out_dir: Path, batch_size: int, seed: int) -> None:
    """Per split: the per-image scores' JSONL and the top/bottom grid, named in the result."""
    from t2igan.eval import cmmd

    for s, per in scores.items():
        sp = res["splits"][s]
        with EmptyCaptionsAsPadding(pipe):
            grid = cmmd.save_top_bottom(pipe, per["captions"], per["clip_score"], out_dir / f"top_bottom_{s}.png",
                                        batch_size, seed)
        sp["generated"]["per_image"] = {
            "file": str(cmmd.write_per_image(out_dir / f"per_image_{s}.jsonl", per["captions"],
                                             {k: per[k] for k in ("clip_score", "cmmd_witness")})),
            "top_bottom_grid": grid, "ranked_by": "clip_score"}


def default_splits(root, notes: list | None = None) -> tuple[str, ...]:
    """("test", "novel"), without "novel" when the dataset has no such split (noted in ``notes``)."""
    from t2igan.data.folder import load_folder

    try:
        load_folder(root, "novel")
    except T2IError:
        if notes is not None:
            notes.append(f"split 'novel' skipped: {root} has none")
        return ("test",)
    return ("test", "novel")


def write_json_atomic(out_path, obj) -> None:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
