"""VGG-19 feature extractor with torchvision's module names (``features.{i}``), loaded from a
local torchvision ``vgg19`` state-dict file (``vgg19-dcbb9e9d.pth``); never downloaded.

Used by Gatys et al.'s style transfer (``t2igan.style``) and by SRNet's perceptual / style
losses (the ReLU outputs relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in both)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2igan import T2IError

ENV_VAR = "T2IGAN_VGG19_WEIGHTS"
# torchvision's cfg "E": channel widths, "M" = 2x2 pooling
CFG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# torchvision vgg19 classifier (unused here; accepted in the file and checked by shape)
CLASSIFIER = {"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,), "classifier.3.weight": (4096, 4096),
              "classifier.3.bias": (4096,), "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names() -> list[str]:
    """Names of ``features[i]`` in the paper's notation: conv1_1, relu1_1, ..., pool1, ..."""
    names, block, k = [], 1, 1
    for v in CFG_E:
        if v == "M":
            names.append(f"pool{block}")
            block, k = block + 1, 1
        else:
            names += [f"conv{block}_{k}", f"relu{block}_{k}"]
            k += 1
    return names


LAYERS = layer_names()  # LAYERS[i] is the name of features[i]


class VGG19Features(nn.Module):
    """torchvision ``vgg19().features`` (same module indices, so its state dict loads as is).

    ``pool``: ``max`` (torchvision) or ``avg`` (Gatys et al.: average pooling for synthesis,
    which gives smoother gradients); the weights are the same either way."""

    def __init__(self, pool: str = "max"):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be max or avg, got {pool!r}")
        layers: list[nn.Module] = []
        c = 3
        for v in CFG_E:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """``x``: (B, 3, H, W) RGB in [0, 1]; returns {layer name: (B, C_l, H_l, W_l)} for ``layers``."""
        want = set(layers)
        unknown = want - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown VGG-19 layer(s) {sorted(unknown)}; e.g. conv4_2, relu1_1")
        last = max(LAYERS.index(n) for n in want)
        h = (x - self.mean) / self.std
        out = {}
        for i, m in enumerate(self.features[: last + 1]):
            h = m(h)
            if LAYERS[i] in want:
                out[LAYERS[i]] = h
        return out


def resolve_weights(path: str | os.PathLike | None, flag: str = "--vgg") -> Path:
    """The VGG-19 file: ``path``, else the environment variable; refused in one line if missing."""
    p = path or os.environ.get(ENV_VAR)
    if not p:
        raise T2IError(f"VGG-19 weights are needed and never downloaded: pass {flag} PATH (torchvision's "
                       f"vgg19-dcbb9e9d.pth state dict) or set {ENV_VAR}=PATH")
    p = Path(p)
    if not p.is_file():
        raise T2IError(f"VGG-19 weights file not found: {p}")
    return p


def load_vgg19(path: str | os.PathLike, pool: str = "max") -> VGG19Features:
    """A frozen :class:`VGG19Features` in eval mode from a torchvision ``vgg19`` state-dict file.

    The file is read with ``weights_only=True`` (no code in it runs); its keys must be those of
    torchvision's ``vgg19`` (``features.*``, optionally ``classifier.*``, which is not used), with
    their shapes; anything else is refused in one line naming the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated, not a torch file
        raise T2IError(f"{path}: not a readable torchvision VGG-19 state dict ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise T2IError(f"{path}: expected a state dict of tensors (torchvision vgg19().state_dict()), "
                       f"found {type(state).__name__}")
    net = VGG19Features(pool)
    own = net.state_dict()
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    extra = sorted(k for k in state if k not in own and k not in CLASSIFIER)
    missing = sorted(k for k in own if k not in feats)
    if extra or missing:
        what = f"unexpected key {extra[0]!r}" if extra else f"missing key {missing[0]!r}"
        raise T2IError(f"{path}: not a torchvision VGG-19 state dict ({what})")
    for k, shape in CLASSIFIER.items():
        if k in state and tuple(state[k].shape) != shape:
            raise T2IError(f"{path}: '{k}' has shape {tuple(state[k].shape)}, VGG-19 has {shape}")
    for k, v in feats.items():
        if v.shape != own[k].shape:
            raise T2IError(f"{path}: '{k}' has shape {tuple(v.shape)}, VGG-19 has {tuple(own[k].shape)}")
        if not bool(torch.isfinite(v).all()):
            raise T2IError(f"{path}: '{k}' holds NaN or infinite values")
    net.load_state_dict({k: v.float() for k, v in feats.items()})
    return net.eval().requires_grad_(False)


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix of features (B, C, H, W) -> (B, C, C), unnormalised: G_ij = sum_k F_ik F_jk."""
    b, c, h, w = f.shape
    x = f.reshape(b, c, h * w)
    return x @ x.transpose(1, 2)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
