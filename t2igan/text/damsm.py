"""DAMSM: the bi-LSTM text encoder, an image encoder and the word/sentence matching losses
(Xu et al., AttnGAN, CVPR 2018).

Text encoder parameter names follow the official ``RNN_ENCODER`` (``encoder``, ``rnn``)
so official ``text_encoder*.pth`` state dicts load after stripping nothing but a
``module.`` prefix. The official image encoder is an ImageNet Inception-v3; pretrained
weights cannot be assumed on a user's machine, so :class:`ImageEncoder` is a small CNN
trained from scratch with the same two outputs (region features and a global code,
projected by ``emb_features`` / ``emb_cnn_code`` as in the official ``CNN_ENCODER``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class TextEncoder(nn.Module):
    """Bi-LSTM over word embeddings.

    Returns word features ``[B, nef, T]`` (T = width of the token tensor), the sentence
    feature ``[B, nef]`` (final hidden states of both directions) and the word mask ``[B, T]``.
    """

    def __init__(
        self,
        ntoken: int,  # vocabulary size (index 0 = padding '<end>')
        ninput: int = 300,  # word embedding size
        nhidden: int = 256,  # nef: output feature size (both directions together)
        nlayers: int = 1,  # LSTM layers
        drop_prob: float = 0.5,  # dropout on the embeddings
        bidirectional: bool = True,
    ):
        super().__init__()
        self.ntoken, self.ninput, self.nlayers = ntoken, ninput, nlayers
        self.num_directions = 2 if bidirectional else 1
        self.nhidden = nhidden // self.num_directions
        self.nef = nhidden
        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        self.rnn = nn.LSTM(ninput, self.nhidden, nlayers, batch_first=True,
                           dropout=drop_prob if nlayers > 1 else 0.0, bidirectional=bidirectional)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)  # official init_weights

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        B, T = tokens.shape
        emb = self.drop(self.encoder(tokens))  # (B, T, ninput)
        packed = pack_padded_sequence(emb, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        output, (h, _c) = self.rnn(packed)
        output = pad_packed_sequence(output, batch_first=True, total_length=T)[0]  # (B, T, nef)
        words = output.transpose(1, 2)  # (B, nef, T)
        # last layer's final hidden state of each direction
        sent = h[-self.num_directions:].transpose(0, 1).reshape(B, self.nef)  # (B, nef)
        mask = torch.arange(T, device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
        return words, sent, mask


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True),
    )


class ImageEncoder(nn.Module):
    """CNN image encoder: region features ``[B, nef, S/8, S/8]`` and global code ``[B, nef]``.
    Input: float images in [-1, 1], ``[B, 3, S, S]``."""

    def __init__(self, nef: int = 256, width: int = 64, image_size: int = 64):
        super().__init__()
        self.nef, self.width, self.image_size = nef, width, image_size
        w = width
        self.features = nn.Sequential(_down(3, w), _down(w, 2 * w), _down(2 * w, 4 * w))  # S/8
        self.global_features = nn.Sequential(_down(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.emb_features = nn.Conv2d(4 * w, nef, 1, 1, 0, bias=False)
        self.emb_cnn_code = nn.Linear(8 * w, nef)

    def forward(self, x: torch.Tensor):
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        f = self.features(x)  # (B, 4w, S/8, S/8)
        code = self.emb_cnn_code(self.global_features(f))  # (B, nef)
        return self.emb_features(f), code


def sentence_loss(img_code: torch.Tensor, sent: torch.Tensor, gamma3: float = 10.0, mask: torch.Tensor | None = None):
    """Cross-entropy of cosine similarities, image->text and text->image (official sent_loss).

    ``mask`` (B, B) bool, optional: off-diagonal pairs left out of both softmaxes because they
    are not true negatives (official: images of the same class; ``masked_fill_(-inf)``)."""
    scores = F.normalize(img_code, dim=1, eps=1e-8) @ F.normalize(sent, dim=1, eps=1e-8).t() * gamma3  # (B_img, B_txt)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    labels = torch.arange(scores.size(0), device=scores.device)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def word_region_attention(words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor, gamma1: float):
    """Attention of every caption's words over every image's regions.

    words (C, D, T), mask (C, T), regions (I, D, H, W) -> region context per word (C, I, T, D)
    and attention (C, I, T, H*W) (softmax over regions, after a masked softmax over words).
    """
    I, D, H, W = regions.shape
    ctx = regions.reshape(I, D, H * W)  # (I, D, R)
    attn = torch.einsum("cdt,idr->cirt", words, ctx)  # (C, I, R, T)
    attn = attn.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(dim=-1)
    attn = (attn.transpose(2, 3) * gamma1).softmax(dim=-1)  # (C, I, T, R)
    weighted = torch.einsum("citr,idr->citd", attn, ctx)  # (C, I, T, D)
    return weighted, attn


def words_loss(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
               gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0):
    """DAMSM word-level loss (the official ``words_loss``), vectorised over captions.

    The cosine between each word and its attended region context is computed without
    materialising the (C, I, T, D) context: ``w . (A ctx) = A (w . ctx)`` and
    ``|A ctx|^2 = A G A^T`` with the per-image region Gram matrix ``G = ctx^T ctx``.
    """
    C, D, T = words.shape
    I, _, H, W = regions.shape
    R = H * W
    ctx = regions.reshape(I, D, R)  # (I, D, R)
    raw = (words.transpose(1, 2).reshape(C * T, D) @ ctx.permute(1, 0, 2).reshape(D, I * R))  # (C*T, I*R)
    raw = raw.view(C, T, I, R).permute(0, 2, 3, 1)  # (C, I, R, T): word . region
    attn = raw.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(dim=-1)  # over words
    attn = (attn.transpose(2, 3) * gamma1).softmax(dim=-1)  # (C, I, T, R) over regions
    dot = (attn * raw.transpose(2, 3)).sum(-1)  # (C, I, T): word . context
    gram = ctx.transpose(1, 2) @ ctx  # (I, R, R)
    ctx_sq = (torch.einsum("citr,irs->cits", attn, gram) * attn).sum(-1)  # (C, I, T): |context|^2
    w_norm = words.norm(dim=1)[:, None, :]  # (C, 1, T)
    sim = dot / (w_norm * ctx_sq.clamp(min=0).sqrt()).clamp(min=1e-8)  # cosine, (C, I, T)
    sim = (sim * gamma2).exp().masked_fill(~mask[:, None, :], 0.0).sum(-1).clamp(min=1e-30).log()  # (C, I)
    scores = sim.t() * gamma3  # (I, C): image i vs caption c
    labels = torch.arange(scores.size(0), device=scores.device)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)
