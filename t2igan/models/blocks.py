"""Building blocks shared by the model families."""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class Affine(nn.Module):
    """Text-conditioned channel-wise affine transform (DF-GAN): ``gamma(y) * x + beta(y)``.
    Initialised to the identity (gamma = 1, beta = 0)."""

    def __init__(self, cond_dim: int, num_features: int):
        super().__init__()

        def mlp():
            return nn.Sequential(OrderedDict([
                ("linear1", nn.Linear(cond_dim, num_features)),
                ("relu1", nn.ReLU(inplace=True)),
                ("linear2", nn.Linear(num_features, num_features)),
            ]))

        self.fc_gamma, self.fc_beta = mlp(), mlp()
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma = self.fc_gamma(y)[:, :, None, None]  # (B, C, 1, 1)
        beta = self.fc_beta(y)[:, :, None, None]
        return gamma * x + beta


# ----------------------------------------------------------------------------- classic family
# Shared by GAN-INT-CLS, StackGAN, StackGAN++, AttnGAN and MirrorGAN. Layer layouts (and
# so state-dict keys) follow hanzhanggit/StackGAN-Pytorch, hanzhanggit/StackGAN-v2 and
# taoxugit/AttnGAN ``code/model.py``.


@dataclass
class GenOutput:
    """What a classic generator returns from ``run``: images per stage (smallest first,
    [-1, 1]), word-attention maps per attended stage (``[B, T, h, w]``, summing to 1 over
    words, 0 on padding), and the conditioning-augmentation ``mu``/``logvar`` (or None)."""

    images: list[torch.Tensor]
    attention: list[torch.Tensor] = field(default_factory=list)
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


def log2_int(n: int, what: str) -> int:
    k = int(round(math.log2(n))) if n > 0 else -1
    if k < 0 or 2 ** k != n:
        raise ValueError(f"{what} must be a power of two, got {n}")
    return k


def tree_upsamplings(branch_num: int, base_size: int) -> int:
    """Check a StackGAN++/AttnGAN tree generator's shape; the number of 2x up-blocks of its
    first stage (4x4 -> base_size)."""
    if not 1 <= branch_num <= 3:
        raise ValueError(f"branch_num must be 1..3, got {branch_num}")
    n_up = log2_int(base_size, "base_size") - 2
    if not 1 <= n_up <= 4:
        raise ValueError(f"base_size must be 8..64, got {base_size}")
    return n_up


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)


class GLU(nn.Module):
    """Gated linear unit over channels: ``x[:, :C/2] * sigmoid(x[:, C/2:])``."""

    def forward(self, x):
        nc = x.size(1) // 2
        return x[:, :nc] * torch.sigmoid(x[:, nc:])


def up_block_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    """StackGAN v1 ``upBlock``: nearest 2x, conv3x3, BN, ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes),
                         nn.BatchNorm2d(out_planes), nn.ReLU(True))


def up_block_glu(in_planes: int, out_planes: int) -> nn.Sequential:
    """StackGAN++/AttnGAN ``upBlock``: nearest 2x, conv3x3 to 2*out, BN, GLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes * 2),
                         nn.BatchNorm2d(out_planes * 2), GLU())


def block3x3_glu(in_planes: int, out_planes: int) -> nn.Sequential:
    """StackGAN++ ``Block3x3_relu`` (a GLU despite its name)."""
    return nn.Sequential(conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), GLU())


def block3x3_leaky(in_planes: int, out_planes: int) -> nn.Sequential:
    """``Block3x3_leakRelu``: conv3x3, BN, LeakyReLU(0.2)."""
    return nn.Sequential(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True))


def down_block(in_planes: int, out_planes: int) -> nn.Sequential:
    """``downBlock``: 4x4 stride-2 conv, BN, LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False), nn.BatchNorm2d(out_planes),
                         nn.LeakyReLU(0.2, inplace=True))


class ResBlockReLU(nn.Module):
    """StackGAN v1 ``ResBlock``: relu(x + BN(conv(relu(BN(conv(x))))))."""

    def __init__(self, channel_num: int):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num), nn.ReLU(True),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(x + self.block(x))


class ResBlockGLU(nn.Module):
    """StackGAN++/AttnGAN ``ResBlock``: x + BN(conv(GLU(BN(conv(x)))))."""

    def __init__(self, channel_num: int):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num * 2), nn.BatchNorm2d(channel_num * 2), GLU(),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))

    def forward(self, x):
        return x + self.block(x)


def encode_image_by_16times(ndf: int, imsize: int = 64) -> nn.Sequential:
    """Image -> ``[B, 8*ndf, imsize/16, imsize/16]`` (official for imsize >= 64). For a smaller
    input (a CPU preset) fewer stride-2 convs are used so the output is still 4x4 with 8*ndf
    channels: widths ndf * 2**(i + 4 - n) for the n = log2(imsize/4) convs."""
    n = 4 if imsize >= 64 else log2_int(imsize, "discriminator image size") - 2
    if n < 1:
        raise ValueError(f"discriminator image size must be >= 8, got {imsize}")
    chs = [ndf * 2 ** (i + 4 - n) for i in range(n)]
    layers: list[nn.Module] = [nn.Conv2d(3, chs[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for a, b in zip(chs[:-1], chs[1:]):
        layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class CA_NET(nn.Module):  # noqa: N801 - official name
    """Conditioning augmentation (StackGAN): ``fc`` maps the sentence to (mu, logvar) and
    ``c = mu + exp(logvar / 2) * eps``.

    ``glu=False``: StackGAN v1 (``fc`` to 2*c_dim, ReLU). ``glu=True``: StackGAN++/AttnGAN/
    MirrorGAN (``fc`` to 4*c_dim, GLU).
    """

    def __init__(self, t_dim: int, c_dim: int, glu: bool = True):
        super().__init__()
        self.t_dim, self.c_dim, self.glu = t_dim, c_dim, glu
        self.fc = nn.Linear(t_dim, c_dim * (4 if glu else 2), bias=True)
        self.relu = GLU() if glu else nn.ReLU()

    def encode(self, text_embedding: torch.Tensor):
        x = self.relu(self.fc(text_embedding))
        return x[:, :self.c_dim], x[:, self.c_dim:]

    @staticmethod
    def reparametrize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + eps * logvar.mul(0.5).exp()

    def forward(self, text_embedding: torch.Tensor, eps: torch.Tensor | None = None):
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar, eps), mu, logvar


def scaled_grad(out: torch.Tensor, inputs, inv_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """``autograd.grad(out, inputs)`` with a graph (for a gradient penalty); with ``inv_scale``
    (1 / the fp16 loss scale) by the AMP recipe: the gradients of the scaled output, so that they do
    not underflow in half precision, unscaled before any norm is taken."""
    if inv_scale is None:
        return torch.autograd.grad(out, inputs, create_graph=True)
    grads = torch.autograd.grad(out / inv_scale, inputs, create_graph=True)
    return tuple(g * inv_scale for g in grads)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Official ``KL_loss``: mean over batch *and* dimensions of
    ``-0.5 * (1 + logvar - mu^2 - exp(logvar))`` (KL(N(mu, sigma^2) || N(0, I)) per dimension)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()


def compute_mean_covariance(img: torch.Tensor):
    """Per-image channel mean ``[B, C, 1, 1]`` and channel covariance ``[B, C, C]`` (StackGAN++)."""
    B, C, H, W = img.shape
    mu = img.mean((2, 3), keepdim=True)
    hat = (img - mu).reshape(B, C, H * W)
    return mu, hat @ hat.transpose(1, 2) / (H * W)


def color_consistency_loss(fine: torch.Tensor, coarse: torch.Tensor, weight: float, cov_weight: float = 5.0):
    """StackGAN++ colour-consistency: ``weight * (MSE(mu_f, mu_c) + cov_weight * MSE(cov_f, cov_c))``
    with the coarse image detached (official: COLOR_LOSS * MSE(mu) + COLOR_LOSS * 5 * MSE(cov))."""
    mu1, cov1 = compute_mean_covariance(fine)
    mu2, cov2 = compute_mean_covariance(coarse.detach())
    return weight * F.mse_loss(mu1, mu2) + weight * cov_weight * F.mse_loss(cov1, cov2)


def masked_word_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last (word) axis; padded words (``mask`` False) get exactly 0.
    scores ``[B, Q, T]``, mask ``[B, T]`` (True = real word)."""
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    return scores.softmax(dim=-1)


class GlobalAttentionGeneral(nn.Module):
    """AttnGAN word attention (``ATT_NET``): every image sub-region attends over the words.

    input ``[B, idf, h, w]``, context (words) ``[B, cdf, T]``, mask ``[B, T]`` (True = word)
    -> word context ``[B, idf, h, w]`` and attention ``[B, T, h, w]`` (sums to 1 over words).
    The official code passes a padding mask through ``applyMask``; here it is an argument.
    """

    def __init__(self, idf: int, cdf: int):
        super().__init__()
        self.conv_context = conv1x1(cdf, idf)

    def forward(self, input: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None):
        B, idf, ih, iw = input.shape
        target = input.reshape(B, idf, ih * iw).transpose(1, 2)  # (B, Q, idf)
        source = self.conv_context(context.unsqueeze(3)).squeeze(3)  # (B, idf, T)
        attn = masked_word_softmax(target @ source, mask)  # (B, Q, T)
        attn = attn.transpose(1, 2)  # (B, T, Q)
        weighted = (source @ attn).reshape(B, idf, ih, iw)
        return weighted, attn.reshape(B, -1, ih, iw)


class ImageCode(nn.Module):
    """The StackGAN++/AttnGAN discriminator image encoder to ``[B, 8*ndf, 4, 4]`` with the
    official names per size: ``img_code_s16`` (all sizes), ``img_code_s32`` + ``img_code_s32_1``
    (128), ``img_code_s32`` + ``img_code_s64`` + ``img_code_s64_1`` + ``img_code_s64_2`` (256).
    Mixed into D classes; sizes below 64 (CPU presets) use a shorter ``img_code_s16``."""

    def build_image_code(self, ndf: int, imsize: int) -> None:
        self.imsize = imsize
        if imsize > 256:
            raise ValueError(f"discriminator image size must be <= 256, got {imsize}")
        self.img_code_s16 = encode_image_by_16times(ndf, imsize)
        if imsize == 128:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s32_1 = block3x3_leaky(ndf * 16, ndf * 8)
        elif imsize == 256:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s64 = down_block(ndf * 16, ndf * 32)
            self.img_code_s64_1 = block3x3_leaky(ndf * 32, ndf * 16)
            self.img_code_s64_2 = block3x3_leaky(ndf * 16, ndf * 8)

    def image_code(self, x: torch.Tensor) -> torch.Tensor:
        h = self.img_code_s16(x)
        if self.imsize == 128:
            h = self.img_code_s32_1(self.img_code_s32(h))
        elif self.imsize == 256:
            h = self.img_code_s64_2(self.img_code_s64_1(self.img_code_s64(self.img_code_s32(h))))
        return h


def to_rgb(ngf: int) -> nn.Sequential:
    """Features -> RGB in [-1, 1]: conv3x3 to 3 channels, Tanh (the official ``img``)."""
    return nn.Sequential(conv3x3(ngf, 3), nn.Tanh())


class GET_IMAGE_G(nn.Module):  # noqa: N801 - official name
    """Features -> RGB image in [-1, 1] (``img``: conv3x3, Tanh)."""

    def __init__(self, ngf: int):
        super().__init__()
        self.img = to_rgb(ngf)

    def forward(self, h_code):
        return self.img(h_code)


class Upsamplings:
    """Mixin for a chain of 2x up-blocks with the official names ``upsample1..n`` (StackGAN v1
    stage I and II, StackGAN++/AttnGAN ``INIT_STAGE_G``). ``chs``: widths from input to output."""

    def build_upsamplings(self, chs: list[int], block) -> None:
        self.n_up = len(chs) - 1
        for i in range(self.n_up):
            self.add_module(f"upsample{i + 1}", block(chs[i], chs[i + 1]))

    def upsamplings(self, h: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_up):
            h = getattr(self, f"upsample{i + 1}")(h)
        return h


class INIT_STAGE_G(Upsamplings, nn.Module):  # noqa: N801 - official name
    """First StackGAN++/AttnGAN stage: ``cat(c_code, z)`` -> fc (GLU) -> 4x4 -> upsample1..n.
    ``ngf`` is the width at 4x4; the output has ``ngf / 2**n`` channels at ``4 * 2**n``."""

    def __init__(self, ngf: int, in_dim: int, n_up: int = 4):
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(nn.Linear(in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU())
        self.build_upsamplings([ngf // 2 ** i for i in range(n_up + 1)], up_block_glu)

    def forward(self, z_code, c_code):
        return self.upsamplings(self.fc(torch.cat((c_code, z_code), 1)).view(-1, self.gf_dim, 4, 4))


class NextStageTrunk:
    """Mixin for the StackGAN++/AttnGAN/MirrorGAN ``NEXT_STAGE_G``: after a family's own joining
    of the condition (joint conv, word attention, GLAM), ``residual`` (``num_residual`` GLU
    residual blocks at ``width``) and ``upsample`` (2x, to ``width / 2``)."""

    def build_trunk(self, width: int, num_residual: int) -> None:
        self.residual = nn.Sequential(*[ResBlockGLU(width) for _ in range(num_residual)])
        self.upsample = up_block_glu(width, width // 2)

    def trunk(self, h: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.residual(h))


class TreeGenerator(nn.Module):
    """The StackGAN++/AttnGAN/MirrorGAN ``G_NET`` tree: ``ca_net`` (conditioning augmentation,
    GLU), ``h_net1`` (``INIT_STAGE_G``: noise + condition -> ``base_size`` at ``gf_dim``
    channels), ``img_net1``, then for every further branch k = 2..``branch_num`` a family's
    ``NEXT_STAGE_G`` as ``h_net{k}`` (from :meth:`make_stage`, doubling the size) and
    ``img_net{k}``. ``run(noise, sent, words, mask, eps=None) -> GenOutput``.

    ``attends_words``: the later stages are called ``(h, c_code, words, mask) -> (h, attention)``
    (AttnGAN, MirrorGAN) instead of ``(h, c_code) -> h`` (StackGAN++).
    """

    attends_words = False

    def __init__(self, t_dim: int, c_dim: int, nz: int, gf_dim: int, r_num: int, branch_num: int, base_size: int):
        super().__init__()
        self.config = dict(t_dim=t_dim, c_dim=c_dim, nz=nz, gf_dim=gf_dim, r_num=r_num, branch_num=branch_num,
                           base_size=base_size)
        n_up = tree_upsamplings(branch_num, base_size)
        self.nz, self.c_dim, self.eps_dims, self.branch_num = nz, c_dim, (c_dim,), branch_num
        self.imsize = base_size * 2 ** (branch_num - 1)
        self.ca_net = CA_NET(t_dim, c_dim, glu=True)
        self.h_net1 = INIT_STAGE_G(gf_dim * 2 ** n_up, nz + c_dim, n_up)  # official (64 px): gf_dim * 16
        self.img_net1 = GET_IMAGE_G(gf_dim)
        for k in range(2, branch_num + 1):
            stage, width = self.make_stage(k)
            self.add_module(f"h_net{k}", stage)
            self.add_module(f"img_net{k}", GET_IMAGE_G(width))

    @property
    def stage_sizes(self) -> list[int]:
        """Side of every branch's image, smallest first."""
        return [self.imsize // 2 ** (self.branch_num - 1 - k) for k in range(self.branch_num)]

    @property
    def returns_attention(self) -> bool:
        """``run`` returns word attention maps (an attending tree with 2+ branches)."""
        return self.attends_words and self.branch_num > 1

    def make_stage(self, k: int) -> tuple[nn.Module, int]:
        """Branch ``k``'s (>= 2) ``NEXT_STAGE_G`` built from ``self.config``, and its output width."""
        raise NotImplementedError

    def run(self, noise, sent, words=None, mask=None, eps=None) -> GenOutput:
        if self.attends_words and self.branch_num > 1 and words is None:
            raise ValueError("this generator attends over words: pass words [B, nef, T] and mask [B, T]")
        c_code, mu, logvar = self.ca_net(sent, eps)
        h = self.h_net1(noise, c_code)
        images, maps = [self.img_net1(h)], []
        for k in range(2, self.branch_num + 1):
            stage = getattr(self, f"h_net{k}")
            if self.attends_words:
                h, att = stage(h, c_code, words, mask)
                maps.append(att)
            else:
                h = stage(h, c_code)
            images.append(getattr(self, f"img_net{k}")(h))
        return GenOutput(images=images, attention=maps, mu=mu, logvar=logvar)

    def forward(self, noise, sent, words=None, mask=None):
        return self.run(noise, sent, words, mask).images[-1]
