"""Precomputed sentence embeddings as a caption encoder: ``precomputed:DATA_ROOT``.

StackGAN, GAN-INT-CLS and HDGAN were trained on embeddings computed once by Reed's
char-CNN-RNN (or skip-thought) and shipped beside the images:
``DATA_ROOT/{train,test}/char-CNN-RNN-embeddings.pickle`` (also ``char-CNN-GRU-`` and
``skip-thought-embeddings.pickle``), one ``[N images, captions, D]`` array per split, row
``[i, j]`` for caption ``j`` of image ``i`` (read by :mod:`t2igan.data.birds` through the
restricted unpickler). This encoder maps each caption text of those splits to its row. It has
no word features and knows no other caption: a caption outside the dataset is an error that
says so (convert the encoder that made them, e.g. ``t2igan convert t7``, to draw new captions).
Two images with the same caption text share the first row met.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from t2igan import T2IError
from t2igan.data.birds import EMBEDDING_FILES, list_splits, load_dataset
from t2igan.text.base import CaptionEncoder, TextFeatures, check_captions


class PrecomputedEncoder(CaptionEncoder):
    name = "precomputed"
    frozen = True

    def __init__(self, root: str | os.PathLike):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise T2IError(f"precomputed embeddings: dataset folder not found: {self.root}")
        rows: dict[str, np.ndarray] = {}
        h = hashlib.sha256()
        for split in list_splits(self.root):
            if not any((self.root / split / f).is_file() for f in EMBEDDING_FILES):
                continue
            d = load_dataset(self.root, split)
            emb = d.meta["embeddings"]
            if emb.shape[1] < max(len(c) for c in d.captions):
                raise T2IError(f"{self.root / split}: the embeddings pickle holds {emb.shape[1]} captions per image, "
                               f"the captions files up to {max(len(c) for c in d.captions)}")
            h.update(f"{split}:{emb.shape}".encode())
            h.update(np.ascontiguousarray(emb, dtype=np.float32).tobytes())
            for i, caps in enumerate(d.captions):
                for j, c in enumerate(caps):
                    rows.setdefault(c, emb[i, j])
        if not rows:
            raise T2IError(f"{self.root}: no precomputed embeddings ({' / '.join(EMBEDDING_FILES)} in a split folder "
                           "of the StackGAN layout)")
        self.table = rows
        self.sentence_dim, self.word_dim = int(next(iter(rows.values())).shape[0]), 0
        self._digest = h.hexdigest()
        self.spec = f"precomputed:{self.root}"

    def identity(self) -> dict:
        return {"name": self.name, "embeddings_sha256": self._digest}

    def check(self, captions: list[str]) -> None:
        missing = [c for c in check_captions(captions) if c not in self.table]
        if missing:
            raise T2IError(f"caption {missing[0]!r:.80} is not one of the captions with precomputed embeddings in "
                           f"{self.root} (this encoder knows only the dataset's own captions)")

    def encode(self, captions: list[str]) -> TextFeatures:
        self.check(captions)
        sent = torch.from_numpy(np.stack([self.table[c] for c in captions]).astype(np.float32))
        B = sent.size(0)
        return TextFeatures(torch.zeros(B, 0, 0), sent, torch.zeros(B, 0, dtype=torch.bool))
