"""LAFITE (Zhou et al., "Towards Language-Free Training for Text-to-Image Generation", CVPR 2022):
a StyleGAN2 generator and residual discriminator conditioned on a CLIP feature.

Generator: ``z -> MappingNetwork -> w`` (broadcast to every layer), then the ``skip``
SynthesisNetwork (blocks ``b4, b8, ...``: a learnt 4x4 constant, modulated/demodulated 3x3
convolutions with per-pixel noise, a ToRGB per block summed over upsampled resolutions). The
CLIP feature enters every style affine as in LAFITE's "structure 2": ``fts -> pre_0 -> pre_1``
(two small leaky-ReLU layers), concatenated with ``w``, then ``affine_0`` gives the layer's
styles. Discriminator: the StyleGAN2 ``resnet`` discriminator whose epilogue also returns a
semantic feature ``fts`` (compared with the CLIP feature by the contrastive losses) and adds
its projection on the condition to the logit.

Pure PyTorch (no custom CUDA ops). Resampling uses the StyleGAN2 ``[1, 3, 3, 1]`` low-pass
filter written as zero insertion / subsampling and a depthwise convolution; the up-convolution
is a stride-2 transposed convolution followed by that filter, as in StyleGAN2. Names follow the
official code (``mapping.fc0``, ``synthesis.b8.conv0.affine_0``, ``b4.fts``, ``b4.out``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)
PROJECTIONS = ("sample", "batch")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def setup_filter(f=(1, 3, 3, 1)) -> torch.Tensor:
    """The separable 2-d low-pass filter of a 1-d tap list, normalised to sum 1 (``[k, k]``)."""
    f = torch.as_tensor(f, dtype=torch.float32)
    f = f.ger(f)
    return f / f.sum()


def filter2d(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float = 1.0) -> torch.Tensor:
    """Depthwise convolution of every channel with ``f`` after zero padding ``pad`` (before, after) on both axes."""
    C = x.size(1)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    w = (f * gain).to(x.dtype)[None, None].expand(C, 1, *f.shape)
    return F.conv2d(x, w, groups=C)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zero insertion then the filter with gain 4 (StyleGAN2 ``upsample2d``)."""
    B, C, H, W = x.shape
    x = F.pad(x.reshape(B, C, H, 1, W, 1), (0, 1, 0, 0, 0, 1)).reshape(B, C, 2 * H, 2 * W)
    k = f.size(0)
    return filter2d(x, f, ((k + 1) // 2, (k - 2) // 2), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x downsampling: the filter, then every second pixel (StyleGAN2 ``downsample2d``)."""
    k = f.size(0)
    return filter2d(x, f, ((k - 1) // 2, (k - 2) // 2))[:, :, ::2, ::2]


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Bias, activation (``linear`` | ``lrelu`` with slope 0.2 and gain sqrt(2)), gain and clamp to [-clamp, clamp]."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = gain * LRELU_GAIN
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp > 0:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """StyleGAN2's modulated convolution: the weight scaled per sample by ``styles [B, I]`` over its input
    channels, optionally demodulated (each output filter to unit norm), then a convolution (``up=2``: a
    stride-2 transposed convolution followed by the filter). ``fused_modconv``: one grouped convolution
    with per-sample weights; else the activations are scaled before and after one shared convolution
    (the same function)."""
    B = x.size(0)
    O, I, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(B, 1, I, 1, 1)  # (B, O, I, k, k)
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # (B, O)
    if fused_modconv:
        if demodulate:
            w = w * dcoefs.reshape(B, O, 1, 1, 1)
        xg = x.reshape(1, B * I, *x.shape[2:])
        if up == 1:
            y = F.conv2d(xg, w.reshape(B * O, I, kh, kw).to(x.dtype), padding=padding, groups=B)
        else:
            y = F.conv_transpose2d(xg, w.transpose(1, 2).reshape(B * I, O, kh, kw).to(x.dtype), stride=2, groups=B)
        y = y.reshape(B, O, *y.shape[2:])
    else:
        xs = x * styles.to(x.dtype).reshape(B, I, 1, 1)
        if up == 1:
            y = F.conv2d(xs, weight.to(x.dtype), padding=padding)
        else:
            y = F.conv_transpose2d(xs, weight.transpose(0, 1).to(x.dtype), stride=2)
        if demodulate:
            y = y * dcoefs.to(x.dtype).reshape(B, O, 1, 1)
    if up != 1:  # (2H + k - 2) -> 2H: the filter with gain 4 and the padding of the transposed convolution
        k = resample_filter.size(0)
        p0, p1 = padding + (k + 1) // 2 - (kw - 1), padding + (k - 2) // 2 - (kw - 2)
        y = filter2d(y, resample_filter, (p0, p1), gain=4.0)
    if noise is not None:
        y = y + noise.to(y.dtype)
    return y


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer (weights stored as N(0, 1) / lr_multiplier, scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation  # linear | lrelu
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        x = x.matmul(w.t())
        return bias_act(x, b, self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional 2x downsampling (filter, then stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        k = self.weight.size(-1)
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        elif k == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter), w)
        else:  # filter with the convolution's padding added, then a strided convolution
            fk = self.resample_filter.size(0)
            x = filter2d(x, self.resample_filter, (self.padding + (fk - 1) // 2, self.padding + (fk - 2) // 2))
            x = F.conv2d(x, w, stride=2)
        clamp = self.conv_clamp * gain if self.conv_clamp else None
        return bias_act(x, self.bias, self.activation, gain=gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z -> w: pixel-normalised noise through ``num_layers`` leaky-ReLU layers (lr multiplier 0.01),
    broadcast to ``num_ws`` layers; keeps the moving average ``w_avg`` for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers, self.w_avg_beta = z_dim, w_dim, num_ws, num_layers, w_avg_beta
        feats = [z_dim] + [w_dim] * num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(feats[idx], feats[idx + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, skip_w_avg_update: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.training and not skip_w_avg_update:
            self.track_w_avg(x.detach().float().mean(0))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x

    @torch.no_grad()
    def track_w_avg(self, mean: torch.Tensor) -> None:
        """Move ``w_avg`` towards a batch's mean w (``forward`` passes its own batch's; a distributed step
        skips that and passes the global batch's, which no process sees alone)."""
        self.w_avg.copy_(mean.lerp(self.w_avg, self.w_avg_beta))


def pixel_noise(rows: int, resolution: int, device, shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Per-pixel noise ``(rows, 1, R, R)`` of a synthesis layer; ``shard=(rank, size)``: this process's rows
    of the global batch's draw (``rows * size``, strided as the batch), the same numbers on any number of processes."""
    rank, size = shard
    if size == 1:
        return torch.randn(rows, 1, resolution, resolution, device=device)
    return torch.randn(rows * size, 1, resolution, resolution, device=device)[rank::size]


def _structure2(layer: nn.Module, w_dim: int, f_dim: int, fts_dim: int, in_channels: int) -> None:
    """LAFITE structure 2 of one layer: styles ``affine_0(cat(pre_1(pre_0(fts)), w))``."""
    hidden = (f_dim + fts_dim) // 2
    layer.pre_0 = FullyConnectedLayer(f_dim, hidden, activation="lrelu", lr_multiplier=0.01)  # the CLIP feature ...
    layer.pre_1 = FullyConnectedLayer(hidden, fts_dim, activation="lrelu", lr_multiplier=0.01)  # ... processed
    layer.affine_0 = FullyConnectedLayer(w_dim + fts_dim, in_channels, bias_init=1)  # styles of [fts, w]


def _styles(layer: nn.Module, w: torch.Tensor, fts: torch.Tensor) -> torch.Tensor:
    f = layer.pre_1(layer.pre_0(fts.to(w.dtype)))
    return layer.affine_0(torch.cat([f, w], dim=-1))


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (styles from ``[fts, w]``), per-pixel noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, f_dim: int, fts_dim: int = 512,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True, resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        _structure2(self, w_dim, f_dim, fts_dim, in_channels)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x, w, fts, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1.0,
                shard: tuple[int, int] = (0, 1)):
        styles = _styles(self, w, fts)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = pixel_noise(x.size(0), self.resolution, x.device, shard) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp else None
        return bias_act(x, self.bias, "lrelu", gain=gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to RGB (no demodulation), styles from ``[fts, w]``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, f_dim: int, fts_dim: int = 512,
                 kernel_size: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        _structure2(self, w_dim, f_dim, fts_dim, in_channels)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fts, fused_modconv: bool = True):
        styles = _styles(self, w, fts) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the ``skip`` generator: (const | up-conv0), conv1, ToRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 f_dim: int, fts_dim: int = 512, resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.w_dim, self.resolution, self.img_channels = in_channels, w_dim, resolution, img_channels
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        kw = {"w_dim": w_dim, "resolution": resolution, "f_dim": f_dim, "fts_dim": fts_dim, "conv_clamp": conv_clamp}
        self.num_conv, self.num_torgb = 0, 1
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter, **kw)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **kw)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, f_dim=f_dim, fts_dim=fts_dim, conv_clamp=conv_clamp)

    def forward(self, x, img, ws, fts, noise_mode: str = "random", fused_modconv: bool | None = None,
                shard: tuple[int, int] = (0, 1)):
        """``shard``: (rank, processes) of a distributed step, whose per-pixel noise is the global batch's (:func:`pixel_noise`)."""
        if fused_modconv is None:  # the official choice: fused at inference, two cheap scalings in training
            fused_modconv = not self.training
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.size(0), 1, 1, 1)
        else:
            x = self.conv0(x, next(w_iter), fts, noise_mode=noise_mode, fused_modconv=fused_modconv, shard=shard)
        x = self.conv1(x, next(w_iter), fts, noise_mode=noise_mode, fused_modconv=fused_modconv, shard=shard)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fts, fused_modconv=fused_modconv).float()
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """Blocks ``b4, b8, ..., b{img_resolution}``; widths ``min(channel_base // res, channel_max)``."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, f_dim: int, channel_base: int = 32768,
                 channel_max: int = 512, fts_dim: int = 512, conv_clamp: float | None = 256):
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        ch = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(ch[res // 2] if res > 4 else 0, ch[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, f_dim=f_dim, fts_dim=fts_dim, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last ToRGB

    def forward(self, ws: torch.Tensor, fts: torch.Tensor, **block_kwargs) -> torch.Tensor:
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), fts, **block_kwargs)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """LAFITE generator: ``forward(z [B, z_dim], sent [B, f_dim]) -> images [B, 3, S, S]`` (about [-1, 1]).

    ``sent``: the L2-normalised CLIP feature (a caption's text feature, or in language-free training
    a perturbed image feature). Noise inputs are random in training and the stored constants in eval
    mode (``noise_mode``), so inference is a function of ``(z, sent)``."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, f_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, map_num: int = 8,
                 fts_dim: int = 512, conv_clamp: float | None = 256):
        """``z_dim``: noise width; ``w_dim``: intermediate latent width; ``f_dim``: CLIP embedding width;
        ``img_resolution``: output side; ``channel_base``/``channel_max``: widths min(base // res, max);
        ``map_num``: mapping layers; ``fts_dim``: width of the processed CLIP feature in every affine
        (official 512); ``conv_clamp``: activation clamp (official 256; None/0 = off)."""
        super().__init__()
        self.config = {"z_dim": z_dim, "w_dim": w_dim, "f_dim": f_dim, "img_resolution": img_resolution,
                       "img_channels": img_channels, "channel_base": channel_base, "channel_max": channel_max,
                       "map_num": map_num, "fts_dim": fts_dim, "conv_clamp": conv_clamp}  # constructor arguments
        self.z_dim, self.w_dim, self.f_dim, self.img_resolution = z_dim, w_dim, f_dim, img_resolution
        self.nz, self.imsize = z_dim, img_resolution  # the Pipeline's names
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, f_dim, channel_base, channel_max,
                                          fts_dim, conv_clamp or None)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=map_num)

    def forward(self, z: torch.Tensor, sent: torch.Tensor, truncation_psi: float = 1.0,
                noise_mode: str | None = None, ws: torch.Tensor | None = None) -> torch.Tensor:
        if ws is None:
            ws = self.mapping(z, truncation_psi=truncation_psi)
        mode = noise_mode or ("random" if self.training else "const")
        return self.synthesis(ws, sent, noise_mode=mode)


class DiscriminatorBlock(nn.Module):
    """Residual block of the ``resnet`` discriminator: (fromrgb), conv0, conv1 (down), 1x1 skip (down)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


def mbstd_group(group_size: int | None, n: int) -> int:
    """The group size :class:`MinibatchStdLayer` uses on a batch of ``n``: ``group_size`` (None: the batch),
    at most ``n``, lowered until it divides ``n``. Group ``j`` holds rows ``j, j + n / G, j + 2 n / G, ...``."""
    g = min(group_size, n) if group_size is not None else n
    while n % g:
        g -= 1
    return g


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation over groups of ``group_size`` images (averaged over channels and pixels).
    A batch the group size does not divide uses the largest group size that does."""

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        G = mbstd_group(self.group_size, N)
        Fc = self.num_channels
        y = x.float().reshape(G, -1, Fc, C // Fc, H, W)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # (n, F, c, H, W)
        y = y.mean(dim=[2, 3, 4]).reshape(-1, Fc, 1, 1).repeat(G, 1, H, W)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, conv, fc; ``out`` gives the logit, ``fts`` the semantic feature, whose
    projection on the condition is added to the logit."""

    def __init__(self, in_channels: int, resolution: int, f_dim: int, use_fts: bool = True, mbstd_group_size: int = 4,
                 mbstd_num_channels: int = 1, conv_clamp: float | None = None, projection: str = "sample"):
        super().__init__()
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
        self.in_channels, self.resolution, self.use_fts, self.projection = in_channels, resolution, use_fts, projection
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        if use_fts:
            self.fts = FullyConnectedLayer(in_channels, f_dim)
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x, fts: torch.Tensor | None, use_norm: bool = False):
        x = x.float().contiguous()
        if self.mbstd is not None:
            x = self.mbstd(x)
        fc = self.fc(self.conv(x).flatten(1))
        logits = self.out(fc)  # (B, 1)
        if not self.use_fts:
            return logits, fts
        d_fts = self.fts(fc)
        if use_norm:
            d_fts = d_fts / d_fts.norm(dim=-1, keepdim=True)
        if fts is not None:
            proj = d_fts * fts.to(d_fts.dtype)
            # sample: each image's own projection <d_fts_i, fts_i>; batch: the official code's sum over the whole batch
            logits = logits + (proj.sum(1, keepdim=True) if self.projection == "sample" else proj.sum())
        return logits, d_fts


class Discriminator(nn.Module):
    """LAFITE discriminator: ``forward(img, fts) -> (logits [B, 1], d_fts [B, f_dim])``."""

    def __init__(self, img_resolution: int = 256, img_channels: int = 3, f_dim: int = 512, channel_base: int = 32768,
                 channel_max: int = 512, mbstd_group_size: int = 4, use_norm: bool = False, use_fts: bool = True,
                 conv_clamp: float | None = 256, projection: str = "sample"):
        """``use_norm``: L2-normalise the feature of the ``fts`` head before the projection (official
        default off); ``use_fts``: have that head; ``projection``: ``sample`` (each image's own
        <d_fts, fts>) or ``batch`` (the official code: the sum over the batch added to every logit)."""
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        super().__init__()
        self.img_resolution, self.use_norm = img_resolution, use_norm
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        ch = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(ch[res] if res < img_resolution else 0, ch[res], ch[res // 2],
                                                        res, img_channels, conv_clamp=conv_clamp or None))
        self.b4 = DiscriminatorEpilogue(ch[4], 4, f_dim, use_fts=use_fts, mbstd_group_size=mbstd_group_size,
                                        conv_clamp=conv_clamp or None, projection=projection)

    def forward(self, img: torch.Tensor, fts: torch.Tensor | None = None):
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x, fts, use_norm=self.use_norm)
