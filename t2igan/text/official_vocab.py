"""The official AttnGAN / DF-GAN / MirrorGAN vocabulary (``captions.pickle``) and tokenisation.

``captions.pickle`` (AttnGAN ``TextDataset.load_text_data``, reused by DF-GAN and MirrorGAN) is
``[train_captions, test_captions, ixtoword, wordtoix]``: token-id lists and the two dicts, index 0
``'<end>'``. The official code tokenises a caption as::

    sent = sent.replace("\\ufffd\\ufffd", " ")
    tokens = RegexpTokenizer(r'\\w+').tokenize(sent.lower())        # nltk: re.findall(r'\\w+', ...)
    tokens = [t.encode('ascii', 'ignore').decode('ascii') for t in tokens]
    ids = [wordtoix[t] for t in tokens if t and t in wordtoix]      # unknown words dropped

:func:`official_tokenize` is that, with ``re`` (no nltk). :class:`OfficialVocabulary` is a
:class:`~t2igan.data.text.Vocabulary` that tokenises this way (``\\w`` keeps underscores and
reads non-ASCII letters, which the t2igan tokeniser ``[a-z0-9]+`` splits on), so an imported DAMSM
text encoder sees the token ids the official code gives it. It is saved in ``vocab.json`` with
``"tokenizer": "official"`` and :func:`load_vocabulary` gives it back.

Captions with more known words than ``max_words`` are cut to ``max_words`` (t2igan's default,
and the official *training* length ``TEXT.WORDS_NUM``; the caller reports them), or with
``long_captions = "keep"`` kept whole, as the official sampling scripts (``gen_example``) feed
them; :attr:`last_long` lists ``(caption index, known words)`` of the last batch.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from t2igan import T2IError
from t2igan.data.text import MAX_CAPTION_CHARS, PAD, Vocabulary

TOKENIZER = "official"
_WORD = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.DOTALL)  # nltk RegexpTokenizer's flags


def official_tokenize(caption: str) -> list[str]:
    """Tokens of ``caption`` exactly as AttnGAN/DF-GAN make them (see the module docstring)."""
    caption = caption.replace("\ufffd\ufffd", " ")
    out = []
    for t in _WORD.findall(caption.lower()):
        t = t.encode("ascii", "ignore").decode("ascii")
        if t:
            out.append(t)
    return out


class OfficialVocabulary(Vocabulary):
    """A vocabulary read from the official ``ixtoword`` with the official tokeniser."""

    tokenizer = TOKENIZER

    def __init__(self, words, long_captions: str = "cut"):
        super().__init__(words)
        self.long_captions = long_captions  # "cut" (to max_words) or "keep" (official sampling)
        self.last_long: list[tuple[int, int]] = []

    def tokenize(self, caption: str) -> list[str]:
        return official_tokenize(caption)

    def batch(self, captions, max_words: int, strict: bool = False, empty: str = "error"):
        """As :meth:`Vocabulary.batch`; with ``long_captions="keep"`` the tokens are as wide as the
        longest caption when that is longer than ``max_words`` (nothing cut)."""
        if self.long_captions not in ("cut", "keep"):
            raise T2IError(f"long_captions must be 'cut' or 'keep', got {self.long_captions!r}")
        lengths = []
        for c in captions if isinstance(captions, (list, tuple)) else []:
            lengths.append(len(self.encode(c)[0]) if isinstance(c, str) and len(c) <= MAX_CAPTION_CHARS else 0)
        self.last_long = [(b, n) for b, n in enumerate(lengths) if n > max_words]
        width = max([max_words, *lengths]) if self.long_captions == "keep" else max_words
        return super().batch(captions, width, strict=strict, empty=empty)

    def save(self, path: str | os.PathLike) -> None:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps({"words": self.words, "tokenizer": TOKENIZER}, indent=0), encoding="utf-8")
        os.replace(tmp, p)


def load_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """A ``vocab.json``: an :class:`OfficialVocabulary` when it says ``"tokenizer": "official"``,
    else the t2igan :class:`Vocabulary`."""
    p = Path(path)
    vocab = Vocabulary.load(p)
    try:
        tok = json.loads(p.read_text(encoding="utf-8")).get("tokenizer", "t2igan")
    except (OSError, ValueError, AttributeError):
        tok = "t2igan"
    if tok == TOKENIZER:
        return OfficialVocabulary(vocab.words)
    if tok != "t2igan":
        raise T2IError(f"{p}: unknown tokenizer {tok!r} (official or t2igan)")
    return vocab


def read_captions_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """``captions.pickle`` through the restricted unpickler, checked: ``{"words": [ixtoword[0..n-1]],
    "train": [[ids]], "test": [[ids]]}``. A file of another layout is one line naming it."""
    from t2igan.data.safe_pickle import load_pickle

    p = Path(path)
    data = load_pickle(p)
    return captions_from_pickle(data, p)


def captions_from_pickle(data: Any, p: Path) -> dict[str, Any]:
    what = "not an AttnGAN/DF-GAN captions.pickle ([train_captions, test_captions, ixtoword, wordtoix])"
    if not isinstance(data, (list, tuple)) or len(data) != 4:
        size = f" of {len(data)}" if hasattr(data, "__len__") else ""
        raise T2IError(f"{p}: {what}: found a {type(data).__name__}{size}")
    train, test, ixtoword, wordtoix = data
    if not isinstance(ixtoword, dict) or not isinstance(wordtoix, dict) or not ixtoword:
        raise T2IError(f"{p}: {what}: items 3 and 4 must be the ixtoword and wordtoix dicts")
    n = len(ixtoword)
    if sorted(ixtoword) != list(range(n)) or not all(isinstance(w, str) for w in ixtoword.values()):
        raise T2IError(f"{p}: ixtoword must map 0..{n - 1} to words")
    words = [ixtoword[i] for i in range(n)]
    if words[0] != PAD:
        raise T2IError(f"{p}: ixtoword[0] is {words[0]!r}, the official vocabulary starts with {PAD!r}")
    if len(wordtoix) != n or any(wordtoix.get(w) != i for i, w in enumerate(words)):
        raise T2IError(f"{p}: wordtoix is not the inverse of ixtoword")
    for name, caps in (("train", train), ("test", test)):
        if not isinstance(caps, (list, tuple)) or any(not isinstance(c, (list, tuple)) for c in caps[:100]):
            raise T2IError(f"{p}: its {name} captions are not lists of token ids")
    return {"words": words, "train": train, "test": test}


def vocabulary_from_pickle(path: str | os.PathLike) -> OfficialVocabulary:
    return OfficialVocabulary(read_captions_pickle(path)["words"])

