"""The two FID backbones of the field, and the choice between them (``t2igan eval --fid-backbone``).

* ``tf-inception``: the TF Inception graph of 2015-12-05 as torch-fidelity runs it
  (:mod:`t2igan.eval.inception`): uint8 input, TF1-compatible bilinear resize to 299,
  ``(x - 128) / 128``. StackGAN / AttnGAN (TF FID), LAFITE, StyleGAN-T report FID with it.
* ``torchvision-inception``: torchvision's ImageNet ``inception_v3`` (weights
  ``inception_v3_google-*.pth`` from a local file), as DF-GAN and GALIP compute FID (their copy
  of an early pytorch-fid ``InceptionV3([3])``, whose blocks run torchvision's layers directly, so
  ``transform_input`` is not applied): the generator's float images in [0, 1] go in unquantised
  (real images as uint8 / 255), resized to 299x299 by ``F.interpolate(mode="bilinear",
  align_corners=False)`` without antialiasing, scaled to ``2 x - 1``; the 2048-d average pool
  output is the FID feature, the 1000-way ImageNet classifier's logits give IS.

The two give numbers on different scales: DM-GAN's README lists AttnGAN on CUB at 23.98
(PyTorch) and 14.01 (TF). Every result names the backbone it used.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2igan import T2IError

BACKBONES = ("tf-inception", "torchvision-inception")
TV_ENV_VAR = "T2IGAN_TORCHVISION_INCEPTION_WEIGHTS"
TV_WEIGHTS_NAME = "inception_v3_google-0cc3c7bd.pth"
TV_HINT = (f"the torchvision-inception backbone needs torchvision's ImageNet Inception-v3 weights {TV_WEIGHTS_NAME} "
           f"(https://download.pytorch.org/models/{TV_WEIGHTS_NAME}; DF-GAN's era: inception_v3_google-1a9a5a14.pth); "
           f"download it on a machine with internet and pass --inception-weights PATH or set {TV_ENV_VAR}=PATH")
TV_RESIZE = ("float [0, 1] images unquantised (uint8 input / 255), resized to 299x299 by torch bilinear interpolation "
             "(align_corners=False, no antialias), then 2 x - 1 (DF-GAN / GALIP's pytorch-fid InceptionV3([3]) with "
             "torchvision ImageNet weights, transform_input not applied)")
_TV_EXPECTED = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
                "fc.weight": (1000, 2048), "fc.bias": (1000,)}


def _resolve_tv(path) -> Path:
    src = "--inception-weights"
    if path is None or str(path) == "":
        path, src = os.environ.get(TV_ENV_VAR) or None, TV_ENV_VAR
    if path is None:
        raise T2IError(f"no torchvision Inception weights given: {TV_HINT}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise T2IError(f"torchvision Inception weights not found: {p} (from {src}); {TV_HINT}")
    return p


class TorchvisionInception(nn.Module):
    """torchvision ``inception_v3`` (ImageNet) giving {"2048": [B, 2048] pool features,
    "logits_unbiased": [B, 1000] classifier logits} for images uint8 or float [0, 1] ``[B, 3, H, W]``."""

    backbone = "torchvision-inception"
    has_logits = True

    def __init__(self, net: nn.Module, weights_path: str, weights_sha256: str):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.weights_path, self.weights_sha256 = weights_path, weights_sha256

    @classmethod
    def from_file(cls, path=None, device="cpu") -> "TorchvisionInception":
        import torchvision

        from t2igan.eval.evaluator import sha256_file

        p = _resolve_tv(path)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one clear line
            msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            raise T2IError(f"{p}: not a readable PyTorch weights file ({msg[:200]}); {TV_HINT}") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise T2IError(f"{p}: expected a state dict of tensors (torchvision's {TV_WEIGHTS_NAME})")
        for k, shape in _TV_EXPECTED.items():
            if k not in state:
                raise T2IError(f"{p}: not torchvision's ImageNet Inception-v3: no '{k}' ({len(state)} tensors)")
            if tuple(state[k].shape) != shape:
                raise T2IError(f"{p}: not torchvision's ImageNet Inception-v3: '{k}' has shape "
                               f"{tuple(state[k].shape)}, expected {shape}"
                               + (" (this looks like the TF FID Inception: use --fid-backbone tf-inception)"
                                  if k == "fc.weight" and tuple(state[k].shape)[0] == 1008 else ""))
        aux = any(k.startswith("AuxLogits.") for k in state)
        net = torchvision.models.inception_v3(weights=None, aux_logits=aux, init_weights=False, transform_input=False)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing", "Unexpected"))), lines[-1])
            raise T2IError(f"{p}: weights do not fit torchvision's Inception-v3 ({detail[:300]})") from None
        return cls(net, str(p.resolve()), sha256_file(p)).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def train(self, mode: bool = True) -> "TorchvisionInception":
        super().train(mode)
        self.net.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise T2IError(f"Inception features need images [B, 3, H, W], got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise T2IError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
        x = x.to(self.device, torch.float32)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # (B, 3, 299, 299)
        x = 2 * x - 1
        n = self.net
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)
        pool = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 2048)
        return {"2048": pool.float(), "logits_unbiased": n.fc(pool).float()}  # logits (B, 1000)

    def describe(self) -> dict:
        return {"backbone": self.backbone, "name": "torchvision Inception-v3 (ImageNet, IMAGENET1K_V1)",
                "implementation": "torchvision.models.inception_v3 layers run as pytorch-fid's InceptionV3 blocks",
                "weights_source": "user file", "weights_path": self.weights_path,
                "weights_sha256": self.weights_sha256, "fid_kid_features": "2048 (average pool)",
                "is_features": "ImageNet classifier logits (1000)", "quantisation": "none (float input kept)",
                "resize": TV_RESIZE, "input_size": 299}


def load_fid_backbone(backbone: str, weights=None, device="cpu", cache_dir=None):
    """The FID network of ``backbone`` ('tf-inception' | 'torchvision-inception') from ``weights``
    (a file; for tf-inception also 'fid-helper'; None: the backbone's environment variable)."""
    if backbone == "tf-inception":
        from t2igan.eval.inception import InceptionFeatures

        return InceptionFeatures.from_file(weights, device=device, cache_dir=cache_dir)
    if backbone == "torchvision-inception":
        if weights is not None and str(weights) == "fid-helper":
            raise T2IError("--inception-weights fid-helper is the TF FID Inception: use --fid-backbone tf-inception")
        return TorchvisionInception.from_file(weights, device=device)
    raise T2IError(f"--fid-backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")


def backbone_requested(backbone: str, weights) -> bool:
    """Whether FID/KID/IS with ``backbone`` are asked for (weights given or its environment variable set)."""
    from t2igan.eval.inception import ENV_VAR

    env = ENV_VAR if backbone == "tf-inception" else TV_ENV_VAR
    return weights is not None or bool(os.environ.get(env))


def backbone_env_var(backbone: str) -> str:
    from t2igan.eval.inception import ENV_VAR

    return ENV_VAR if backbone == "tf-inception" else TV_ENV_VAR
