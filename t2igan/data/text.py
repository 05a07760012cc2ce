"""Word vocabulary and tokenizer (AttnGAN convention: index 0 is '<end>' / padding).

Tokenisation lowercases and keeps runs of letters and digits (AttnGAN's ``\\w+``
tokenizer without underscores). Words not in the vocabulary are *dropped* with the list
of dropped words reported, as the official AttnGAN/DF-GAN code drops them; a caption
that has no known word left is an error.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from t2igan import T2IError

_TOKEN = re.compile(r"[a-z0-9]+")
PAD = "<end>"
MAX_CAPTION_CHARS = 2000  # longer input is refused (no caption in any dataset comes close)


def tokenize(caption: str) -> list[str]:
    return _TOKEN.findall(caption.lower())


class Vocabulary:
    def __init__(self, words: Iterable[str]):
        words = list(words)
        if not words or words[0] != PAD:
            raise T2IError(f"vocabulary must start with '{PAD}'")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        if len(self.index) != len(words):
            raise T2IError("vocabulary has duplicate words")

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        counts = Counter(w for c in captions for w in tokenize(c))
        return cls([PAD] + sorted(w for w, n in counts.items() if n >= min_count))

    def tokenize(self, caption: str) -> list[str]:
        """The words of ``caption`` as this vocabulary splits them (a subclass may tokenise otherwise)."""
        return tokenize(caption)

    def encode(self, caption: str) -> tuple[list[int], list[str]]:
        """Token ids of the known words, and the unknown words that were dropped."""
        ids, unknown = [], []
        for w in self.tokenize(caption):
            i = self.index.get(w)
            if i is None:
                unknown.append(w)
            else:
                ids.append(i)
        return ids, unknown

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.words[i] for i in ids if i != 0)

    def batch(self, captions: list[str], max_words: int, strict: bool = False,
              empty: str = "error") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Encode captions into (tokens [B, max_words] long, lengths [B] long, dropped words).

        Bad input (not a string, empty, longer than MAX_CAPTION_CHARS, no known word, or any
        unknown word when ``strict``) raises T2IError naming the caption. ``empty="pad"``
        instead encodes a caption left with no known word as the empty caption: the padding
        token alone (id 0, length 1).
        """
        if empty not in ("error", "pad"):
            raise ValueError(f"empty must be 'error' or 'pad', got {empty!r}")
        if not captions:
            raise T2IError("no captions given")
        tokens = torch.zeros(len(captions), max_words, dtype=torch.long)
        lengths = torch.zeros(len(captions), dtype=torch.long)
        dropped: list[str] = []
        for b, cap in enumerate(captions):
            if not isinstance(cap, str):
                raise T2IError(f"caption {b} is not a string: {cap!r:.60}")
            if len(cap) > MAX_CAPTION_CHARS:
                raise T2IError(f"caption {b} is {len(cap)} characters long; the limit is {MAX_CAPTION_CHARS}")
            if not cap.strip():
                raise T2IError(f"caption {b} is empty")
            ids, unknown = self.encode(cap)
            if unknown and strict:
                raise T2IError(f"caption {b} has words not in the vocabulary: {', '.join(sorted(set(unknown)))}")
            if not ids and empty == "pad":
                ids = [0]
            if not ids:
                raise T2IError(f"caption {b} ({cap[:60]!r}) has no word known to the model's vocabulary")
            dropped.extend(unknown)
            ids = ids[:max_words]
            tokens[b, : len(ids)] = torch.tensor(ids)
            lengths[b] = len(ids)
        return tokens, lengths, sorted(set(dropped))

    def save(self, path: str | os.PathLike) -> None:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps({"words": self.words}, indent=0), encoding="utf-8")
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            words = data["words"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise T2IError(f"{p}: not a t2igan vocabulary file ({e.__class__.__name__})") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise T2IError(f"{p}: 'words' must be a list of strings")
        return cls(words)
