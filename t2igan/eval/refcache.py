"""Reference features of real images, computed once and cached.

The cache key is a SHA-256 of everything the features depend on: the dataset (its folder,
split, image ids and each file's size and mtime), the image size and resize, which images
(indices) are used, and the extractor (name + SHA-256 of its weights). Files are written to
a temporary name and moved into place (``os.replace``), so a killed evaluation never leaves
a half-written cache entry.

Location: ``$T2IGAN_CACHE`` or ``$XDG_CACHE_HOME/t2igan`` or ``~/.cache/t2igan``, under
``ref_features/``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from t2igan import T2IError


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("T2IGAN_CACHE"):
        return Path(os.environ["T2IGAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "t2igan"


def dataset_fingerprint(ds) -> str:
    """SHA-256 over a captioned dataset's folder, split, ids and file sizes/mtimes."""
    h = hashlib.sha256()
    h.update(json.dumps([str(Path(ds.root).resolve()), ds.split, list(ds.ids)]).encode())
    for p in ds.image_paths:
        try:
            st = Path(p).stat()
            h.update(f"{p}:{st.st_size}:{int(st.st_mtime)}\n".encode())
        except OSError:
            h.update(f"{p}:missing\n".encode())
    return h.hexdigest()


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached_features(key_parts: dict, compute: Callable[[], dict[str, torch.Tensor]],
                    cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Features ``{name: [N, D]}`` from the cache, else ``compute()`` and store them.

    Returns (features, info) with info = {"key", "path", "hit"}.
    """
    key = cache_key(**key_parts)
    d = cache_root(cache_dir) / "ref_features"
    path = d / f"{key[:32]}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path) as z:
                feats = {k: torch.from_numpy(z[k].copy()) for k in z.files}
            return feats, {"key": key, "path": str(path), "hit": True}
        except (OSError, ValueError, KeyError):
            pass  # unreadable entry: recompute and overwrite
    feats = compute()
    info = {"key": key, "path": None, "hit": False}
    if use_cache:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{key[:32]}.tmp{os.getpid()}.npz"
            np.savez(tmp, **{k: v.detach().cpu().float().numpy() for k, v in feats.items()})
            meta_tmp = d / f".{key[:32]}.tmp{os.getpid()}.json"
            meta_tmp.write_text(json.dumps({"key": key, **key_parts}, indent=1, default=str) + "\n", encoding="utf-8")
            os.replace(meta_tmp, d / f"{key[:32]}.json")
            os.replace(tmp, path)
            info["path"] = str(path)
        except OSError as e:
            print(f"note: reference features not cached ({d}: {e.__class__.__name__})", flush=True)
    return feats, info


def check_cache_dir(cache_dir) -> None:
    if cache_dir is not None and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise T2IError(f"cache folder is a file: {cache_dir}")
