"""HDGAN (Zhang, Xie & Yang, "Photographic Text-to-Image Synthesis with a Hierarchically-nested
Adversarial Network", CVPR 2018).

One generator trunk of residual ``scale_N`` blocks (4 -> 256 px) with side outputs
(``tensor_to_img_N``) at 64, 128 and 256; one discriminator object with a branch per side
output: an image encoder, a pair (image + sentence) head and a local patch head.

Module and parameter names follow ypxie/HDGan ``HDGan/models/hd_networks.py`` and
``proj_utils/network_utils.py`` (``Generator.condEmbedding.linear``, ``vec_to_tensor.out``,
``scale_4 .. scale_256``, ``tensor_to_img_64/128/256``; ``Discriminator.img_encoder_N.node``,
``pair_disc_N.node``, ``local_img_disc_N``, ``context_emb_pipe_N``, ``pre_encode``), so the
official ``G_epoch*.pth`` / ``D_epoch*.pth`` state dicts load by name. Defaults are the
official training script's (``train/train_gan/train_worker.py``): ``sent_dim=1024,
noise_dim=100, emb_dim=128, hid_dim=128, num_resblock=1``.

Differences from the official module, none changing an output for the same weights and noise:
the conditioning noise can be passed in (``eps``; the official code draws it on the GPU inside
``condEmbedding``), ``side_output_at`` may end below 256 (CPU-sized models: the trunk stops at
the largest side output), and ``run`` returns a :class:`GenOutput`. HDGAN's condition is
``c = mean + exp(log_sigma) * eps`` (a log standard deviation, not StackGAN's log variance);
``GenOutput.logvar`` holds ``2 * log_sigma`` so the shared KL term applies unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from t2igan.models.blocks import GenOutput, log2_int

SCALES = (4, 8, 16, 32, 64, 128, 256)  # the official trunk's resolutions
REDUCE_DIM_AT = (8, 32, 128, 256)  # the trunk halves its width on reaching these sides


def pad_conv_norm(dim_in: int, dim_out: int, kernel_size: int = 3, use_activation: bool = True,
                  use_bias: bool = False) -> nn.Sequential:
    """Official ``pad_conv_norm`` (generators): reflection pad 1 (kernel > 1), conv, BN, ReLU."""
    seq: list[nn.Module] = [nn.ReflectionPad2d(1)] if kernel_size != 1 else []
    seq += [nn.Conv2d(dim_in, dim_out, kernel_size=kernel_size, padding=0, bias=use_bias), nn.BatchNorm2d(dim_out)]
    if use_activation:
        seq.append(nn.ReLU(True))
    return nn.Sequential(*seq)


def conv_norm(dim_in: int, dim_out: int, kernel_size: int = 3, stride: int = 1, use_norm: bool = True,
              padding: int | None = None) -> nn.Sequential:
    """Official ``conv_norm`` as the discriminators use it: conv (no bias; padding 1 for 3x3, else
    0), BN unless ``use_norm=False``, LeakyReLU(0.2)."""
    if padding is None:
        padding = 1 if kernel_size == 3 else 0
    seq: list[nn.Module] = [nn.Conv2d(dim_in, dim_out, kernel_size=kernel_size, padding=padding, bias=False,
                                      stride=stride)]
    if use_norm:
        seq.append(nn.BatchNorm2d(dim_out))
    seq.append(nn.LeakyReLU(0.2, True))
    return nn.Sequential(*seq)


def branch_out(in_dim: int, out_dim: int = 3) -> nn.Sequential:
    """Side output: reflection pad 1, 3x3 conv without bias, Tanh."""
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=0, bias=False),
                         nn.Tanh())


class condEmbedding(nn.Module):  # noqa: N801 - official name
    """Conditioning augmentation: ``linear`` to (mean, log_sigma), LeakyReLU(0.2),
    ``c = mean + exp(log_sigma) * eps``."""

    def __init__(self, noise_dim: int, emb_dim: int):
        super().__init__()
        self.noise_dim, self.emb_dim = noise_dim, emb_dim  # noise_dim: the sentence width (official naming)
        self.linear = nn.Linear(noise_dim, emb_dim * 2)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, inputs: torch.Tensor, eps: torch.Tensor | None = None):
        out = self.relu(self.linear(inputs))  # (B, 2 * emb_dim)
        mean, log_sigma = out[:, :self.emb_dim], out[:, self.emb_dim:]
        if eps is None:
            eps = torch.randn_like(mean)
        return mean + log_sigma.exp() * eps, mean, log_sigma


class ResnetBlock(nn.Module):
    """``res_block(x) + x`` with two reflection-padded 3x3 conv + BN (ReLU after the first)."""

    def __init__(self, dim: int, use_bias: bool = False):
        super().__init__()
        self.res_block = nn.Sequential(pad_conv_norm(dim, dim, use_bias=use_bias),
                                       pad_conv_norm(dim, dim, use_activation=False, use_bias=use_bias))

    def forward(self, x):
        return self.res_block(x) + x


class Sent2FeatMap(nn.Module):
    """Vector -> ``[B, channel, row, col]`` through Linear (with bias) + BatchNorm1d."""

    def __init__(self, in_dim: int, row: int, col: int, channel: int):
        super().__init__()
        self.row, self.col, self.channel = row, col, channel
        out_dim = row * col * channel
        self.out = nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim))

    def forward(self, inputs):
        return self.out(inputs).view(-1, self.channel, self.row, self.col)


class Generator(nn.Module):
    """HDGAN generator: ``run(noise, sent, eps=None) -> GenOutput(images at every side output,
    mu, logvar=2*log_sigma)``.

    sent_dim: sentence embedding width (char-CNN-RNN: 1024); noise_dim: z width; emb_dim: the
    conditioning-augmentation code width; hid_dim: width control (the 4x4 map has 8*hid_dim
    channels); num_resblock: residual blocks per scale; side_output_at: sides with an image
    output (official: 64, 128, 256; a prefix-closed subset ending lower for small models).
    """

    def __init__(self, sent_dim: int = 1024, noise_dim: int = 100, emb_dim: int = 128, hid_dim: int = 128,
                 num_resblock: int = 1, side_output_at: tuple[int, ...] | list[int] = (64, 128, 256)):
        super().__init__()
        sides = sorted(int(s) for s in side_output_at)
        if not sides or len(set(sides)) != len(sides) or any(s not in SCALES[1:] for s in sides):
            raise ValueError(f"HDGAN side_output_at must be distinct sides among {list(SCALES[1:])}, "
                             f"got {list(side_output_at)}")
        for s in sides:
            log2_int(s, "HDGAN side output")
        self.config = dict(sent_dim=sent_dim, noise_dim=noise_dim, emb_dim=emb_dim, hid_dim=hid_dim,
                           num_resblock=num_resblock, side_output_at=sides)
        self.nz, self.c_dim, self.eps_dims = noise_dim, emb_dim, (emb_dim,)
        self.side_output_at = sides
        self.imsize = sides[-1]
        self.stage_sizes = list(sides)
        self.scales = [s for s in SCALES if s <= self.imsize]
        self.condEmbedding = condEmbedding(sent_dim, emb_dim)
        self.vec_to_tensor = Sent2FeatMap(emb_dim + noise_dim, 4, 4, hid_dim * 8)
        cur = hid_dim * 8
        for i, s in enumerate(self.scales):
            seq: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if i else []
            if s in REDUCE_DIM_AT:
                seq.append(pad_conv_norm(cur, cur // 2))
                cur //= 2
            seq += [ResnetBlock(cur) for _ in range(num_resblock)]
            self.add_module(f"scale_{s}", nn.Sequential(*seq))
            if s in sides:
                self.add_module(f"tensor_to_img_{s}", branch_out(cur))

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        c, mean, log_sigma = self.condEmbedding(sent, eps)  # (B, emb_dim) each
        x = self.vec_to_tensor(torch.cat([c, noise], dim=1))  # (B, 8 hid_dim, 4, 4)
        images = []
        for s in self.scales:
            x = getattr(self, f"scale_{s}")(x)
            if s in self.side_output_at:
                images.append(getattr(self, f"tensor_to_img_{s}")(x))
        return GenOutput(images=images, mu=mean, logvar=2 * log_sigma)

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent).images[-1]


class ImageDown(nn.Module):
    """Image -> ``[B, out_dim, 4, 4]`` (8x8 at 256) with the official layers per input size.

    input_size: 64, 128, 256 (official), or 16 / 32 (CPU-sized models: the 64 layout with fewer
    stride-2 convs); num_chan: image channels; out_dim: code width; base_dim: width of the first
    conv (None: the official 128 / 64 / 32 at 64 / 128 / 256, 128 below 64)."""

    def __init__(self, input_size: int, num_chan: int, out_dim: int, base_dim: int | None = None):
        super().__init__()
        if input_size not in (16, 32, 64, 128, 256):
            raise ValueError(f"HDGAN ImageDown input size must be 16, 32, 64, 128 or 256, got {input_size}")
        cur = base_dim or {128: 64, 256: 32}.get(input_size, 128)
        n = log2_int(input_size, "HDGAN image size") - 3  # stride-2 convs down to 8x8
        layers = [conv_norm(num_chan, cur, stride=2, use_norm=False)]
        for _ in range(n - 1 - (input_size == 256)):
            layers.append(conv_norm(cur, cur * 2, stride=2))
            cur *= 2
        if input_size == 256:
            layers.append(conv_norm(cur, out_dim, stride=2))  # 16 -> 8
        else:
            layers.append(conv_norm(cur, out_dim, stride=1, kernel_size=5, padding=0))  # 8 -> 4
        self.node = nn.Sequential(*layers)

    def forward(self, inputs):
        return self.node(inputs)


class DiscClassifier(nn.Module):
    """Pair head: ``cat(image code, sentence code tiled)`` -> 1x1 conv_norm -> conv to 1 logit."""

    def __init__(self, enc_dim: int, emb_dim: int, kernel_size: int):
        super().__init__()
        self.node = nn.Sequential(conv_norm(enc_dim + emb_dim, enc_dim, kernel_size=1, stride=1),
                                  nn.Conv2d(enc_dim, 1, kernel_size=kernel_size, padding=0, bias=True))

    def forward(self, sent_code, img_code):
        s = sent_code[:, :, None, None].expand(-1, -1, img_code.size(2), img_code.size(3))
        out = self.node(torch.cat([img_code, s], dim=1))
        return out.view(-1, out.size(1))  # (B * h' * w', 1)


class Discriminator(nn.Module):
    """Official HDGAN discriminator: ``forward(images, embedding) -> (pair logits [B, 1], local
    patch logits [B, 1, h, w])``; the branch is chosen by the image side.

    num_chan: image channels; hid_dim: image code width is 4*hid_dim; sent_dim: sentence width;
    emb_dim: sentence code width; side_output_at: the sides with a branch; base_dim: the image
    encoders' first width (None: official, see :class:`ImageDown`).
    """

    def __init__(self, num_chan: int = 3, hid_dim: int = 128, sent_dim: int = 1024, emb_dim: int = 128,
                 side_output_at: tuple[int, ...] | list[int] = (64, 128, 256), base_dim: int | None = None):
        super().__init__()
        self.side_output_at = sorted(int(s) for s in side_output_at)
        self.config = dict(num_chan=num_chan, hid_dim=hid_dim, sent_dim=sent_dim, emb_dim=emb_dim,
                           side_output_at=self.side_output_at, base_dim=base_dim)
        enc_dim = hid_dim * 4
        for s in self.side_output_at:
            self.add_module(f"img_encoder_{s}", ImageDown(s, num_chan, enc_dim, base_dim))
            self.add_module(f"pair_disc_{s}", DiscClassifier(enc_dim, emb_dim, kernel_size=4))
            if s == 256:
                self.pre_encode = conv_norm(enc_dim, enc_dim, stride=1, kernel_size=5, padding=0)
            self.add_module(f"local_img_disc_{s}", nn.Conv2d(enc_dim, 1, kernel_size=4, padding=0, bias=True))
            self.add_module(f"context_emb_pipe_{s}",
                            nn.Sequential(nn.Linear(sent_dim, emb_dim), nn.LeakyReLU(0.2, True)))

    def forward(self, images, embedding):
        s = images.size(3)
        if s not in self.side_output_at:
            raise ValueError(f"HDGAN discriminator has branches for {self.side_output_at}, got a {s}px image")
        sent_code = getattr(self, f"context_emb_pipe_{s}")(embedding)  # (B, emb_dim)
        img_code = getattr(self, f"img_encoder_{s}")(images)  # (B, 4 hid_dim, 4, 4) or 8x8 at 256
        pair = getattr(self, f"pair_disc_{s}")(sent_code, self.pre_encode(img_code) if s == 256 else img_code)
        return pair, getattr(self, f"local_img_disc_{s}")(img_code)
