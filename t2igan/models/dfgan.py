"""DF-GAN (Tao et al., "DF-GAN: A Simple and Effective Baseline for Text-to-Image
Synthesis", CVPR 2022).

Generator: noise -> 4x4 features -> up-blocks whose residual path is modulated by deep
text-image fusion (stacked text-conditioned affine transforms). Discriminator: a
down-sampling residual encoder (``NetD``) and a conditional head (``NetC``) on the 4x4
features concatenated with the sentence vector; trained with the hinge loss and the
matching-aware zero-centred gradient penalty (MA-GP).

Module and parameter names follow the official code (``NetG.fc``, ``GBlocks.N.fuse1.
affine0.fc_gamma.linear1``, ``NetD.conv_img``, ``DBlocks``, ``NetC.joint_conv``) so official
checkpoints map one to one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2igan.models.blocks import Affine, scaled_grad


def _channels(nf: int, imsize: int) -> list[int]:
    if imsize < 8 or 2 ** int(math.log2(imsize)) != imsize:
        raise ValueError(f"DF-GAN image size must be a power of two >= 8, got {imsize}")
    layer_num = int(math.log2(imsize)) - 1
    return [nf * min(2 ** i, 8) for i in range(layer_num)]  # widths at imsize, imsize/2, ..., 4


class DFBlock(nn.Module):
    """Deep fusion block: two (affine, LeakyReLU) pairs."""

    def __init__(self, cond_dim: int, in_ch: int):
        super().__init__()
        self.affine0 = Affine(cond_dim, in_ch)
        self.affine1 = Affine(cond_dim, in_ch)

    def forward(self, x, y):
        h = F.leaky_relu(self.affine0(x, y), 0.2)
        return F.leaky_relu(self.affine1(h, y), 0.2)


def upsample_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 stride-2 transposed-convolution kernel equal to a 3x3 convolution (padding 1) of
    the nearest-neighbour 2x upsampled input: ``[Cout, Cin, 3, 3] -> [Cin, Cout, 4, 4]``.

    Along each axis, output pixel ``2i`` of the 3x3 convolution sees upsampled pixels
    ``2i-1, 2i, 2i+1`` = input pixels ``i-1, i, i`` (taps ``w0``, ``w1 + w2``), and pixel
    ``2i+1`` sees ``i, i, i+1`` (taps ``w0 + w1``, ``w2``). A transposed convolution with stride 2
    and padding 1 sends input pixel ``j`` to output ``2j - 1 + k``, so its kernel is
    ``[w2, w1 + w2, w0 + w1, w0]`` per axis; zero padding maps to zero padding exactly."""
    w0, w1, w2 = weight.unbind(2)
    rows = torch.stack((w2, w1 + w2, w0 + w1, w0), 2)  # [Cout, Cin, 4, 3]
    c0, c1, c2 = rows.unbind(3)
    return torch.stack((c2, c1 + c2, c0 + c1, c0), 3).transpose(0, 1)


def upsample_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(F.interpolate(x, scale_factor=2))`` for a 3x3, stride 1, padding 1 ``conv``, computed
    on the low-resolution input: 16 instead of 36 multiply-adds per input pixel and channel pair
    (same function and parameters; outputs equal to float rounding)."""
    return F.conv_transpose2d(x, upsample_kernel(conv.weight), conv.bias, stride=2, padding=1)


class GBlock(nn.Module):
    """Nearest-neighbour 2x upsampling, then shortcut + (fuse, conv, fuse, conv).

    ``fused_upsample`` (set by ``train.fused_upsample``; off: the official order) computes the
    same block without materialising the upsampled input: the fusion (per-channel affines and
    LeakyReLU) and the 1x1 shortcut act pixel by pixel, so they commute with nearest-neighbour
    upsampling and run on a quarter of the pixels, and the upsample + 3x3 convolution is one
    stride-2 transposed convolution (:func:`upsample_conv3x3`)."""

    fused_upsample = False

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBlock(cond_dim, in_ch)
        self.fuse2 = DFBlock(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def forward(self, x, y):
        if self.upsample and self.fused_upsample:
            sc = F.interpolate(self.c_sc(x) if self.learnable_sc else x, scale_factor=2)
            return sc + self.c2(self.fuse2(upsample_conv3x3(self.fuse1(x, y), self.c1), y))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2)
        sc = self.c_sc(x) if self.learnable_sc else x
        h = self.c2(self.fuse2(self.c1(self.fuse1(x, y)), y))
        return sc + h


def set_fused_upsample(module: nn.Module, on: bool = True) -> int:
    """Switch every submodule that offers ``fused_upsample`` (DF-GAN ``GBlock``) to it; returns
    how many were switched."""
    n = 0
    for m in module.modules():
        if hasattr(type(m), "fused_upsample"):
            m.fused_upsample = on
            n += 1
    return n


class DBlock(nn.Module):
    """Down-sampling residual block with a learnt residual gain ``gamma`` (starts at 0)."""

    def __init__(self, fin: int, fout: int, downsample: bool = True):
        super().__init__()
        self.downsample = downsample
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1, 1, 0)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        res = self.conv_r(x)
        # The official block applies the 1x1 shortcut conv, then the 2x2 average pool. Both are
        # linear and act on different axes (channels / space), so they commute exactly in real
        # arithmetic; pooling first runs the conv on a quarter of the pixels and pools the
        # narrower input (same function, same parameters; outputs equal to float rounding).
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.learned_shortcut:
            x = self.conv_s(x)
        return x + self.gamma * res


class NetG(nn.Module):
    """DF-GAN generator: ``forward(noise [B, nz], sent [B, cond_dim]) -> image [B, 3, S, S]`` in [-1, 1]."""

    def __init__(self, ngf: int = 32, nz: int = 100, cond_dim: int = 256, imsize: int = 256, ch_size: int = 3):
        super().__init__()
        self.ngf, self.nz, self.cond_dim, self.imsize, self.ch_size = ngf, nz, cond_dim, imsize, ch_size
        self.config = dict(ngf=ngf, nz=nz, cond_dim=cond_dim, imsize=imsize, ch_size=ch_size)  # constructor arguments
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        chs = _channels(ngf, imsize)[::-1]
        self.GBlocks = nn.ModuleList(GBlock(cond_dim + nz, i, o) for i, o in zip(chs[:-1], chs[1:]))
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(chs[-1], ch_size, 3, 1, 1), nn.Tanh())

    def forward(self, noise: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        cond = torch.cat((noise, sent), dim=1)  # (B, nz + cond_dim)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


class NetD(nn.Module):
    """DF-GAN image encoder of the discriminator: image [B, 3, S, S] -> features [B, 8*ndf, 4, 4]."""

    def __init__(self, ndf: int = 32, imsize: int = 256, ch_size: int = 3):
        super().__init__()
        self.conv_img = nn.Conv2d(ch_size, ndf, 3, 1, 1)
        chs = _channels(ndf, imsize)
        self.DBlocks = nn.ModuleList(DBlock(i, o) for i, o in zip(chs[:-1], chs[1:]))

    def forward(self, x):
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(nn.Module):
    """DF-GAN conditional head: (features [B, 8*ndf, 4, 4], sent [B, cond_dim]) -> logit [B, 1, 1, 1]."""

    def __init__(self, ndf: int = 32, cond_dim: int = 256):
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, features, sent):
        y = sent.view(-1, self.cond_dim, 1, 1).expand(-1, -1, features.size(2), features.size(3))
        return self.joint_conv(torch.cat((features, y), 1))


def hinge_d(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.relu(1.0 - pred).mean() if real else F.relu(1.0 + pred).mean()


def matching_aware_gp(pred_real, images, sent, weight: float = 2.0, power: float = 6.0,
                      inv_scale: torch.Tensor | None = None) -> torch.Tensor:
    """MA-GP: ``weight * mean(||d pred / d (image, sent)||_2 ** power)`` on real, matching pairs.

    ``inv_scale``: 1 / the fp16 loss scale; the gradients are taken of the scaled sum (so that
    they do not underflow in half precision) and unscaled before the norm."""
    gi, gs = scaled_grad(pred_real.float().sum(), (images, sent), inv_scale)
    grad = torch.cat((gi.flatten(1), gs.flatten(1)), dim=1)
    return weight * grad.pow(2).sum(1).sqrt().pow(power).mean()
