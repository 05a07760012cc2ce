"""The DAMSM text encoder as a :class:`~t2igan.text.base.CaptionEncoder`, and the DAMSM
components of a model folder.

A DAMSM text encoder is saved as ``DIR/text_encoder/`` (kind ``damsm_text_encoder``, its
constructor arguments and ``max_words``) with its vocabulary in ``DIR/vocab.json``; a DAMSM
run also saves ``DIR/image_encoder/`` (kind ``damsm_image_encoder``), the image side of the
matching loss. An image encoder trained against a frozen encoder (task damsm with
``text_encoder: minilm`` ...) sits beside a reference to that encoder instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.folder import resolve_dir
from t2igan.data.text import Vocabulary
from t2igan.text.base import PRETRAINED_REF, CaptionEncoder, TextFeatures, check_captions
from t2igan.text.damsm import ImageEncoder, TextEncoder
from t2igan.text.official_vocab import load_vocabulary

TEXT_KIND = "damsm_text_encoder"
IMAGE_KIND = "damsm_image_encoder"


class DAMSMCaptionEncoder(CaptionEncoder):
    """The DAMSM bi-LSTM (:class:`t2igan.text.damsm.TextEncoder`) behind the caption interface,
    tokenised with the run's :class:`~t2igan.data.text.Vocabulary` (unknown words dropped and
    reported in ``last_dropped_words``). Training reads the batch's tokens directly
    (:meth:`encode_tokens`): the dataset tokenises with this encoder's vocabulary."""

    name = "damsm"
    token_level = True

    def __init__(self, encoder: TextEncoder, vocab: Vocabulary, max_words: int = 18, args: dict | None = None):
        super().__init__()
        self.encoder, self.vocab, self.max_words = encoder, vocab, max_words
        self.args = dict(args) if args is not None else dict(
            ntoken=encoder.ntoken, ninput=encoder.ninput, nhidden=encoder.nef, nlayers=encoder.nlayers,
            drop_prob=encoder.drop.p)
        self.sentence_dim = self.word_dim = encoder.nef
        self.empty_captions = "error"  # or "pad": a caption with no known word is the padding token alone
        self.last_dropped_words = []
        self.last_long_captions: list[tuple[int, int]] = []  # (caption index, known words) over max_words

    @property
    def nef(self) -> int:
        return self.encoder.nef

    def identity(self) -> dict:
        return {"name": self.name, "max_words": self.max_words, "vocab": self.vocab.words}

    def tokens(self, captions: list[str]):
        captions = check_captions(captions)
        tokens, lengths, dropped = self.vocab.batch(captions, self.max_words, empty=self.empty_captions)
        self.last_dropped_words = dropped
        # captions with more known words than max_words: cut (reported here), or kept whole by an
        # official vocabulary with long_captions="keep" (the official sampling scripts)
        self.last_long_captions = [(b, n) for b, c in enumerate(captions)
                                   if (n := len(self.vocab.encode(c)[0])) > self.max_words]
        return tokens.to(self.device), lengths.to(self.device)

    def encode_tokens(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """The official forward: words ``[B, nef, T]``, sentence ``[B, nef]``, mask ``[B, T]``."""
        return self.encoder(tokens, lengths)

    def encode(self, captions: list[str]) -> TextFeatures:
        words, sent, mask = self.encoder(*self.tokens(captions))  # (B, nef, T), (B, nef), (B, T)
        return TextFeatures(words.transpose(1, 2), sent, mask)

    def save_pretrained(self, directory) -> None:
        """``directory`` is the model folder's ``text_encoder/``; the vocabulary goes beside it."""
        d = Path(directory)
        save_damsm_text_encoder(d.parent, self.encoder, self.args, self.vocab, self.max_words)

    @classmethod
    def from_pretrained(cls, path) -> "DAMSMCaptionEncoder":
        enc, args, vocab, max_words = load_damsm_text_encoder(path)
        out = cls(enc, vocab, max_words, args).eval()
        out.spec = f"damsm:{path}"
        return out


def save_damsm_text_encoder(directory: str | os.PathLike, encoder: TextEncoder, args: dict, vocab: Vocabulary,
                            max_words: int) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ckpt.save_component(encoder, directory / "text_encoder", TEXT_KIND, {**args, "max_words": max_words})
    vocab.save(directory / "vocab.json")


def load_damsm_text_encoder(directory: str | os.PathLike) -> tuple[TextEncoder, dict, Vocabulary, int]:
    """(encoder in eval mode, constructor args, vocabulary, max_words) from a model/run folder."""
    d = resolve_dir(directory)
    p = d / "text_encoder" / ckpt.CONFIG
    if p.is_file():
        kind = ckpt.read_json(p).get("kind")
        if kind != TEXT_KIND:
            raise T2IError(f"{d}: its text encoder is {kind!r}, not a DAMSM text encoder")
    cfg, state = ckpt.read_component(d / "text_encoder", TEXT_KIND)
    max_words = int(cfg.pop("max_words", 18))
    vocab = load_vocabulary(d / "vocab.json")  # an official captions.pickle vocabulary keeps its tokeniser
    try:
        enc = TextEncoder(**cfg)
    except TypeError as e:
        raise T2IError(f"{d / 'text_encoder' / 'config.json'}: bad arguments ({e})") from None
    if enc.ntoken != len(vocab):
        raise T2IError(f"{d}: text encoder has {enc.ntoken} tokens but vocab.json has {len(vocab)} words")
    ckpt.load_state_strict(enc, state, str(d / "text_encoder"))
    return enc.eval(), cfg, vocab, max_words


def save_image_encoder(directory: str | os.PathLike, encoder: ImageEncoder, args: dict) -> None:
    ckpt.save_component(encoder, Path(directory) / "image_encoder", IMAGE_KIND, args)


def load_image_encoder(directory: str | os.PathLike) -> ImageEncoder:
    """The DAMSM image encoder (eval mode) saved beside the text encoder of a DAMSM run, or the
    official Inception-v3 ``CNN_ENCODER`` of a converted AttnGAN/DF-GAN folder (same outputs:
    regions ``[B, nef, h, w]`` and code ``[B, nef]`` of images in [-1, 1])."""
    d = resolve_dir(directory)
    if not (d / "image_encoder").is_dir():
        raise T2IError(f"{d} has no image_encoder/ (the DAMSM loss needs the image encoder of a DAMSM run)")
    from t2igan.models.damsm_inception import CNN_ENCODER, KIND as INCEPTION_KIND

    cfg, state = ckpt.read_component(d / "image_encoder", (IMAGE_KIND, INCEPTION_KIND))
    kind = ckpt.read_json(d / "image_encoder" / ckpt.CONFIG).get("kind")
    try:  # the CNN trained here, or the official Inception-v3 CNN_ENCODER of an imported checkpoint
        enc = (CNN_ENCODER if kind == INCEPTION_KIND else ImageEncoder)(**cfg)
    except TypeError as e:
        raise T2IError(f"{d / 'image_encoder' / 'config.json'}: bad arguments ({e})") from None
    ckpt.load_state_strict(enc, state, str(d / "image_encoder"))
    return enc.eval()


def load_image_encoder_for(directory: str | os.PathLike, encoder: CaptionEncoder, spec: str) -> ImageEncoder:
    """The DAMSM image encoder (eval mode) of a run trained against the frozen caption encoder
    ``encoder`` (task damsm with ``text_encoder: spec``); one trained against another encoder,
    or other weights of it, is refused (the fingerprints differ)."""
    d = resolve_dir(directory)
    p = d / "text_encoder" / ckpt.CONFIG
    ref = ckpt.read_json(p) if p.is_file() else {}
    if ref.get("kind") != PRETRAINED_REF:
        raise T2IError(f"{d}: its image encoder was not trained against a frozen text encoder (no {PRETRAINED_REF} "
                       f"in {p}); train one with task damsm, text_encoder: {spec}")
    if ref.get("fingerprint") != encoder.fingerprint():
        raise T2IError(f"{p}: this image encoder was trained against the text encoder {ref.get('spec')!r}, "
                       f"not {spec!r} (other encoder or other weights)")
    enc = load_image_encoder(d)
    if enc.nef != encoder.sentence_dim:
        raise T2IError(f"{d / 'image_encoder' / ckpt.CONFIG}: nef={enc.nef} but the text encoder {spec!r} "
                       f"gives {encoder.sentence_dim}-d sentence vectors")
    return enc
