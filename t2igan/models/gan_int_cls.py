"""GAN-INT-CLS (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016).

DCGAN generator and discriminator at 64x64 conditioned on a sentence embedding that is
first projected (``Linear -> LeakyReLU(0.2)``, Reed's ``nt = 128``). The generator
concatenates the projection with the noise; the discriminator replicates it spatially at
4x4 and concatenates it with the image features. Trained with the matching-aware (CLS)
loss and the interpolation (INT) term, see :class:`t2igan.families.gan_int_cls.GANINTCLSStep`.

Reed's code is Lua Torch; module names follow the widely used PyTorch port
(``projection``, ``netG``; ``netD_1``, ``projector``, ``netD_2``). Defaults are Reed's
``main_cls_int.lua`` (``ngf = 128, ndf = 64, nz = 100, nt = 128``, 64x64); the extra
residual 1x1/3x3 conv branches of that Lua code are left out (the DCGAN core is kept).
"""
from __future__ import annotations

import torch
from torch import nn

from t2igan.models.blocks import GenOutput, log2_int


def _projection(t_dim: int, nt: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(t_dim, nt), nn.LeakyReLU(0.2, inplace=True))


class NetG(nn.Module):
    """``forward(noise [B, nz], sent [B, t_dim]) -> image [B, 3, S, S]`` in [-1, 1]."""

    def __init__(self, t_dim: int = 256, nt: int = 128, nz: int = 100, ngf: int = 128, imsize: int = 64):
        super().__init__()
        self.config = dict(t_dim=t_dim, nt=nt, nz=nz, ngf=ngf, imsize=imsize)
        self.t_dim, self.nz, self.imsize, self.eps_dims = t_dim, nz, imsize, ()
        n_up = log2_int(imsize, "GAN-INT-CLS image size") - 2  # 4 -> imsize
        if n_up < 1:
            raise ValueError(f"GAN-INT-CLS image size must be >= 8, got {imsize}")
        self.projection = _projection(t_dim, nt)
        chs = [ngf * 2 ** (n_up - 1 - i) for i in range(n_up)]  # 64px: 8ngf, 4ngf, 2ngf, ngf
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz + nt, chs[0], 4, 1, 0, bias=False), nn.BatchNorm2d(chs[0]),
                                   nn.ReLU(True)]
        for a, b in zip(chs[:-1], chs[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chs[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.netG = nn.Sequential(*layers)

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        h = torch.cat((noise, self.projection(sent)), 1)[:, :, None, None]  # (B, nz + nt, 1, 1)
        return GenOutput(images=[self.netG(h)])

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent).images[-1]


class NetD(nn.Module):
    """``forward(image, sent) -> logit [B]``; ``features(image)`` is the 4x4 image code."""

    def __init__(self, t_dim: int = 256, nt: int = 128, ndf: int = 64, imsize: int = 64):
        super().__init__()
        n_down = log2_int(imsize, "GAN-INT-CLS image size") - 2
        chs = [ndf * 2 ** i for i in range(n_down)]  # 64px: ndf .. 8ndf
        layers: list[nn.Module] = [nn.Conv2d(3, chs[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for a, b in zip(chs[:-1], chs[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, inplace=True)]
        self.netD_1 = nn.Sequential(*layers)
        self.projector = nn.Module()
        self.projector.projection = _projection(t_dim, nt)
        self.netD_2 = nn.Sequential(
            nn.Conv2d(chs[-1] + nt, chs[-1], 1, 1, 0, bias=False), nn.BatchNorm2d(chs[-1]),
            nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(chs[-1], 1, 4, 1, 0, bias=False))

    def features(self, image):
        return self.netD_1(image)  # (B, 8ndf, 4, 4)

    def logits(self, feat, sent):
        t = self.projector.projection(sent)[:, :, None, None].expand(-1, -1, feat.size(2), feat.size(3))
        return self.netD_2(torch.cat((feat, t), 1)).view(-1)

    def forward(self, image, sent):
        return self.logits(self.features(image), sent)
