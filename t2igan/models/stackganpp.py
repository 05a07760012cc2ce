"""StackGAN++ (Zhang et al., "StackGAN++: Realistic Image Synthesis with Stacked Generative
Adversarial Networks", TPAMI 2018), conditional version.

One generator tree draws ``branch_num`` images (``base_size * 2**k``); each scale has its own
discriminator with a conditional and an unconditional head (joint conditional-unconditional
loss), and the generator is also pulled towards colour consistency between scales.

Names follow hanzhanggit/StackGAN-v2 ``code/model.py`` (``G_NET.ca_net``, ``h_net1..3``
(``INIT_STAGE_G``/``NEXT_STAGE_G`` with ``jointConv``, ``residual``, ``upsample``),
``img_net1..3``; ``D_NET64/128/256``: ``img_code_s16``, ``img_code_s32``, ..., ``logits``,
``jointConv``, ``uncond_logits``). Defaults: ``code/cfg/birds_3stages.yml``. Heads return
logits (the official ``nn.Sigmoid`` + ``BCELoss`` is ``BCEWithLogits`` here).

``hdgan=True`` gives HDGAN-style discriminators (Zhang, Xie & Yang, "Photographic
Text-to-Image Synthesis with a Hierarchically-nested Adversarial Network", CVPR 2018; code
ypxie/HDGan): the per-scale discriminators are the hierarchically-nested side outputs; the
unconditional head scores every cell of the 4x4 code (the local "image loss", HDGAN's
``local_img_disc``) instead of the whole image, the conditional head gives the global "pair
loss" with matching-aware (wrong caption) negatives, and both use HDGAN's least-squares
losses (see :class:`t2igan.families.stackganpp.StackGANppStep`). HDGAN's own generator (residual
``scale_N`` blocks) is not ported; the StackGAN++ tree generator is used.
"""
from __future__ import annotations

import torch
from torch import nn

from t2igan.models.blocks import ImageCode, NextStageTrunk, TreeGenerator, block3x3_glu, block3x3_leaky


class NEXT_STAGE_G(NextStageTrunk, nn.Module):  # noqa: N801
    """``cat(c_code replicated, h)`` -> jointConv (GLU) -> residual blocks -> 2x upsample to ngf/2."""

    def __init__(self, ngf: int, efg: int, num_residual: int = 2):
        super().__init__()
        self.ef_dim = efg
        self.jointConv = block3x3_glu(ngf + efg, ngf)
        self.build_trunk(ngf, num_residual)

    def forward(self, h_code, c_code):
        c = c_code.view(-1, self.ef_dim, 1, 1).expand(-1, -1, h_code.size(2), h_code.size(3))
        return self.trunk(self.jointConv(torch.cat((c, h_code), 1)))


class G_NET(TreeGenerator):  # noqa: N801
    """``run(noise, sent, eps=None) -> GenOutput(images per branch, mu, logvar)``; every later
    branch halves the width (``gf_dim / 2**(k - 2)`` into branch k)."""

    def __init__(self, t_dim: int = 1024, c_dim: int = 128, nz: int = 100, gf_dim: int = 64, r_num: int = 2,
                 branch_num: int = 3, base_size: int = 64):
        super().__init__(t_dim, c_dim, nz, gf_dim, r_num, branch_num, base_size)

    def make_stage(self, k: int) -> tuple[nn.Module, int]:
        ngf = self.config["gf_dim"] // 2 ** (k - 2)
        return NEXT_STAGE_G(ngf, self.config["c_dim"], self.config["r_num"]), ngf // 2


class D_NET(ImageCode, nn.Module):  # noqa: N801
    """D_NET64/128/256 by ``imsize``: ``forward(x, c_code) -> [cond logits [B], uncond logits
    [B] (or [B, 16] local patches with hdgan)]``."""

    def __init__(self, imsize: int = 64, df_dim: int = 64, c_dim: int = 128, hdgan: bool = False):
        nn.Module.__init__(self)
        self.ef_dim, self.hdgan = c_dim, hdgan
        ndf = df_dim
        self.build_image_code(ndf, imsize)
        self.logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4))
        self.jointConv = block3x3_leaky(ndf * 8 + c_dim, ndf * 8)
        if hdgan:  # one logit per 4x4 cell: local image loss
            self.uncond_logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=1, stride=1))
        else:
            self.uncond_logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4))

    def forward(self, x_var, c_code):
        x_code = self.image_code(x_var)  # (B, 8ndf, 4, 4)
        c = c_code.view(-1, self.ef_dim, 1, 1).expand(-1, -1, 4, 4)
        h_c = self.jointConv(torch.cat((c, x_code), 1))
        out = self.logits(h_c).view(-1)
        unc = self.uncond_logits(x_code)
        return [out, unc.flatten(1) if self.hdgan else unc.view(-1)]
