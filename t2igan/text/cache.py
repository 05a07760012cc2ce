"""Precomputed sentence embeddings: a frozen encoder runs once per caption, not per step.

    cache = EmbeddingCache("data/synthflowers64/.cache/text")
    table = cache.sentences(encoder, captions)        # (N, D) float32, computed or read back

A file ``<key>.safetensors`` holds the ``sentence`` tensor ``[N, D]`` (and, with
``words=True``, ``words [N, T, Dw]`` and ``mask [N, T]``). The key is the sha256 of the
encoder's :meth:`~t2igan.text.base.CaptionEncoder.fingerprint` (its identity and every
weight) and of the exact caption list, so other weights or other captions never hit a
stale entry. Files are written to a temporary name and moved into place.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.text.base import CaptionEncoder


def cache_key(fingerprint: str, captions: list[str], words: bool = False) -> str:
    h = hashlib.sha256(fingerprint.encode())
    h.update(json.dumps(captions, ensure_ascii=False).encode("utf-8"))
    h.update(b"words" if words else b"sentence")
    return h.hexdigest()[:32]


def flatten_captions(captions: list[list[str]]) -> tuple[list[str], torch.Tensor]:
    """Per-image caption lists -> (flat list, offsets [N_images + 1]): caption j of image i is
    ``flat[offsets[i] + j]``."""
    flat = [c for caps in captions for c in caps]
    offsets = torch.zeros(len(captions) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.tensor([len(c) for c in captions], dtype=torch.long), 0)
    return flat, offsets


class EmbeddingCache:
    def __init__(self, directory: str | os.PathLike, batch_size: int = 256):
        self.dir = Path(directory)
        self.batch_size = batch_size
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def sentences(self, encoder: CaptionEncoder, captions: list[str]) -> torch.Tensor:
        """``[N, D]`` float32 sentence vectors of ``captions`` (in order), from the cache or computed once."""
        return self.get(encoder, captions)["sentence"]

    def get(self, encoder: CaptionEncoder, captions: list[str], words: bool = False) -> dict[str, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save_file

        captions = list(captions)
        if not captions:
            raise T2IError("no captions to embed")
        fp = encoder.fingerprint()
        key = cache_key(fp, captions, words)
        p = self.path(key)
        if p.is_file():
            try:
                out = load_file(str(p))
            except (SafetensorError, OSError, ValueError, RuntimeError):
                out = None  # damaged entry: recompute and replace it
            if out is not None and "sentence" in out and out["sentence"].shape[0] == len(captions):
                self.hits += 1
                return out
        self.misses += 1
        out = self.compute(encoder, captions, words)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
        save_file(out, str(tmp), metadata={"encoder": encoder.name, "captions": str(len(captions)),
                                           "fingerprint": fp})
        os.replace(tmp, p)
        return out

    @torch.no_grad()
    def compute(self, encoder: CaptionEncoder, captions: list[str], words: bool) -> dict[str, torch.Tensor]:
        was = encoder.training
        encoder.eval()
        unique = list(dict.fromkeys(captions))  # each distinct caption is encoded once
        where = {c: i for i, c in enumerate(unique)}
        rows = torch.tensor([where[c] for c in captions], dtype=torch.long)
        sents, ws, ms = [], [], []
        try:
            for i in range(0, len(unique), self.batch_size):
                f = encoder.encode(unique[i:i + self.batch_size])
                sents.append(f.sentence.float().cpu())
                if words:
                    ws.append(f.words.float().cpu())
                    ms.append(f.mask.cpu())
        finally:
            encoder.train(was)
        out = {"sentence": torch.cat(sents)[rows].contiguous()}
        if words:  # pad every batch to the longest token count
            T = max(w.shape[1] for w in ws)
            out["words"] = torch.cat([torch.nn.functional.pad(w, (0, 0, 0, T - w.shape[1])) for w in ws])[rows].contiguous()
            out["mask"] = torch.cat([torch.nn.functional.pad(m, (0, T - m.shape[1])) for m in ms])[rows].contiguous()
        return out


class CachedSentences:
    """Sentence vectors of every caption of a dataset split from a frozen encoder, computed once
    through the cache; ``lookup(image index, caption index)`` during training."""

    def __init__(self, encoder: CaptionEncoder, spec: str, captions: list[list[str]], cache_dir: str | os.PathLike):
        self.encoder, self.spec = encoder, spec
        flat, self.offsets = flatten_captions(captions)
        self.table = EmbeddingCache(cache_dir).sentences(encoder, flat)  # (N_captions, D) float32, CPU

    def lookup(self, index: torch.Tensor, caption_index: torch.Tensor) -> torch.Tensor:
        return self.table[self.offsets[index.cpu()] + caption_index.cpu()]
