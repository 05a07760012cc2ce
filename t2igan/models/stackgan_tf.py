"""StackGAN v1 as released in TensorFlow (hanzhanggit/StackGAN: TF 0.12 + prettytensor), for
generation from its checkpoints (``birds_model_164000.ckpt`` ...).

It is not StackGAN-Pytorch (:mod:`t2igan.models.stackgan`): the stage-I generator has residual
blocks at 4x4 and 8x8 (``stageI/model.py`` ``generator``), the conditioning augmentation puts a
leaky ReLU (0.2) over both the mean and the log-sigma (``generate_condition``), the fc layer has a
bias, the convolutions none (``misc/custom_ops.py`` ``custom_conv2d``) and use TensorFlow
``'SAME'`` padding, batch norm is ``tf.nn.batch_norm_with_global_normalization`` on the moving
``mean`` / ``variance`` at test phase (``conv_batch_norm`` / ``fc_batch_norm``, epsilon 1e-5), and
upsampling is ``tf.image.resize_nearest_neighbor`` (TF 0.12: no align_corners, no half-pixel
centres, i.e. source index ``floor(dst * in / out)``, what ``F.interpolate(mode="nearest")`` does).

Module names are the prettytensor method scopes of the official graph, in their creation order
(``custom_fully_connected``, ``custom_fully_connected_1``, ``fc_batch_norm``, ``custom_conv2d``,
``custom_conv2d_1``, ..., ``conv_batch_norm_k``), so ``g_net/custom_conv2d_3/custom_conv2d_3/w``
is ``custom_conv2d_3.weight`` (stage I) or ``g_net.custom_conv2d_3.weight`` (stage II).
Tensors are NCHW; the converter (:mod:`t2igan.convert.stackgan_tf`) turns the NHWC / HWIO
checkpoint into this layout (kernels HWIO -> OIHW, fc ``Matrix [in, out]`` -> ``weight [out,
in]``); the fc output is read as NHWC ``[B, s16, s16, 8 gf]`` and permuted, as the official
``reshape`` does.

Official configuration (``stageI/cfg/birds.yml``, ``stageII/cfg/birds.yml``): ``GF_DIM 128,
EMBEDDING_DIM 128, Z_DIM 100``, char-CNN-RNN sentences of 1024, 64 -> 256. Generation only
(batch norm always uses the moving statistics, as the official sampler and demo do).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2igan.models.blocks import GenOutput


class TFBatchNorm(nn.Module):
    """``conv_batch_norm`` / ``fc_batch_norm`` at test phase over channel dim 1 of ``[B, C]`` or
    ``[B, C, H, W]``: ``x * inv + (beta - mean * inv)``, ``inv = gamma / sqrt(variance + eps)``
    (the arithmetic of ``tf.nn.batch_normalization``)."""

    def __init__(self, num: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(num))
        self.beta = nn.Parameter(torch.zeros(num))
        self.register_buffer("mean", torch.zeros(num))
        self.register_buffer("variance", torch.ones(num))

    def forward(self, x):
        inv = torch.rsqrt(self.variance + self.eps) * self.gamma
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * inv.view(shape) + (self.beta - self.mean * inv).view(shape)


class TFConv2d(nn.Module):
    """``custom_conv2d``: no bias, TensorFlow ``'SAME'`` padding (total ``max((ceil(n/s)-1)*s + k - n, 0)``,
    the smaller half before), ``weight [out, in, k, k]``."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__()
        self.k, self.stride = k, stride
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k) * 0.02)

    def forward(self, x):  # [B, c_in, H, W] -> [B, c_out, ceil(H/s), ceil(W/s)]
        pads = []
        for n in (x.size(3), x.size(2)):  # F.pad order: W then H
            total = max((math.ceil(n / self.stride) - 1) * self.stride + self.k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, stride=self.stride)


def _leaky(x):
    return torch.maximum(x, 0.2 * x)  # misc/custom_ops.py leaky_rectify(x, 0.2)


def _up(x, size: int):
    return F.interpolate(x, size=(size, size), mode="nearest")  # tf.image.resize_nearest_neighbor (TF 0.12)


class _Scoped(nn.Module):
    """Children named as prettytensor names its method scopes: ``kind``, ``kind_1``, ``kind_2``, ..."""

    def __init__(self):
        super().__init__()
        self._counts: dict[str, int] = {}

    def scoped(self, kind: str, module: nn.Module, ref: str = "") -> nn.Module:
        """Register ``module`` under the next scope name of ``kind``; ``ref``: also an attribute (not a second child)."""
        if ref:
            object.__setattr__(self, ref, module)
        n = self._counts.get(kind, 0)
        self._counts[kind] = n + 1
        self.add_module(kind if n == 0 else f"{kind}_{n}", module)
        return module

    def conv(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, ref: str = "") -> TFConv2d:
        return self.scoped("custom_conv2d", TFConv2d(c_in, c_out, k, stride), ref)

    def bn(self, num: int) -> TFBatchNorm:
        return self.scoped("conv_batch_norm", TFBatchNorm(num))

    def condition(self, sent, eps):
        """``generate_condition`` + ``sample_encoded_context``: (c, mean, log_sigma), each ``[B, ef_dim]``."""
        cond = _leaky(self.ca(sent))
        mean, log_sigma = cond[:, :self.ef_dim], cond[:, self.ef_dim:]
        if eps is None:  # official: tf.truncated_normal (N(0, 1) redrawn beyond 2 sigma)
            eps = nn.init.trunc_normal_(torch.empty_like(mean), 0.0, 1.0, -2.0, 2.0)
        return mean + torch.exp(log_sigma) * eps, mean, log_sigma


class StageIGenerator(_Scoped):
    """``g_net`` of ``stageI/model.py``: ``run(noise [B, nz], sent [B, t_dim], eps [B, ef_dim]) ->
    GenOutput([image [B, 3, s, s]], mu, logvar)``.

    ``t_dim``: sentence width (char-CNN-RNN 1024); ``ef_dim``: GAN.EMBEDDING_DIM (condition width);
    ``nz``: Z_DIM; ``gf_dim``: GAN.GF_DIM (the 4x4 code has 8 gf_dim channels); ``imsize``: the
    image side (a multiple of 16; official 64)."""

    def __init__(self, t_dim: int = 1024, ef_dim: int = 128, nz: int = 100, gf_dim: int = 128, imsize: int = 64):
        super().__init__()
        if imsize < 16 or imsize % 16:
            raise ValueError(f"TF StackGAN stage-I image size must be a multiple of 16, got {imsize}")
        self.config = dict(t_dim=t_dim, ef_dim=ef_dim, nz=nz, gf_dim=gf_dim, imsize=imsize)
        self.nz, self.ef_dim, self.imsize, self.gf_dim = nz, ef_dim, imsize, gf_dim
        self.eps_dims = (ef_dim,)
        g, s16 = gf_dim, imsize // 16
        self.scoped("custom_fully_connected", nn.Linear(t_dim, 2 * ef_dim), "ca")  # Linear/Matrix, bias
        self.scoped("custom_fully_connected", nn.Linear(ef_dim + nz, s16 * s16 * g * 8), "fc")
        self.scoped("fc_batch_norm", TFBatchNorm(s16 * s16 * g * 8), "fc_bn")
        # node1_1: residual at s16 (custom_conv2d .. _2)
        self.res1 = [(self.conv(g * 8, g * 2, 1), self.bn(g * 2)), (self.conv(g * 2, g * 2), self.bn(g * 2)),
                     (self.conv(g * 2, g * 8), self.bn(g * 8))]
        self.node2_0 = (self.conv(g * 8, g * 4), self.bn(g * 4))  # after resize to s8
        self.res2 = [(self.conv(g * 4, g, 1), self.bn(g)), (self.conv(g, g), self.bn(g)), (self.conv(g, g * 4), self.bn(g * 4))]
        self.up3 = (self.conv(g * 4, g * 2), self.bn(g * 2))  # s4
        self.up4 = (self.conv(g * 2, g), self.bn(g))  # s2
        self.conv(g, 3, ref="img")  # s, tanh

    @staticmethod
    def _res(x, layers):  # conv-bn-relu, conv-bn-relu, conv-bn; relu(x + that)
        h = x
        for i, (conv, bn) in enumerate(layers):
            h = bn(conv(h))
            if i < len(layers) - 1:
                h = torch.relu(h)
        return torch.relu(x + h)

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        c, mean, log_sigma = self.condition(sent, eps)
        s = self.imsize
        h = self.fc_bn(self.fc(torch.cat((c, noise), 1)))  # [B, s16 * s16 * 8 gf], NHWC order
        h = h.view(-1, s // 16, s // 16, self.gf_dim * 8).permute(0, 3, 1, 2)  # [B, 8 gf, s16, s16]
        h = self._res(h, self.res1)
        conv, bn = self.node2_0
        h = bn(conv(_up(h, s // 8)))
        h = self._res(h, self.res2)
        for (conv, bn), size in ((self.up3, s // 4), (self.up4, s // 2)):
            h = torch.relu(bn(conv(_up(h, size))))
        img = torch.tanh(self.img(_up(h, s)))  # [B, 3, s, s]
        return GenOutput(images=[img], mu=mean, logvar=2 * log_sigma)

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent).images[-1]


class HRGNet(_Scoped):
    """``hr_g_net`` of ``stageII/model.py`` (``hr_get_generator``): the stage-I image ``[B, 3, s, s]``
    and the sentence -> ``[B, 3, 4s, 4s]``.

    ``t_dim``, ``ef_dim``: as stage I; ``gf_dim``: GAN.GF_DIM; ``lr_size``: the stage-I side s;
    ``r_num``: residual blocks (official 4)."""

    def __init__(self, t_dim: int = 1024, ef_dim: int = 128, gf_dim: int = 128, lr_size: int = 64, r_num: int = 4):
        super().__init__()
        if gf_dim % 4 or lr_size % 4:
            raise ValueError(f"TF StackGAN stage II needs gf_dim and the stage-I size divisible by 4, got {gf_dim}, {lr_size}")
        self.ef_dim, self.lr_size = ef_dim, lr_size
        g = gf_dim
        self.scoped("custom_fully_connected", nn.Linear(t_dim, 2 * ef_dim), "ca")
        self.conv(3, g, ref="enc0")  # relu, no batch norm
        self.enc = [(self.conv(g, g * 2, 4, 2), self.bn(g * 2)), (self.conv(g * 2, g * 4, 4, 2), self.bn(g * 4))]
        self.joint = (self.conv(g * 4 + ef_dim, g * 4), self.bn(g * 4))
        self.res = [[(self.conv(g * 4, g * 4), self.bn(g * 4)), (self.conv(g * 4, g * 4), self.bn(g * 4))]
                    for _ in range(r_num)]
        widths = (g * 4, g * 2, g, g // 2, g // 4)
        self.ups = [(self.conv(a, b), self.bn(b)) for a, b in zip(widths[:-1], widths[1:])]
        self.conv(g // 4, 3, ref="img")

    def run(self, lr_image, sent, eps=None):
        """-> (image [B, 3, 4s, 4s], mean, log_sigma)."""
        c, mean, log_sigma = self.condition(sent, eps)
        h = torch.relu(self.enc0(lr_image))
        for conv, bn in self.enc:
            h = torch.relu(bn(conv(h)))  # [B, 4 gf, s4, s4] at the end
        c = c[:, :, None, None].expand(-1, -1, h.size(2), h.size(3))
        conv, bn = self.joint
        h = torch.relu(bn(conv(torch.cat((h, c), 1))))
        for block in self.res:
            h = StageIGenerator._res(h, block)
        s = self.lr_size
        for (conv, bn), size in zip(self.ups, (s // 2, s, 2 * s, 4 * s)):
            h = torch.relu(bn(conv(_up(h, size))))
        return torch.tanh(self.img(h)), mean, log_sigma


class StageIIGenerator(nn.Module):
    """Both generators of a stage-II checkpoint: ``g_net`` (stage I) then ``hr_g_net``;
    ``run(noise, sent, eps [B, ef1 + ef2]) -> GenOutput([stage-I image, stage-II image], mu, logvar)``
    (``eps``: stage-I condition noise, then stage-II; ``mu``/``logvar`` of stage II).

    ``stage1``: the :class:`StageIGenerator` config; ``gf_dim``, ``ef_dim``, ``r_num``: of ``hr_g_net``."""

    def __init__(self, stage1: dict, gf_dim: int = 128, ef_dim: int = 128, r_num: int = 4):
        super().__init__()
        self.config = dict(stage1=dict(stage1), gf_dim=gf_dim, ef_dim=ef_dim, r_num=r_num)
        self.g_net = StageIGenerator(**stage1)
        s = self.g_net.imsize
        self.hr_g_net = HRGNet(self.g_net.config["t_dim"], ef_dim, gf_dim, s, r_num)
        self.nz, self.imsize, self.stage_sizes = self.g_net.nz, 4 * s, [s, 4 * s]
        self.eps_dims = (self.g_net.ef_dim, ef_dim)

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        e1 = e2 = None
        if eps is not None:
            e1, e2 = eps[:, :self.eps_dims[0]], eps[:, self.eps_dims[0]:]
        lr = self.g_net.run(noise, sent, eps=e1).images[-1]
        hr, mean, log_sigma = self.hr_g_net.run(lr, sent, e2)
        return GenOutput(images=[lr, hr], mu=mean, logvar=2 * log_sigma)

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent).images[-1]
