"""CLIP score and CLIP R-precision with a local Hugging Face CLIP folder (``t2igan eval RUN --clip DIR``).

* **CLIP score** is torchmetrics' ``CLIPScore`` (Hessel et al. 2021, w = 100) on (image,
  caption) pairs. As torchmetrics 1.9 computes it, the score is
  ``max(100 * mean_k cos(E_img(x_k), E_txt(c_k)), 0)``: the clamp applies to the mean over
  the pairs, not to each pair.
* **CLIP R-precision** is the DAMSM protocol of :mod:`t2igan.eval.rprecision` (1 true + 99
  mismatched captions per image, cosine ranking, mean ± std over 10 bins) with CLIP's
  projected image and text embeddings in place of the DAMSM codes.

The model is a ``transformers.CLIPModel`` + ``CLIPProcessor`` read from a local folder
(``config.json``, ``model.safetensors`` or ``pytorch_model.bin``, tokenizer and
preprocessor files, e.g. a snapshot of ``openai/clip-vit-base-patch32``, or a ``task: clip`` run)
through the project's one CLIP folder loader (:func:`t2igan.text.clip.load_hf_clip`); nothing is
downloaded. The image embeddings that torchmetrics computes for the score are the ones
R-precision ranks, so every image goes through CLIP once.

    clip = CLIPScorer.from_pretrained("weights/clip-vit-base-patch32")
    pairs = clip.pairs()
    pairs.update(images, captions)           # float [B, 3, H, W] in [0, 1] (or uint8)
    pairs.score()                            # {"mean": ..., "n": ...}
    r_precision(pairs.image_codes(), candidates, clip.text_codes(all_captions))
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.core.weights import read_json

ENV_VAR = "T2IGAN_CLIP_WEIGHTS"
HELP = (f"give a local Hugging Face CLIP folder (config.json, model.safetensors or pytorch_model.bin, tokenizer and "
        f"preprocessor files, e.g. a snapshot of openai/clip-vit-base-patch32) with --clip PATH or {ENV_VAR}; "
        "nothing is downloaded")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def clip_path_from_env(path=None):
    """``path`` if given, else ``$T2IGAN_CLIP_WEIGHTS`` if set, else None; 'none' switches CLIP off."""
    p = path if path is not None else os.environ.get(ENV_VAR) or None
    return None if p is None or str(p).lower() == "none" else p


def _projected(out) -> torch.Tensor:
    # transformers < 5 returns the projected features; >= 5 a ModelOutput whose pooler_output holds them
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _Features(torch.nn.Module):
    """What torchmetrics' CLIPScore calls as its model: a CLIPModel whose ``get_image_features`` /
    ``get_text_features`` return the projected embeddings as tensors (torchmetrics 1.9 normalises
    them with ``.norm``, which a transformers 5 ModelOutput does not have). Image embeddings are also
    appended to ``kept`` when it is a list, for R-precision."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config
        self.kept: list | None = None

    def get_image_features(self, pixel_values, **kwargs) -> torch.Tensor:
        f = _projected(self.model.get_image_features(pixel_values=pixel_values))  # (B, projection_dim)
        if self.kept is not None:
            self.kept.append(f.detach().float().cpu())
        return f

    def get_text_features(self, input_ids, attention_mask=None, **kwargs) -> torch.Tensor:
        return _projected(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def _sha256(path: Path) -> str:
    from t2igan.eval.evaluator import sha256_file

    return sha256_file(path)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [0, 1] images -> uint8 round(255 x) (as saved to PNG); uint8 images unchanged."""
    if images.dtype == torch.uint8:
        return images
    return images.float().clamp(0, 1).mul(255).round().to(torch.uint8)


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; anything else is a one-line T2IError that says how to give CLIP weights."""
    try:
        return read_json(path)
    except T2IError as e:
        raise T2IError(f"{e}; {HELP}") from None


class CLIPScorer:
    """A Hugging Face CLIP model and processor, loaded strictly from a local folder."""

    def __init__(self, model, processor, source: str, sha256: str, files: list[str]):
        self.features = _Features(model.eval().requires_grad_(False))
        self.processor = processor
        self.source, self.weights_sha256, self.weights_files = source, sha256, files

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device="cpu") -> CLIPScorer:
        from t2igan.text.clip import import_transformers, load_hf_clip

        model, _tok, _mean, _std, d = load_hf_clip(path, help=HELP)  # the project's one CLIP folder loader
        present = [f for f in WEIGHT_FILES if (d / f).is_file()]
        transformers = import_transformers()
        try:
            processor = transformers.CLIPProcessor.from_pretrained(str(d), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise T2IError(f"{d}: cannot load the CLIP tokenizer/preprocessor ({str(e).strip().splitlines()[0][:200]}); "
                           f"{HELP}") from None
        files = [f for f in present if not f.endswith(".index.json")][:1]  # the one transformers reads
        if not files:  # sharded: every shard named in the index
            index = _read_json(d / present[0])
            files = sorted(set(index.get("weight_map", {}).values()))
        digests = [_sha256(d / f) for f in files]
        sha = digests[0] if len(digests) == 1 else hashlib.sha256(b"".join(bytes.fromhex(x) for x in digests)).hexdigest()
        return cls(model.to(device), processor, str(d.resolve()), sha, files)

    @property
    def device(self) -> torch.device:
        return next(self.features.parameters()).device

    @property
    def max_tokens(self) -> int:
        return int(self.features.config.text_config.max_position_embeddings)

    def pairs(self) -> CLIPPairs:
        return CLIPPairs(self)

    @torch.no_grad()
    def text_codes(self, captions: list[str], batch_size: int = 256) -> torch.Tensor:
        """Projected text embeddings [C, projection_dim] (not normalised), tokenised as torchmetrics does
        (padding to the longest caption of the batch), truncated to the model's context keeping the end token."""
        out = []
        for i in range(0, len(captions), batch_size):
            t = self.processor.tokenizer(list(captions[i:i + batch_size]), padding=True, truncation=True,
                                         max_length=self.max_tokens, return_tensors="pt")
            out.append(self.features.get_text_features(t["input_ids"].to(self.device),
                                                       t["attention_mask"].to(self.device)).float().cpu())
        return torch.cat(out)

    def count_too_long(self, captions: list[str]) -> int:
        """How many captions exceed the model's context (``max_tokens`` tokens with start and end) and are cut."""
        ids = self.processor.tokenizer(list(captions))["input_ids"]
        return sum(len(x) > self.max_tokens for x in ids)

    def describe(self) -> dict:
        import torchmetrics
        import transformers

        ip = self.processor.image_processor
        ipc = json.loads(ip.to_json_string())  # the processor's saved settings, JSON types
        vc = self.features.config.vision_config

        resample = ipc.get("resample")
        resample = PIL_RESAMPLE.get(resample, str(resample)) if isinstance(resample, int) else str(resample)
        return {
            "name": "CLIP (transformers CLIPModel): projected image / text embeddings; score by torchmetrics CLIPScore",
            "dir": self.source, "weights_sha256": self.weights_sha256, "weights_files": self.weights_files,
            "model": self.features.config.name_or_path or None,
            "projection_dim": int(self.features.config.projection_dim),
            "vision": {"image_size": int(vc.image_size), "patch_size": int(vc.patch_size),
                       "layers": int(vc.num_hidden_layers), "width": int(vc.hidden_size)},
            "max_tokens": self.max_tokens,
            "preprocess": {"processor": type(ip).__name__,
                           "input": "uint8 RGB, round(255 x) of the float [0, 1] generated images",
                           "do_resize": ipc.get("do_resize"), "size": ipc.get("size"), "resample": resample,
                           "do_center_crop": ipc.get("do_center_crop"), "crop_size": ipc.get("crop_size"),
                           "do_rescale": ipc.get("do_rescale"), "rescale_factor": ipc.get("rescale_factor"),
                           "do_normalize": ipc.get("do_normalize"), "image_mean": ipc.get("image_mean"),
                           "image_std": ipc.get("image_std")},
            "versions": {"torchmetrics": torchmetrics.__version__, "transformers": transformers.__version__},
        }


class CLIPPairs:
    """(image, caption) pairs fed to torchmetrics' CLIPScore; keeps the image embeddings it computed."""

    def __init__(self, scorer: CLIPScorer):
        from torchmetrics.multimodal import CLIPScore

        self.scorer = scorer
        self.metric = CLIPScore(model_name_or_path=lambda: (scorer.features, scorer.processor))
        self._codes: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, images: torch.Tensor, captions: list[str]) -> None:
        """images: float [B, 3, H, W] in [0, 1] (rounded to uint8) or uint8; one caption per image."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] != len(captions):
            raise T2IError(f"CLIP score: expected images [{len(captions)}, 3, H, W] for {len(captions)} captions, "
                           f"got {tuple(images.shape)}")
        kept: list[torch.Tensor] = []
        self.scorer.features.kept = kept
        try:
            self.metric.update(to_uint8(images).to(self.scorer.device), list(captions))
        finally:
            self.scorer.features.kept = None
        codes = torch.cat(kept)
        if len(codes) != len(captions):  # torchmetrics encodes each image exactly once
            raise RuntimeError(f"CLIP: {len(codes)} image embeddings recorded for {len(captions)} images")
        self._codes.append(codes)

    def score(self) -> dict:
        n = int(self.metric.n_samples)
        return {"mean": float(self.metric.compute()), "n": n}

    def image_codes(self) -> torch.Tensor:
        """Projected image embeddings [N, projection_dim] of every image given to ``update``, in order."""
        return torch.cat(self._codes)
