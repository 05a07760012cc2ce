"""SRNet (Wu et al., "Editing Text in the Wild", ACM MM 2019): the networks.

Module and attribute names follow the open-source PyTorch SRNet (github.com/Niwhskal/SRNet,
``model.py``): ``Generator`` = ``_tcn`` (text conversion: text encoder ``_t_encoder`` on the
rendered target text i_t, style encoder ``_s_encoder`` on the source image i_s, the
text-skeleton decoder ``_sk_decoder``/``_sk_out`` and the text decoder ``_t_decoder``),
``_bin`` (background inpainting: encoder-decoder with skip connections from its encoder)
and ``_fn`` (fusion: encodes the converted text, decodes with the inpainting decoder's
features); ``Discriminator`` (PatchGAN-style, one per GAN term: background and fused). A
state dict of the reference code has the same keys and shapes.

One deliberate difference: the reference computes its strided-convolution paddings from a
module-level ``temp_shape = (0, 0)`` (padding 0, outputs one pixel short, padded back with
``ZeroPad2d((0, 1, 1, 0))`` in its training loop); here the stride-2 convolutions use padding 1
and the transposed ones padding 1 / output_padding 1, so H and W divisible by 8 come back
exactly (the weights have the same shapes either way).

Images are (B, 3, H, W) in [-1, 1]; the skeleton (B, 1, H, W) in [0, 1]; H, W multiples of 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.2)


def down(cin: int, cout: int) -> nn.Conv2d:
    """The reference's ``_poolN``: a stride-2 3x3 convolution halving H and W."""
    return nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1)


def up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """The reference's ``_deconvN``: a stride-2 3x3 transposed convolution doubling H and W."""
    return nn.ConvTranspose2d(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1)


class Conv_bn_block(nn.Module):
    """3x3 convolution, BatchNorm, LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self._conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self._bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return lrelu(self._bn(self._conv(x)))


class Res_block(nn.Module):
    """Bottleneck residual block (1x1 -> 3x3 -> 1x1 at in_channels/4), BatchNorm after the sum."""

    def __init__(self, in_channels: int):
        super().__init__()
        self._conv1 = nn.Conv2d(in_channels, in_channels // 4, kernel_size=1, stride=1)
        self._conv2 = nn.Conv2d(in_channels // 4, in_channels // 4, kernel_size=3, stride=1, padding=1)
        self._conv3 = nn.Conv2d(in_channels // 4, in_channels, kernel_size=1, stride=1)
        self._bn = nn.BatchNorm2d(in_channels)

    def forward(self, x):
        h = lrelu(self._conv1(x))
        h = lrelu(self._conv2(h))
        return lrelu(self._bn(x + self._conv3(h)))


class encoder_net(nn.Module):
    """(B, in, H, W) -> (B, 8c, H/8, W/8); with ``get_feature_map`` also [f2 (4c, H/4), f1 (2c, H/2)]."""

    def __init__(self, in_channels: int, get_feature_map: bool = False, cnum: int = 32):
        """``cnum``: base width c (reference: 32)."""
        super().__init__()
        c = self.cnum = cnum
        self.get_feature_map = get_feature_map
        self._conv1_1 = Conv_bn_block(in_channels, c)
        self._conv1_2 = Conv_bn_block(c, c)
        self._pool1 = down(c, 2 * c)
        self._conv2_1 = Conv_bn_block(2 * c, 2 * c)
        self._conv2_2 = Conv_bn_block(2 * c, 2 * c)
        self._pool2 = down(2 * c, 4 * c)
        self._conv3_1 = Conv_bn_block(4 * c, 4 * c)
        self._conv3_2 = Conv_bn_block(4 * c, 4 * c)
        self._pool3 = down(4 * c, 8 * c)
        self._conv4_1 = Conv_bn_block(8 * c, 8 * c)
        self._conv4_2 = Conv_bn_block(8 * c, 8 * c)

    def forward(self, x):
        x = self._conv1_2(self._conv1_1(x))
        x = self._conv2_2(self._conv2_1(lrelu(self._pool1(x))))
        f1 = x  # (B, 2c, H/2, W/2)
        x = self._conv3_2(self._conv3_1(lrelu(self._pool2(x))))
        f2 = x  # (B, 4c, H/4, W/4)
        x = self._conv4_2(self._conv4_1(lrelu(self._pool3(x))))  # (B, 8c, H/8, W/8)
        return (x, [f2, f1]) if self.get_feature_map else x


class build_res_block(nn.Module):
    """Four residual blocks."""

    def __init__(self, in_channels: int):
        super().__init__()
        self._block1 = Res_block(in_channels)
        self._block2 = Res_block(in_channels)
        self._block3 = Res_block(in_channels)
        self._block4 = Res_block(in_channels)

    def forward(self, x):
        return self._block4(self._block3(self._block2(self._block1(x))))


class decoder_net(nn.Module):
    """(B, in, H/8, W/8) -> (B, c, H, W); ``fuse``: [at H/8, at H/4, at H/2] features concatenated
    before the convolutions of that scale (None to skip); ``get_feature_map``: also [f1, f2, f3]."""

    def __init__(self, in_channels: int, get_feature_map: bool = False, mt: int = 1, fn_mt: int = 1, cnum: int = 32):
        """``mt``: width multiplier of the skip-connected inputs (inpainting: 2); ``fn_mt``: of every
        fused input (fusion: 2); ``cnum``: base width c (reference: 32)."""
        super().__init__()
        c = self.cnum = cnum
        self.get_feature_map = get_feature_map
        self._conv1_1 = Conv_bn_block(fn_mt * in_channels, 8 * c)
        self._conv1_2 = Conv_bn_block(8 * c, 8 * c)
        self._deconv1 = up(8 * c, 4 * c)
        self._conv2_1 = Conv_bn_block(fn_mt * mt * 4 * c, 4 * c)
        self._conv2_2 = Conv_bn_block(4 * c, 4 * c)
        self._deconv2 = up(4 * c, 2 * c)
        self._conv3_1 = Conv_bn_block(fn_mt * mt * 2 * c, 2 * c)
        self._conv3_2 = Conv_bn_block(2 * c, 2 * c)
        self._deconv3 = up(2 * c, c)
        self._conv4_1 = Conv_bn_block(c, c)
        self._conv4_2 = Conv_bn_block(c, c)

    def forward(self, x, fuse=None):
        fuse = fuse or [None, None, None]
        if fuse[0] is not None:
            x = torch.cat((x, fuse[0]), dim=1)
        x = self._conv1_2(self._conv1_1(x))
        f1 = x  # (B, 8c, H/8)
        x = lrelu(self._deconv1(x))
        if fuse[1] is not None:
            x = torch.cat((x, fuse[1]), dim=1)
        x = self._conv2_2(self._conv2_1(x))
        f2 = x  # (B, 4c, H/4)
        x = lrelu(self._deconv2(x))
        if fuse[2] is not None:
            x = torch.cat((x, fuse[2]), dim=1)
        x = self._conv3_2(self._conv3_1(x))
        f3 = x  # (B, 2c, H/2)
        x = self._conv4_2(self._conv4_1(lrelu(self._deconv3(x))))  # (B, c, H, W)
        return (x, [f1, f2, f3]) if self.get_feature_map else x


class text_conversion_net(nn.Module):
    """(i_t, i_s) -> (o_sk (B, 1, H, W) sigmoid, o_t (B, 3, H, W) tanh): the target text in the source's style."""

    def __init__(self, in_channels: int, cnum: int = 32):
        super().__init__()
        c = self.cnum = cnum
        self._t_encoder = encoder_net(in_channels, cnum=c)
        self._t_res = build_res_block(8 * c)
        self._s_encoder = encoder_net(in_channels, cnum=c)
        self._s_res = build_res_block(8 * c)
        self._sk_decoder = decoder_net(16 * c, cnum=c)
        self._sk_out = nn.Conv2d(c, 1, kernel_size=3, stride=1, padding=1)
        self._t_decoder = decoder_net(16 * c, cnum=c)
        self._t_cbr = Conv_bn_block(2 * c, 2 * c)
        self._t_out = nn.Conv2d(2 * c, 3, kernel_size=3, stride=1, padding=1)

    def forward(self, x_t, x_s):
        x = torch.cat((self._t_res(self._t_encoder(x_t)), self._s_res(self._s_encoder(x_s))), dim=1)  # (B, 16c, H/8)
        y_sk = self._sk_decoder(x)  # (B, c, H, W)
        y_sk_out = torch.sigmoid(self._sk_out(y_sk))
        y_t = self._t_cbr(torch.cat((y_sk, self._t_decoder(x)), dim=1))  # the skeleton guides the text decoder
        return y_sk_out, torch.tanh(self._t_out(y_t))


class inpainting_net(nn.Module):
    """i_s -> (o_b (B, 3, H, W) tanh: the background with the text erased, decoder features [f1, f2, f3])."""

    def __init__(self, in_channels: int, cnum: int = 32):
        super().__init__()
        c = self.cnum = cnum
        self._encoder = encoder_net(in_channels, get_feature_map=True, cnum=c)
        self._res = build_res_block(8 * c)
        self._decoder = decoder_net(8 * c, get_feature_map=True, mt=2, cnum=c)
        self._out = nn.Conv2d(c, 3, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        x, f_encoder = self._encoder(x)
        x, fs = self._decoder(self._res(x), fuse=[None] + f_encoder)
        return torch.tanh(self._out(x)), fs


class fusion_net(nn.Module):
    """(o_t, inpainting decoder features) -> o_f (B, 3, H, W) tanh: the converted text on the background."""

    def __init__(self, in_channels: int, cnum: int = 32):
        super().__init__()
        c = self.cnum = cnum
        self._encoder = encoder_net(in_channels, cnum=c)
        self._res = build_res_block(8 * c)
        self._decoder = decoder_net(8 * c, fn_mt=2, cnum=c)
        self._out = nn.Conv2d(c, 3, kernel_size=3, stride=1, padding=1)

    def forward(self, x, fuse):
        return torch.tanh(self._out(self._decoder(self._res(self._encoder(x)), fuse=fuse)))


class Generator(nn.Module):
    """SRNet's generator: (i_t, i_s) -> (o_sk, o_t, o_b, o_f)."""

    def __init__(self, in_channels: int = 3, cnum: int = 32):
        """``in_channels``: image channels (3); ``cnum``: base width of every module (reference: 32)."""
        super().__init__()
        self.config = {"in_channels": in_channels, "cnum": cnum}
        self.cnum = cnum
        self._tcn = text_conversion_net(in_channels, cnum)
        self._bin = inpainting_net(in_channels, cnum)
        self._fn = fusion_net(in_channels, cnum)

    def forward(self, i_t, i_s):
        """i_t: (B, 3, H, W) the new text rendered plainly; i_s: (B, 3, H, W) the source image."""
        o_sk, o_t = self._tcn(i_t, i_s)
        o_b, fuse = self._bin(i_s)
        o_f = self._fn(o_t, fuse)
        return o_sk, o_t, o_b, o_f


class Discriminator(nn.Module):
    """(B, in, H, W) -> (B, 1, H/16, W/16) patch scores; no final sigmoid (reference: BatchNorm on the
    one output channel, read by a clamped log loss)."""

    def __init__(self, in_channels: int = 6, ndf: int = 64):
        """``in_channels``: the two images concatenated (6); ``ndf``: first width (reference: 64)."""
        super().__init__()
        self.config = {"in_channels": in_channels, "ndf": ndf}
        self._conv1 = down(in_channels, ndf)
        self._conv2 = down(ndf, 2 * ndf)
        self._conv2_bn = nn.BatchNorm2d(2 * ndf)
        self._conv3 = down(2 * ndf, 4 * ndf)
        self._conv3_bn = nn.BatchNorm2d(4 * ndf)
        self._conv4 = down(4 * ndf, 8 * ndf)
        self._conv4_bn = nn.BatchNorm2d(8 * ndf)
        self._conv5 = nn.Conv2d(8 * ndf, 1, kernel_size=3, stride=1, padding=1)
        self._conv5_bn = nn.BatchNorm2d(1)

    def forward(self, x):
        x = lrelu(self._conv1(x))
        x = lrelu(self._conv2_bn(self._conv2(x)))
        x = lrelu(self._conv3_bn(self._conv3(x)))
        x = lrelu(self._conv4_bn(self._conv4(x)))
        return self._conv5_bn(self._conv5(x))
