"""Captioned image folders: the project's generic on-disk format.

Three layouts are read (checked in this order):

1. ``t2igan-folder`` (written by ``t2igan data synth``)::

       DIR/dataset.json            {"format": "t2igan-folder", "attributes": {...}, ...}
       DIR/images/<id>.png         any PIL-readable image
       DIR/captions/<id>.txt       one caption per line (UTF-8)
       DIR/attributes.jsonl        optional: {"id", "attributes": {...}, "named": [[...], ...]}
       DIR/splits/<split>.txt      optional: ids of each split (absent: every image is 'train')

2. ``captions.jsonl``: lines ``{"image": "rel/path.jpg", "caption": "..."}`` (or
   ``"captions": [...]``, optional ``"split"`` and ``"attributes"``).
3. A plain folder of images each with a ``.txt`` beside it (``a.jpg`` + ``a.txt``).

Images are decoded once into a uint8 array ``[N, S, S, 3]`` cached as ``.npy`` under
``DIR/.cache/`` and memory-mapped afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from t2igan import T2IError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


@dataclass
class CaptionedImages:
    root: Path
    split: str
    ids: list[str]
    image_paths: list[Path]
    captions: list[list[str]]
    attributes: list[dict[str, str]] | None = None  # per image, when the dataset has labels
    named: list[list[list[str]]] | None = None  # per image, per caption: attribute keys it names
    attribute_values: dict[str, list[str]] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def images_uint8(self, size: int, cache: bool = True, progress: bool = False) -> np.ndarray:
        """All images of the split as uint8 ``[N, size, size, 3]`` (centre-cropped square, resized)."""
        tag, extra = self._cache_tag()
        key = hashlib.sha1(
            json.dumps([self.split, size, [str(p) for p in self.image_paths],
                        [_stat_key(p) for p in self.image_paths], *extra]).encode()
        ).hexdigest()[:16]
        cache_dir = self.root / ".cache"
        path = cache_dir / f"{self.split}_{tag}{size}_{key}.npy"
        if cache and path.is_file():
            return np.load(path, mmap_mode="r")
        arr = np.empty((len(self), size, size, 3), dtype=np.uint8)
        it = range(len(self))
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc=f"decoding {self.split} images", unit="img")
        for i in it:
            arr[i] = self._decode(i, size)
        if cache:
            try:
                cache_dir.mkdir(exist_ok=True)
                tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
                np.save(tmp, arr)
                os.replace(tmp, path)
                return np.load(path, mmap_mode="r")
            except OSError:
                pass  # read-only dataset: keep the in-memory copy
        return arr


    def _cache_tag(self) -> tuple[str, list]:
        """(file-name tag, extra hashed inputs) of the decoded cache; subclasses that decode
        differently (e.g. crop to a box) return their own so caches never mix."""
        return "", []

    def _decode(self, i: int, size: int) -> np.ndarray:
        return load_image(self.image_paths[i], size)


def _stat_key(p: Path) -> list:
    try:
        st = p.stat()
        return [st.st_size, int(st.st_mtime)]
    except OSError:
        return [0, 0]


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode an image to RGB uint8 ``[size, size, 3]``: centre square crop, Lanczos resize."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except FileNotFoundError:
        raise T2IError(f"image file missing: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise T2IError(f"cannot read image {path}: {e.__class__.__name__}") from None
    w, h = im.size
    s = min(w, h)
    if (w, h) != (s, s):
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def read_caption_file(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise T2IError(f"caption file missing: {path}") from None
    except UnicodeDecodeError as e:
        raise T2IError(f"caption file {path} is not UTF-8 (byte {e.start})") from None
    caps = [line.strip() for line in text.splitlines() if line.strip()]
    if not caps:
        raise T2IError(f"caption file {path} has no caption (empty)")
    return caps


def _find_image(stem_dir: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS:
        p = stem_dir / (stem + ext)
        if p.is_file():
            return p
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise T2IError(f"{path}: not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise T2IError(f"{path}: expected a JSON object")
    return data


def _read_split(root: Path, split: str, all_ids: list[str]) -> list[str]:
    sdir = root / "splits"
    if not sdir.is_dir():
        if split != "train" and split != "all":
            raise T2IError(f"{root} has no splits/ folder, so only split 'train' (every image) exists, not '{split}'")
        return all_ids
    if split == "all":
        return all_ids
    f = sdir / f"{split}.txt"
    if not f.is_file():
        have = sorted(p.stem for p in sdir.glob("*.txt"))
        raise T2IError(f"split '{split}' not found in {sdir} (have: {', '.join(have) or 'none'})")
    ids = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    known = set(all_ids)
    for i in ids:
        if i not in known:
            raise T2IError(f"{f}: id '{i}' has no caption file / image")
    return ids


def load_folder(root: str | os.PathLike, split: str = "train") -> CaptionedImages:
    """Read a captioned-image folder (any of the three layouts); errors name the bad file."""
    root = Path(root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    if (root / "dataset.json").is_file():
        return _load_t2igan_folder(root, split)
    if (root / "captions.jsonl").is_file():
        return _load_jsonl(root, root / "captions.jsonl", split)
    return _load_plain(root, split)


def _load_t2igan_folder(root: Path, split: str) -> CaptionedImages:
    meta = _read_json(root / "dataset.json")
    if meta.get("format") != "t2igan-folder":
        raise T2IError(f"{root / 'dataset.json'}: 'format' must be 't2igan-folder', got {meta.get('format')!r}")
    cap_dir, img_dir = root / "captions", root / "images"
    if not cap_dir.is_dir():
        raise T2IError(f"{root}: missing captions/ folder")
    all_ids = sorted(p.stem for p in cap_dir.glob("*.txt"))
    if not all_ids:
        raise T2IError(f"{cap_dir}: no caption files (*.txt)")
    ids = _read_split(root, split, all_ids)
    paths, caps = [], []
    for i in ids:
        img = _find_image(img_dir, i)
        if img is None:
            raise T2IError(f"{cap_dir / (i + '.txt')}: no image '{i}.*' in {img_dir}")
        paths.append(img)
        caps.append(read_caption_file(cap_dir / f"{i}.txt"))
    attributes = named = None
    values = meta.get("attributes")
    attr_file = root / "attributes.jsonl"
    if attr_file.is_file():
        by_id = {}
        for n, line in enumerate(attr_file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                by_id[rec["id"]] = rec
            except (ValueError, KeyError, TypeError):
                raise T2IError(f"{attr_file}:{n}: expected a JSON object with an 'id'") from None
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise T2IError(f"{attr_file}: no attributes for id '{missing[0]}'")
        attributes = [dict(by_id[i].get("attributes", {})) for i in ids]
        named = [by_id[i].get("named") or [sorted(a) for _ in c] for i, a, c in zip(ids, attributes, caps)]
        for i, c, nm in zip(ids, caps, named):
            if len(nm) != len(c):
                raise T2IError(f"{attr_file}: id '{i}' has {len(nm)} 'named' lists for {len(c)} captions")
    return CaptionedImages(root, split, ids, paths, caps, attributes, named, values, meta)


def _load_jsonl(root: Path, path: Path, split: str) -> CaptionedImages:
    ids, paths, caps, attrs = [], [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise T2IError(f"{path}:{n}: not valid JSON") from None
        if not isinstance(rec, dict) or "image" not in rec:
            raise T2IError(f"{path}:{n}: expected an object with 'image' and 'caption' or 'captions'")
        if rec.get("split", "train") != split and split != "all":
            continue
        c = rec.get("captions", [rec["caption"]] if "caption" in rec else None)
        if not isinstance(c, list) or not c or not all(isinstance(x, str) and x.strip() for x in c):
            raise T2IError(f"{path}:{n}: empty or missing caption")
        img = root / rec["image"]
        if not img.is_file():
            raise T2IError(f"{path}:{n}: image file missing: {img}")
        ids.append(str(rec.get("id", Path(rec["image"]).stem)))
        paths.append(img)
        caps.append([x.strip() for x in c])
        attrs.append(rec.get("attributes"))
    if not ids:
        raise T2IError(f"{path}: no records for split '{split}'")
    attributes = attrs if all(isinstance(a, dict) for a in attrs) else None
    return CaptionedImages(root, split, ids, paths, caps, attributes, None, None, {"format": "jsonl"})


def _load_plain(root: Path, split: str) -> CaptionedImages:
    txts = sorted(p for p in root.glob("*.txt"))
    if not txts:
        raise T2IError(f"{root}: no dataset.json, captions.jsonl or <image>.txt caption files found")
    all_ids = [p.stem for p in txts]
    ids = _read_split(root, split, all_ids)
    paths, caps = [], []
    for i in ids:
        img = _find_image(root, i)
        if img is None:
            raise T2IError(f"{root / (i + '.txt')}: no image '{i}.*' beside it")
        paths.append(img)
        caps.append(read_caption_file(root / f"{i}.txt"))
    return CaptionedImages(root, split, ids, paths, caps, None, None, None, {"format": "plain-folder"})
