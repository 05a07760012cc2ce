"""The text side of a GAN training step: any frozen caption encoder, read the cheapest way.

    cond = Conditioning(encoder, data.captions, cache_dir, words=True)
    words, sent, mask = cond.batch(batch)              # (B, Dw, T), (B, D), (B, T)
    words, sent, mask = cond.captions(["a red flower"])  # sample grids

Three ways, chosen from the encoder and from what the family needs:

* a token-level encoder (DAMSM: ``token_level``) runs on the batch's token ids, which the
  dataset made with the encoder's own vocabulary (the official AttnGAN/DF-GAN path);
* a family that reads sentence vectors only, with any other encoder, looks them up in
  the embedding cache (:class:`~t2igan.text.cache.CachedSentences`: each training caption
  encoded once, keyed by the encoder's fingerprint); ``words`` is then ``(B, 0, 0)``;
* a family that attends over words runs the encoder on the batch's caption texts.

Word features are in the DAMSM/AttnGAN layout ``[B, Dw, T]``. Nothing here has gradients.
"""
from __future__ import annotations

import os

import torch

from t2igan import T2IError
from t2igan.data.text import Vocabulary
from t2igan.text.base import CaptionEncoder
from t2igan.text.cache import CachedSentences


def vocabulary_for(encoder: CaptionEncoder, captions: list[list[str]], min_word_count: int = 1) -> Vocabulary:
    """The vocabulary the dataset tokenises with: the encoder's own (DAMSM), else one built from the
    training captions (for sample grids and families that read tokens, such as MirrorGAN's STREAM)."""
    vocab = getattr(encoder, "vocab", None)
    if vocab is not None:
        return vocab
    return Vocabulary.build((c for caps in captions for c in caps), min_word_count)


class Conditioning:
    def __init__(self, encoder: CaptionEncoder, captions: list[list[str]], cache_dir: str | os.PathLike,
                 words: bool = False, family: str = "this family"):
        """``captions``: the training split's captions (``data.captions``); ``words``: the family
        attends over word features (refused, with the reason, for an encoder without them)."""
        if words and not encoder.has_words:
            raise T2IError(f"{family} attends over word features, which the text encoder {encoder.spec or encoder.name!r} "
                           "does not give (sentence vectors only): use damsm, minilm, clip or char-cnn-rnn")
        self.encoder = encoder.eval().requires_grad_(False)
        self.words = words
        self.token_level = bool(getattr(encoder, "token_level", False))
        self.texts = captions
        self.sentences = None
        if not self.token_level and not words:
            self.sentences = CachedSentences(encoder, encoder.spec, captions, cache_dir)

    @property
    def sentence_dim(self) -> int:
        return self.encoder.sentence_dim

    def to(self, device) -> "Conditioning":
        self.encoder.to(device)
        return self

    def texts_of(self, index: torch.Tensor, caption_index: torch.Tensor) -> list[str]:
        """The caption texts of (image index, caption index) pairs, e.g. a batch's."""
        return [self.texts[int(i)][int(j)] for i, j in zip(index, caption_index)]

    @torch.no_grad()
    def batch(self, batch, wrong: bool = False):
        """(words ``[B, Dw, T]``, sentence ``[B, D]``, mask ``[B, T]``) of the batch's captions, or of
        its mismatched ("wrong") captions."""
        self.encoder.eval()
        dev = batch.images[-1].device
        if self.token_level:
            tokens, lengths = (batch.wrong_tokens, batch.wrong_lengths) if wrong else (batch.tokens, batch.lengths)
            return self.encoder.encode_tokens(tokens, lengths)
        index, cap = (batch.wrong_index, batch.wrong_caption_index) if wrong else (batch.index, batch.caption_index)
        if self.sentences is not None:
            sent = self.sentences.lookup(index, cap).to(dev)
            B = sent.size(0)
            return sent.new_zeros(B, 0, 0), sent, torch.zeros(B, 0, dtype=torch.bool, device=dev)
        return self._features(self.texts_of(index, cap), dev)

    @torch.no_grad()
    def captions(self, captions: list[str]):
        """The same triple for caption texts (sample grids)."""
        self.encoder.eval()
        return self._features(list(captions), self.encoder.device)

    def _features(self, texts: list[str], device):
        f = self.encoder.encode(texts)
        return f.words_bdt.to(device), f.sentence.to(device), f.mask.to(device)
