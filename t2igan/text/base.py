"""One interface for every text encoder: captions in, features out.

    enc = load_caption_encoder("minilm")                  # t2igan.text.spec; or "damsm:runs/damsm_synth64", ...
    f = enc.encode(["this flower has red petals"])
    f.words     # (B, T, Dw) float: per-token features, batch-first, padded positions zero
    f.sentence  # (B, D) float: one vector per caption
    f.mask      # (B, T) bool: True where ``words`` holds a real token

``words`` is batch-first ``[B, T, D]`` (the layout of transformers and of
``nn.LSTM(batch_first=True)``). The DAMSM losses keep the official ``[B, D, T]``:
:class:`~t2igan.text.damsm_encoder.DAMSMCaptionEncoder` transposes, and ``TextFeatures.words_bdt``
gives that layout. An encoder without word features (precomputed sentence embeddings) has
``word_dim == 0``.

Every encoder has ``name`` (what it is), ``sentence_dim``/``word_dim`` and
``fingerprint()``: a hash of its identity and weights, used to key the embedding cache
(:mod:`t2igan.text.cache`), and ``spec``: the short string that loads it again
(:func:`t2igan.text.spec.load_caption_encoder`). Token-level encoders (:mod:`t2igan.text.damsm`,
:mod:`t2igan.text.char_cnn_rnn`) keep their official ``forward`` signatures; their
``CaptionEncoder`` classes adapt them to captions.

Saving inside a model folder (``DIR/text_encoder/``): encoders trained here write their
weights (``save_pretrained``); frozen pretrained ones write a reference — their spec and
fingerprint, no weights (:func:`save_reference`) — and are loaded again from their own
local files, refused if their weights changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from t2igan import T2IError
from t2igan.core.weights import CONFIG, write_json


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
    word_dim: int  # 0: no word features
    frozen: bool = False  # pretrained encoders that are never trained here
    spec: str = ""  # how to load it again (set by t2igan.text.spec.load_caption_encoder)
    last_dropped_words: tuple[str, ...] | list[str] = ()  # caption words the last encode() could not read (vocabulary encoders)

    @property
    def has_words(self) -> bool:
        return self.word_dim > 0

    def save_pretrained(self, directory) -> None:
        """Write this encoder into ``directory`` (a model folder's ``text_encoder/``): frozen
        encoders as a reference (spec + fingerprint), see :func:`save_reference`."""
        save_reference(directory, self)

    def encode(self, captions: list[str]) -> TextFeatures:
        raise NotImplementedError

    def check(self, captions: list[str]) -> None:
        """Raise T2IError for a caption :meth:`encode` would refuse (cheap; no encoding). Any string
        is readable by default."""
        check_captions(captions)

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
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too (CLIP logit_scale)
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


PRETRAINED_REF = "pretrained_text_encoder"  # text_encoder/config.json naming a frozen encoder spec, no weights


def save_reference(directory, encoder: CaptionEncoder) -> None:
    """A model conditioned on a frozen encoder (MiniLM, CLIP, precomputed embeddings) stores the
    encoder's spec and fingerprint, not its weights (they come from their own local files)."""
    if not encoder.spec:
        raise T2IError(f"the {encoder.name} encoder has no spec to save a reference to")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / CONFIG, {"kind": PRETRAINED_REF, "spec": encoder.spec, "fingerprint": encoder.fingerprint()})
