"""AttnGAN (Xu et al., "AttnGAN: Fine-Grained Text to Image Generation with Attentional
Generative Adversarial Networks", CVPR 2018).

The first stage draws from noise and the conditioning-augmented sentence; every later stage
attends over the words (``GlobalAttentionGeneral``: each sub-region gets a word-context
vector, softmax over the words), joins it with the image features, refines and upsamples.
The generator is trained with per-scale conditional + unconditional GAN losses and the
DAMSM word + sentence matching loss on the last image (``TRAIN.SMOOTH.LAMBDA``).

Names follow taoxugit/AttnGAN ``code/model.py`` (``G_NET.ca_net``, ``h_net1``
(``INIT_STAGE_G``), ``h_net2/3`` (``NEXT_STAGE_G``: ``att.conv_context``, ``residual``,
``upsample``), ``img_net1..3``; ``D_NET64/128/256``: ``img_code_s16``, ..., ``COND_DNET``
(``jointConv``, ``outlogits``), ``UNCOND_DNET``). Defaults: ``code/cfg/bird_attn2.yml`` with
``code/miscc/config.py`` (``GF_DIM 32, DF_DIM 64, CONDITION_DIM 100, R_NUM 2``, 3 branches).

With the same weights and CA noise the generator's images and attention maps equal the
official ``G_NET``'s (tests/test_classic.py::test_outputs_match_the_official_code) for
captions without padding. With padding they differ on purpose: the official
``GlobalAttentionGeneral`` tiles the padding mask as ``mask.repeat(queryL, 1)`` over rows
ordered batch-major, so the rows of one caption get the masks of others; here each caption's
padded words get exactly 0 attention. ``G_NET.attention_mask = "official"`` switches to the
official tiling (``Pipeline.attention_mask``, ``t2igan sample --attention-mask official``), for
outputs identical to the official code on padded batches too.
"""
from __future__ import annotations

import torch
from torch import nn

from t2igan.models.blocks import (GlobalAttentionGeneral, ImageCode, NextStageTrunk, TreeGenerator, block3x3_leaky,
                                  masked_word_softmax)

ATTENTION_MASKS = ("corrected", "official")


def official_word_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over words with the official padding mask: ``scores [B, Q, T]``, ``mask [B, T]``
    (True = real word). The official code flattens the scores to ``[B*Q, T]`` (rows batch-major)
    and masks them with ``mask.repeat(Q, 1)``, so row ``b*Q + q`` gets the mask of caption
    ``(b*Q + q) % B``: with one caption, or captions of one length, it is the true mask; in a
    padded batch regions attend to padding of their caption and ignore words of it."""
    if mask is None:
        return scores.softmax(dim=-1)
    B, Q, T = scores.shape
    rows = torch.arange(B * Q, device=scores.device) % B  # official mask.repeat(queryL, 1)
    tiled = mask[rows].reshape(B, Q, T)
    return scores.masked_fill(~tiled, float("-inf")).softmax(dim=-1)


def attention_softmax(scores: torch.Tensor, mask: torch.Tensor | None, official: bool) -> torch.Tensor:
    return official_word_softmax(scores, mask) if official else masked_word_softmax(scores, mask)


class ATT_NET(GlobalAttentionGeneral):  # noqa: N801 - the official import name of GlobalAttentionGeneral
    """:class:`GlobalAttentionGeneral` with the switch ``official_mask`` (set through
    ``G_NET.attention_mask``): False (default) gives padded words exactly 0 attention, True
    reproduces the official mask tiling (:func:`official_word_softmax`)."""

    official_mask = False

    def forward(self, input, context, mask=None):
        if not self.official_mask or mask is None:
            return super().forward(input, context, mask)
        B, idf, ih, iw = input.shape
        target = input.reshape(B, idf, ih * iw).transpose(1, 2)  # (B, Q, idf)
        source = self.conv_context(context.unsqueeze(3)).squeeze(3)  # (B, idf, T)
        attn = official_word_softmax(target @ source, mask).transpose(1, 2)  # (B, T, Q)
        weighted = (source @ attn).reshape(B, idf, ih, iw)
        return weighted, attn.reshape(B, -1, ih, iw)


class NEXT_STAGE_G(NextStageTrunk, nn.Module):  # noqa: N801
    """Word attention -> ``cat(h, word context)`` -> residual blocks -> 2x upsample (width ngf)."""

    def __init__(self, ngf: int, nef: int, ncf: int, num_residual: int = 2):
        super().__init__()
        self.att = ATT_NET(ngf, nef)
        self.build_trunk(ngf * 2, num_residual)

    def forward(self, h_code, c_code, word_embs, mask):
        c, att = self.att(h_code, word_embs, mask)
        return self.trunk(torch.cat((h_code, c), 1)), att


class G_NET(TreeGenerator):  # noqa: N801
    """``run(noise, sent, words [B, nef, T], mask [B, T], eps=None) -> GenOutput(images,
    attention per attended stage [B, T, h, w], mu, logvar)``; every branch has width ``gf_dim``."""

    attends_words = True
    next_stage = NEXT_STAGE_G  # MirrorGAN swaps in its GLAM stage

    def __init__(self, t_dim: int = 256, c_dim: int = 100, nz: int = 100, gf_dim: int = 32, r_num: int = 2,
                 branch_num: int = 3, base_size: int = 64, w_dim: int | None = None):
        """``w_dim``: width of the word features the stages attend over (None: ``t_dim``, as DAMSM
        gives both; another encoder may give other widths, e.g. Reed's char-CNN-RNN 512 and 1024)."""
        self.w_dim = t_dim if w_dim is None else w_dim
        super().__init__(t_dim, c_dim, nz, gf_dim, r_num, branch_num, base_size)
        if w_dim is not None and w_dim != t_dim:
            self.config["w_dim"] = w_dim  # saved only when it differs: official-shape configs stay as they were

    def make_stage(self, k: int) -> tuple[nn.Module, int]:
        cfg = self.config
        return self.next_stage(cfg["gf_dim"], self.w_dim, cfg["c_dim"], cfg["r_num"]), cfg["gf_dim"]

    @property
    def attention_mask(self) -> str:
        """How padded words are masked in the word attention: ``corrected`` (default: they get 0
        attention) or ``official`` (the official mask tiling, :func:`official_word_softmax`).
        Not part of the weights or the config; set it for official-identical padded batches."""
        return self.__dict__.get("_attention_mask", "corrected")

    @attention_mask.setter
    def attention_mask(self, value: str) -> None:
        if value not in ATTENTION_MASKS:
            raise ValueError(f"attention_mask must be one of {', '.join(ATTENTION_MASKS)}, got {value!r}")
        self.__dict__["_attention_mask"] = value
        for k in range(2, self.branch_num + 1):
            getattr(self, f"h_net{k}").att.official_mask = value == "official"


class D_GET_LOGITS(nn.Module):  # noqa: N801
    def __init__(self, ndf: int, nef: int, bcondition: bool = False):
        super().__init__()
        self.ef_dim, self.bcondition = nef, bcondition
        if bcondition:
            self.jointConv = block3x3_leaky(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4))

    def forward(self, h_code, c_code=None):
        if self.bcondition and c_code is not None:
            c = c_code.view(-1, self.ef_dim, 1, 1).expand(-1, -1, 4, 4)
            h_code = self.jointConv(torch.cat((h_code, c), 1))
        return self.outlogits(h_code).view(-1)


class D_NET(ImageCode, nn.Module):  # noqa: N801
    """D_NET64/128/256 by ``imsize``; ``forward(x) -> code [B, 8ndf, 4, 4]``; heads
    ``COND_DNET(code, sent)`` and ``UNCOND_DNET(code)`` give logits [B]."""

    def __init__(self, imsize: int = 64, df_dim: int = 64, nef: int = 256, b_jcu: bool = True):
        nn.Module.__init__(self)
        self.build_image_code(df_dim, imsize)
        self.UNCOND_DNET = D_GET_LOGITS(df_dim, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(df_dim, nef, bcondition=True)

    def forward(self, x_var):
        return self.image_code(x_var)
