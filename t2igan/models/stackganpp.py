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
losses (see :class:`t2igan.train.classic.StackGANppStep`). HDGAN's own generator (residual
``scale_N`` blocks) is not ported; the StackGAN++ tree generator is used.
"""
from __future__ import annotations

import torch
from torch import nn

from t2igan.models.blocks import (CA_NET, GET_IMAGE_G, INIT_STAGE_G, GenOutput, ImageCode, ResBlockGLU,
                                  block3x3_glu, block3x3_leaky, tree_upsamplings, up_block_glu)


class NEXT_STAGE_G(nn.Module):  # noqa: N801
    """``cat(c_code replicated, h)`` -> jointConv (GLU) -> residual blocks -> 2x upsample to ngf/2."""

    def __init__(self, ngf: int, efg: int, num_residual: int = 2):
        super().__init__()
        self.ef_dim = efg
        self.jointConv = block3x3_glu(ngf + efg, ngf)
        self.residual = nn.Sequential(*[ResBlockGLU(ngf) for _ in range(num_residual)])
        self.upsample = up_block_glu(ngf, ngf // 2)

    def forward(self, h_code, c_code):
        c = c_code.view(-1, self.ef_dim, 1, 1).expand(-1, -1, h_code.size(2), h_code.size(3))
        return self.upsample(self.residual(self.jointConv(torch.cat((c, h_code), 1))))


class G_NET(nn.Module):  # noqa: N801
    """``run(noise, sent, eps=None) -> GenOutput(images per branch, mu, logvar)``."""

    def __init__(self, t_dim: int = 1024, c_dim: int = 128, nz: int = 100, gf_dim: int = 64, r_num: int = 2,
                 branch_num: int = 3, base_size: int = 64):
        super().__init__()
        self.config = dict(t_dim=t_dim, c_dim=c_dim, nz=nz, gf_dim=gf_dim, r_num=r_num, branch_num=branch_num,
                           base_size=base_size)
        n_up = tree_upsamplings(branch_num, base_size)
        self.nz, self.c_dim, self.eps_dims, self.branch_num = nz, c_dim, (c_dim,), branch_num
        self.imsize = base_size * 2 ** (branch_num - 1)
        self.ca_net = CA_NET(t_dim, c_dim, glu=True)
        self.h_net1 = INIT_STAGE_G(gf_dim * 2 ** n_up, nz + c_dim, n_up)  # official: gf_dim * 16
        self.img_net1 = GET_IMAGE_G(gf_dim)
        for k in range(2, branch_num + 1):
            ngf = gf_dim // 2 ** (k - 2)
            self.add_module(f"h_net{k}", NEXT_STAGE_G(ngf, c_dim, r_num))
            self.add_module(f"img_net{k}", GET_IMAGE_G(ngf // 2))

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        c_code, mu, logvar = self.ca_net(sent, eps)
        h = self.h_net1(noise, c_code)
        images = [self.img_net1(h)]
        for k in range(2, self.branch_num + 1):
            h = getattr(self, f"h_net{k}")(h, c_code)
            images.append(getattr(self, f"img_net{k}")(h))
        return GenOutput(images=images, mu=mu, logvar=logvar)

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent).images[-1]


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
