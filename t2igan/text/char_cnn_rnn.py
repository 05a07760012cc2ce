"""Reed et al.'s hybrid character CNN-RNN text encoder and its symmetric joint embedding
(SJE) training (Reed, Akata, Lee, Schiele, "Learning Deep Representations of Fine-Grained
Visual Descriptions", CVPR 2016; the encoder of GAN-INT-CLS and StackGAN's
``char-CNN-RNN-embeddings.pickle``).

Input: a caption as a one-hot matrix ``[B, doc_length=201, 70]`` over the official
70-character alphabet (Reed's ``alphabet`` string, which lists '-' twice; as in the Lua
``dict``, the later position wins, so column 36 is never set). Characters outside the
alphabet and those past ``doc_length`` give all-zero rows, as in ``txt2img_demo.lua``.
Captions are lowercased first (Reed's data is lowercase; the demo leaves upper-case
letters as zero rows).

Network (``modules/HybridCNNLong.lua``, the pretrained CUB/flowers models)::

    TemporalConvolution(70, 384, 4) Threshold TemporalMaxPooling(3, 3)     201 -> 66
    TemporalConvolution(384, 512, 4) Threshold TemporalMaxPooling(3, 3)     66 -> 21
    TemporalConvolution(512, cnn_dim, 4) Threshold                          21 -> 18
    FixedGRU(18 steps, avg) or FixedRNN -> Dropout -> Linear(cnn_dim, emb_dim)

``variant="short"`` is ``modules/HybridCNN.lua`` (one more TemporalMaxPooling(3, 2): 8
steps). ``FixedGRU`` is not ``nn.GRU``: the first step is ``tanh(i2h(x))`` with no gates,
and the reset gate multiplies the previous state *before* ``h2h``; ``FixedRNN`` is a ReLU
RNN whose output is always the mean over steps. Parameter names follow the Lua variable
names (``i2h_update``, ``h2h_reset``, ...), so :mod:`t2igan.convert.reed_t7` maps a ``.t7``
checkpoint onto them.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.text.base import CaptionEncoder, TextFeatures, check_captions

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
CHAR_INDEX = {c: i for i, c in enumerate(ALPHABET)}  # later duplicates win, as Reed's Lua dict ('-' -> 59)
DOC_LENGTH = 201
KIND = "char_cnn_rnn"


def encode_chars(captions: list[str], doc_length: int = DOC_LENGTH, lowercase: bool = True) -> torch.Tensor:
    """One-hot ``[B, doc_length, 70]`` float (Reed's ``txt`` tensor)."""
    captions = check_captions(captions)
    out = torch.zeros(len(captions), doc_length, len(ALPHABET))
    for b, cap in enumerate(captions):
        text = cap.lower() if lowercase else cap
        idx = [(t, CHAR_INDEX[ch]) for t, ch in enumerate(text[:doc_length]) if ch in CHAR_INDEX]
        if idx:
            t, c = zip(*idx)
            out[b, list(t), list(c)] = 1.0
    return out


def num_steps(doc_length: int, variant: str) -> int:
    """RNN steps left after the CNN (201 -> 18 for ``long``, 8 for ``short``)."""
    n = (doc_length - 3) // 3
    n = (n - 3) // 3
    n = n - 3
    if variant == "short":
        n = (n - 3) // 2 + 1
    return n


class FixedGRU(nn.Module):
    """Reed's ``modules/FixedGRU.lua``: weights shared over steps, first step ``tanh(i2h(x_1))``."""

    def __init__(self, dim: int, avg: bool = True):
        super().__init__()
        self.avg = avg
        for n in ("i2h_update", "h2h_update", "i2h_reset", "h2h_reset", "i2h", "h2h"):
            setattr(self, n, nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x (B, S, D)
        h = torch.tanh(self.i2h(x[:, 0]))
        hs = [h]
        for t in range(1, x.size(1)):
            xt = x[:, t]
            z = torch.sigmoid(self.i2h_update(xt) + self.h2h_update(h))
            r = torch.sigmoid(self.i2h_reset(xt) + self.h2h_reset(h))
            cand = torch.tanh(self.i2h(xt) + self.h2h(r * h))
            h = z * cand + (1 - z) * h
            hs.append(h)
        states = torch.stack(hs, 1)  # (B, S, D)
        return (states.mean(1) if self.avg else h), states


class FixedRNN(nn.Module):
    """Reed's ``modules/FixedRNN.lua``: ReLU RNN, output = mean of all steps (``avg`` is ignored there too)."""

    def __init__(self, dim: int, avg: bool = True):
        super().__init__()
        self.avg = avg
        self.i2h = nn.Linear(dim, dim)
        self.h2h = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.i2h(x[:, 0]))
        hs = [h]
        for t in range(1, x.size(1)):
            h = F.relu(self.i2h(x[:, t]) + self.h2h(h))
            hs.append(h)
        states = torch.stack(hs, 1)
        return states.mean(1), states


def _threshold(x: torch.Tensor) -> torch.Tensor:
    return F.threshold(x, 1e-6, 0.0)  # Torch7 nn.Threshold() defaults: th=1e-6, v=0


class CharCNNRNN(nn.Module):
    """Hybrid char-CNN-RNN. ``forward(onehot [B, L, 70]) -> (embedding [B, emb_dim], rnn states [B, S, cnn_dim])``."""

    def __init__(
        self,
        alphasize: int = len(ALPHABET),  # one-hot width
        emb_dim: int = 1024,  # output embedding (StackGAN's char-CNN-RNN embeddings: 1024)
        cnn_dim: int = 512,  # last conv width = RNN width (pretrained models: c512)
        rnn_type: str = "gru",  # gru (FixedGRU) | rnn (FixedRNN)
        avg: bool = True,  # time-average the GRU states (pretrained models: a1)
        dropout: float = 0.0,  # before the output Linear
        doc_length: int = DOC_LENGTH,  # characters per caption
        variant: str = "long",  # long (HybridCNNLong, 18 steps) | short (HybridCNN, 8 steps)
    ):
        super().__init__()
        if rnn_type not in ("gru", "rnn"):
            raise T2IError(f"char-CNN-RNN rnn_type must be 'gru' or 'rnn', got {rnn_type!r}")
        if variant not in ("long", "short"):
            raise T2IError(f"char-CNN-RNN variant must be 'long' or 'short', got {variant!r}")
        self.nstep = num_steps(doc_length, variant)
        if self.nstep < 1:
            raise T2IError(f"char-CNN-RNN doc_length={doc_length} is too short for the CNN")
        self.alphasize, self.emb_dim, self.cnn_dim, self.doc_length = alphasize, emb_dim, cnn_dim, doc_length
        self.rnn_type, self.avg, self.variant = rnn_type, avg, variant
        self.conv1 = nn.Conv1d(alphasize, 384, 4)
        self.conv2 = nn.Conv1d(384, 512, 4)
        self.conv3 = nn.Conv1d(512, cnn_dim, 4)
        self.rnn = (FixedGRU if rnn_type == "gru" else FixedRNN)(cnn_dim, avg)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(cnn_dim, emb_dim)
        for p in self.parameters():  # train_sje_hybrid.lua: params:uniform(-0.08, 0.08)
            nn.init.uniform_(p, -0.08, 0.08)

    def config(self) -> dict:
        return dict(alphasize=self.alphasize, emb_dim=self.emb_dim, cnn_dim=self.cnn_dim, rnn_type=self.rnn_type,
                    avg=self.avg, dropout=self.drop.p, doc_length=self.doc_length, variant=self.variant)

    def forward(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = onehot.transpose(1, 2)  # (B, 70, L)
        x = F.max_pool1d(_threshold(self.conv1(x)), 3, 3)
        x = F.max_pool1d(_threshold(self.conv2(x)), 3, 3)
        x = _threshold(self.conv3(x))
        if self.variant == "short":
            x = F.max_pool1d(x, 3, 2)
        hid, states = self.rnn(x.transpose(1, 2))  # (B, cnn_dim), (B, S, cnn_dim)
        return self.linear(self.drop(hid)), states


class CharCNNRNNCaptionEncoder(CaptionEncoder):
    """Captions -> :class:`CharCNNRNN`. Word-level features are the RNN states (``cnn_dim``
    wide, one per CNN output position, all unmasked)."""

    name = KIND

    def __init__(self, model: CharCNNRNN, lowercase: bool = True):
        super().__init__()
        self.model, self.lowercase = model, lowercase
        self.sentence_dim, self.word_dim = model.emb_dim, model.cnn_dim

    def identity(self) -> dict:
        return {"name": self.name, **self.model.config(), "lowercase": self.lowercase}

    def onehot(self, captions: list[str]) -> torch.Tensor:
        return encode_chars(captions, self.model.doc_length, self.lowercase).to(self.device)

    def encode(self, captions: list[str]) -> TextFeatures:
        emb, states = self.model(self.onehot(captions))
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        return TextFeatures(states, emb, mask)

    def save_pretrained(self, directory) -> None:
        ckpt.save_component(self.model, directory, KIND, {**self.model.config(), "lowercase": self.lowercase})

    @classmethod
    def from_pretrained(cls, directory) -> "CharCNNRNNCaptionEncoder":
        """A char-CNN-RNN component folder, or a pipeline/run folder holding ``text_encoder/``."""
        d = Path(directory)
        for cand in (d, d / "text_encoder", d / "pipeline" / "text_encoder"):
            if (cand / ckpt.CONFIG).is_file():
                d = cand
                break
        cfg, state = ckpt.read_component(d, KIND)
        lowercase = bool(cfg.pop("lowercase", True))
        try:
            model = CharCNNRNN(**cfg)
        except TypeError as e:
            raise T2IError(f"{d / ckpt.CONFIG}: bad arguments ({e})") from None
        ckpt.load_state_strict(model, state, str(d))
        return cls(model, lowercase).eval()
