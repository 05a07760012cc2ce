"""Captioned image folders: the project's generic on-disk format.

Three layouts are read (checked in this order):

1. ``t2igan-folder`` (written by ``t2igan data synth``)::

       DIR/dataset.json            {"format": "t2igan-folder", "attributes": {...}, ...}
       DIR/images/<id>.png         any PIL-readable image
       DIR/captions/<id>.txt       one caption per line (UTF-8)
       DIR/attributes.jsonl        optional: {"id", "attributes": {...}, "named": [[...], ...]}
       DIR/splits/<split>.txt      optional: ids of each split (absent: every image is 'train')

2. ``captions.jsonl``: lines ``{"image": "rel/path.jpg", "caption": "..."}`` (or
   ``"captions": [...]``, optional ``"split"``, ``"id"`` and ``"attributes"``).
3. A plain folder of images each with a ``.txt`` beside it (``a.jpg`` + ``a.txt``).

A ``dataset.json`` may also name layout 2 or 3 (``"format": "jsonl"`` / ``"plain-folder"``)
to carry settings for them. Every file a dataset names must lie inside ``DIR`` once symlinks
are resolved (:class:`PathGuard`, which the StackGAN/AttnGAN and COCO loaders use too);
``"allow_outside_root": true`` in ``DIR/dataset.json`` lifts that (absolute and ``../``
image paths in ``captions.jsonl``, symlinks to other disks).

Captions are checked as training uses them (:func:`check_caption`): a string, not empty, at
most :data:`~t2igan.data.text.MAX_CAPTION_CHARS` characters, with at least one word.

Images are decoded once into a uint8 array ``[N, S, S, 3]`` cached as ``.npy`` under
``DIR/.cache/`` and memory-mapped afterwards; a ``.npy.json`` sidecar (shape, size, SHA-256)
written after it lets a truncated or altered cache be detected and rebuilt. Images of more
than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels are refused (decompression bombs).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from t2igan import T2IError
from t2igan.data.text import MAX_CAPTION_CHARS, tokenize

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
SETTINGS_FILE = "dataset.json"
FOLDER_FORMATS = ("t2igan-folder", "jsonl", "plain-folder")


# ----------------------------------------------------------------------------- paths
def dataset_settings(root: Path) -> dict:
    """``DIR/dataset.json`` as a dict ({} when absent), with ``allow_outside_root`` checked."""
    path = root / SETTINGS_FILE
    if not path.is_file():
        return {}
    meta = _read_json(path)
    allow = meta.get("allow_outside_root", False)
    if not isinstance(allow, bool):
        raise T2IError(f"{path}: 'allow_outside_root' must be true or false, got {allow!r:.60}")
    return meta


class PathGuard:
    """Confines the files one dataset reads to its folder.

    :meth:`join` turns a path string read from a dataset file (a JSONL ``image``, a COCO
    ``file_name``) into a path under the folder; :meth:`check` accepts a path built under the
    folder only if it still lies inside once symlinks are resolved. Both refuse symlink loops.
    ``allow_outside=True`` (``"allow_outside_root": true`` in ``dataset.json``) accepts
    absolute paths, ``../`` and symlinks that leave the folder.
    """

    def __init__(self, root: str | os.PathLike, allow_outside: bool | None = None):
        self.root = Path(root)
        if allow_outside is None:
            allow_outside = bool(dataset_settings(self.root).get("allow_outside_root", False))
        self.allow_outside = allow_outside
        try:
            self.real = os.path.realpath(self.root, strict=True)
        except OSError as e:
            raise T2IError(f"dataset folder {self.root}: {e.strerror or e.__class__.__name__}") from None
        self._dirs: dict[str, str] = {}

    def join(self, rel, where: str, field: str = "image", base: Path | None = None) -> Path:
        """``base / rel`` (base: the dataset folder) for a path string read at ``where``."""
        if not isinstance(rel, str) or not rel.strip() or "\x00" in rel:
            raise T2IError(f"{where}: '{field}' must be a non-empty path string, got {rel!r:.80}")
        p = Path(rel)
        if not self.allow_outside and (p.is_absolute() or ".." in p.parts):
            raise T2IError(f"{where}: '{field}' {rel!r} is absolute or goes up with '..': paths must stay inside "
                           f"the dataset folder {self.root} (or set \"allow_outside_root\": true in "
                           f"{self.root / SETTINGS_FILE})")
        return self.check((base or self.root) / p, where)

    def check(self, p: Path, where: str | None = None) -> Path:
        """``p`` unchanged, after checking where it resolves to; a missing file passes (its
        reader reports it)."""
        pre = f"{where}: " if where else ""
        real = self._resolve(p, pre)
        if not self.allow_outside and not _inside(real, self.real):
            raise T2IError(f"{pre}{p} resolves to {real}, outside the dataset folder {self.root} "
                           f"(a symlink? allow it with \"allow_outside_root\": true in {self.root / SETTINGS_FILE})")
        return p

    def _resolve(self, p: Path, pre: str) -> str:
        parent, name = os.path.split(os.fspath(p))
        parent = parent or "."
        rparent = self._dirs.get(parent)
        try:
            if rparent is None:
                rparent = os.path.realpath(parent, strict=True)
                self._dirs[parent] = rparent
            real = os.path.join(rparent, name)
            if name in ("", ".", "..") or os.path.islink(real):
                real = os.path.realpath(real, strict=True)
            return real
        except FileNotFoundError:
            return os.path.realpath(p)  # missing (or a dangling link): where it would be
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise T2IError(f"{pre}{p}: symlink loop (too many levels of symbolic links)") from None
            raise T2IError(f"{pre}cannot read {p}: {e.strerror or e.__class__.__name__}") from None


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def file_present(p: Path) -> bool:
    """A file, or a symlink (broken or looping: :meth:`PathGuard.check` then says which)."""
    return p.is_file() or p.is_symlink()


# ----------------------------------------------------------------------------- text
def _read_bytes(path: Path, what: str = "file") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise T2IError(f"{what} missing: {path}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise T2IError(f"{path}: symlink loop (too many levels of symbolic links)") from None
        raise T2IError(f"cannot read {path}: {e.strerror or e.__class__.__name__}") from None


def _decode_utf8(data: bytes, path: Path, what: str = "file") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        pre = "" if what == "file" else f"{what} "
        raise T2IError(f"{pre}{path} is not UTF-8 (byte {e.start}) on line {line}") from None


def read_text(path: Path, guard: PathGuard | None = None, what: str = "file") -> str:
    """A UTF-8 text file; errors (missing, symlink loop, outside the dataset, not UTF-8) name
    the file and the line."""
    if guard is not None:
        guard.check(path)
    return _decode_utf8(_read_bytes(path, what), path, what)


def check_caption(text, where: str) -> str:
    """The caption stripped, if training can use it: a string, not empty, at most
    ``MAX_CAPTION_CHARS`` characters, with at least one word (letters a-z or digits, what the
    tokenizer keeps). Otherwise one T2IError line naming ``where``."""
    if not isinstance(text, str):
        raise T2IError(f"{where}: caption must be a string, got {text!r:.60}")
    cap = text.strip()
    if not cap:
        raise T2IError(f"{where}: empty caption")
    if len(cap) > MAX_CAPTION_CHARS:
        raise T2IError(f"{where}: caption is {len(cap):,} characters long; the limit is {MAX_CAPTION_CHARS:,}")
    if not tokenize(cap):
        raise T2IError(f"{where}: caption {cap[:40]!r} has no word (letters a-z or digits)")
    return cap


def read_caption_file(path: Path, guard: PathGuard | None = None) -> list[str]:
    """One caption per non-blank line; each checked by :func:`check_caption` (errors name the line)."""
    text = read_text(path, guard, "caption file")
    caps = [check_caption(line, f"{path}:{n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not caps:
        raise T2IError(f"caption file {path} has no caption (empty)")
    return caps


# ----------------------------------------------------------------------------- images
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

    def images_uint8(self, size: int, cache: bool = True, progress: bool = False,
                     errors: list[str] | None = None) -> np.ndarray:
        """All images of the split as uint8 ``[N, size, size, 3]`` (centre-cropped square, resized).

        A cache that fails its check (:func:`verify_cache`) is rebuilt with a one-line note on
        stderr. ``errors``: a list that collects the error of every unreadable image (left
        black) instead of raising on the first; nothing is cached then (``t2igan data check``)."""
        shape = (len(self), size, size, 3)
        if errors is not None:
            cache = False
        tag, extra = self._cache_tag()
        key = hashlib.sha1(
            json.dumps([self.split, size, [str(p) for p in self.image_paths],
                        [_stat_key(p) for p in self.image_paths], *extra]).encode()
        ).hexdigest()[:16]
        cache_dir = self.root / ".cache"
        path = cache_dir / f"{self.split}_{tag}{size}_{key}.npy"
        if cache and path.exists():
            arr, why = verify_cache(path, shape)
            if arr is not None:
                return arr
            print(f"note: image cache {path} {why}; rebuilding it", file=sys.stderr)
        arr = np.zeros(shape, dtype=np.uint8)
        it = range(len(self))
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc=f"decoding {self.split} images", unit="img")
        for i in it:
            if errors is None:
                arr[i] = self._decode(i, size)
                continue
            try:
                arr[i] = self._decode(i, size)
            except T2IError as e:
                errors.append(str(e))
        if cache:
            try:
                write_cache(path, arr)
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


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _sha256(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    flat = arr.reshape(-1)
    step = 1 << 26
    for i in range(0, flat.size, step):
        h.update(np.ascontiguousarray(flat[i:i + step]).data)
    return h.hexdigest()


def write_cache(path: Path, arr: np.ndarray) -> None:
    """``arr`` to ``path`` (.npy) and then its sidecar ``path.json`` (shape, bytes, sha256), both
    written under temporary names first and renamed one right after the other, so a crash or a
    concurrent reader never sees a cache that passes :func:`verify_cache` with the wrong content."""
    path.parent.mkdir(exist_ok=True)
    side = _sidecar(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    stmp = side.with_name(side.name + f".tmp{os.getpid()}")
    try:
        np.save(tmp, arr)
        info = {"shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": tmp.stat().st_size,
                "sha256": _sha256(arr)}
        stmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        os.replace(stmp, side)
    finally:
        tmp.unlink(missing_ok=True)
        stmp.unlink(missing_ok=True)


def verify_cache(path: Path, shape: tuple | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(memory-mapped array, None)`` if the cache at ``path`` matches its sidecar (size, shape
    and SHA-256 of the content) and ``shape``; else ``(None, why)``."""
    side = _sidecar(path)
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
        want_shape, want_bytes, want_hash = tuple(info["shape"]), int(info["bytes"]), str(info["sha256"])
    except FileNotFoundError:
        return None, f"has no checksum file {side.name} (written by an older t2igan, or interrupted)"
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"has an unreadable checksum file {side.name}"
    try:
        have = path.stat().st_size
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e.__class__.__name__})"
    if have != want_bytes:
        return None, f"is {have:,} bytes, expected {want_bytes:,} (truncated or overwritten)"
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as e:  # a damaged header raises ValueError, OSError, SyntaxError, ...
        return None, f"is not a readable .npy ({e.__class__.__name__})"
    if arr.dtype != np.uint8 or arr.shape != want_shape or (shape is not None and arr.shape != tuple(shape)):
        return None, (f"holds {arr.dtype} {list(arr.shape)}, expected uint8 "
                      f"{list(shape if shape is not None else want_shape)}")
    if _sha256(arr) != want_hash:
        return None, "does not match its SHA-256 (content changed)"
    return arr, None


def check_image_caches(root: Path) -> list[str]:
    """One line per cache in ``root/.cache`` that :func:`verify_cache` rejects (training
    rebuilds those)."""
    out = []
    for p in sorted((Path(root) / ".cache").glob("*.npy")):
        if ".tmp" in p.name:
            continue
        arr, why = verify_cache(p)
        if arr is None:
            out.append(f"image cache {p} {why}; training rebuilds it")
    return out


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def open_rgb(path: Path) -> Image.Image:
    """Decode an image file to RGB; refuses images over ``PIL.Image.MAX_IMAGE_PIXELS`` pixels."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
            with Image.open(path) as im:
                w, h = im.size
                if limit and w * h > limit:
                    raise T2IError(_too_large(path, f"{w}x{h} = {w * h:,}", limit))
                return im.convert("RGB")
    except T2IError:
        raise
    except FileNotFoundError:
        raise T2IError(f"image file missing: {path}") from None
    except Image.DecompressionBombError as e:
        m = _BOMB_PIXELS.search(str(e))
        raise T2IError(_too_large(path, f"{int(m.group(1)):,}" if m else "too many", limit)) from None
    except MemoryError:
        raise T2IError(f"cannot read image {path}: too large to decode in memory") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
            ZeroDivisionError) as e:  # what damaged files make PIL's decoders raise
        raise T2IError(f"cannot read image {path}: {e.__class__.__name__}") from None


def _too_large(path: Path, pixels: str, limit: int) -> str:
    return (f"image {path} has {pixels} pixels, over the limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS; refused as a possible decompression bomb)")


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode an image to RGB uint8 ``[size, size, 3]``: centre square crop, Lanczos resize."""
    im = open_rgb(path)
    w, h = im.size
    s = min(w, h)
    if (w, h) != (s, s):
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def _find_image(stem_dir: Path, stem: str, guard: PathGuard) -> Path | None:
    for ext in IMAGE_EXTS:
        p = stem_dir / (stem + ext)
        if file_present(p):
            return guard.check(p)
    return None


def _read_json(path: Path, guard: PathGuard | None = None) -> dict:
    try:
        data = json.loads(read_text(path, guard))
    except ValueError as e:
        raise T2IError(f"{path}: not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise T2IError(f"{path}: expected a JSON object")
    return data


def _read_split(root: Path, split: str, all_ids: list[str], guard: PathGuard) -> list[str]:
    sdir = root / "splits"
    if not sdir.is_dir():
        if split != "train" and split != "all":
            raise T2IError(f"{root} has no splits/ folder, so only split 'train' (every image) exists, not '{split}'")
        return all_ids
    if split == "all":
        return all_ids
    f = sdir / f"{split}.txt"
    if not file_present(f):
        have = sorted(p.stem for p in sdir.glob("*.txt"))
        raise T2IError(f"split '{split}' not found in {sdir} (have: {', '.join(have) or 'none'})")
    ids = [line.strip() for line in read_text(f, guard).splitlines() if line.strip()]
    known = set(all_ids)
    for i in ids:
        if i not in known:
            raise T2IError(f"{f}: id '{i}' has no caption file / image")
    return ids


# ----------------------------------------------------------------------------- loading
def folder_format(root: Path, settings: dict | None = None) -> str:
    """Which of the three layouts ``root`` is: 't2igan-folder' | 'jsonl' | 'plain-folder'."""
    if settings is None:
        settings = dataset_settings(root)
    fmt = settings.get("format")
    if fmt is None:  # no dataset.json, or one that only carries settings: the files tell
        if file_present(root / "captions.jsonl"):
            return "jsonl"
        return "t2igan-folder" if settings and (root / "captions").is_dir() else "plain-folder"
    if fmt not in FOLDER_FORMATS:
        raise T2IError(f"{root / SETTINGS_FILE}: 'format' must be one of {', '.join(FOLDER_FORMATS)}, got {fmt!r:.60}")
    return fmt


def folder_splits(root: str | os.PathLike) -> list[str]:
    """The splits of a folder dataset: ``splits/*.txt``, for a JSONL the ``split`` values of its
    records, else ['train']."""
    root = Path(root)
    try:
        if folder_format(root) != "jsonl":
            return [p.stem for p in sorted((root / "splits").glob("*.txt"))] or ["train"]
        found = {rec.get("split", "train") for _, rec in _jsonl_records(root / "captions.jsonl", PathGuard(root))}
    except T2IError:  # loading split 'train' reports it
        return ["train"]
    return sorted(found, key=lambda s: (s != "train", s)) or ["train"]


def load_folder(root: str | os.PathLike, split: str = "train") -> CaptionedImages:
    """Read a captioned-image folder (any of the three layouts); errors name the bad file."""
    root = Path(root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    settings = dataset_settings(root)
    fmt = folder_format(root, settings)
    guard = PathGuard(root, settings.get("allow_outside_root", False))
    if fmt == "t2igan-folder":
        return _load_t2igan_folder(root, split, guard, settings)
    if fmt == "jsonl":
        return _load_jsonl(root, root / "captions.jsonl", split, guard)
    return _load_plain(root, split, guard)


def _load_t2igan_folder(root: Path, split: str, guard: PathGuard, meta: dict) -> CaptionedImages:
    cap_dir, img_dir = root / "captions", root / "images"
    if not cap_dir.is_dir():
        raise T2IError(f"{root}: missing captions/ folder")
    all_ids = sorted(p.stem for p in cap_dir.glob("*.txt"))
    if not all_ids:
        raise T2IError(f"{cap_dir}: no caption files (*.txt)")
    ids = _read_split(root, split, all_ids, guard)
    paths, caps = [], []
    for i in ids:
        img = _find_image(img_dir, i, guard)
        if img is None:
            raise T2IError(f"{cap_dir / (i + '.txt')}: no image '{i}.*' in {img_dir}")
        paths.append(img)
        caps.append(read_caption_file(cap_dir / f"{i}.txt", guard))
    attributes = named = None
    values = meta.get("attributes")
    attr_file = root / "attributes.jsonl"
    if file_present(attr_file):
        by_id = {}
        for n, line in enumerate(read_text(attr_file, guard).splitlines(), 1):
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


def _jsonl_records(path: Path, guard: PathGuard):
    """(line number, record) of each non-blank line, each line UTF-8 JSON object with an 'image'."""
    guard.check(path)
    data = _read_bytes(path, "caption file")
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise T2IError(f"{path}:{n}: not UTF-8 (byte {e.start} of the line)") from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise T2IError(f"{path}:{n}: not valid JSON") from None
        if not isinstance(rec, dict) or "image" not in rec:
            raise T2IError(f"{path}:{n}: expected an object with 'image' and 'caption' or 'captions'")
        sp = rec.get("split", "train")
        if not isinstance(sp, str) or not sp:
            raise T2IError(f"{path}:{n}: 'split' must be a non-empty string, got {sp!r:.60}")
        yield n, rec


def _load_jsonl(root: Path, path: Path, split: str, guard: PathGuard) -> CaptionedImages:
    """Every record is checked (image path, captions), whichever split is asked for."""
    ids, paths, caps, attrs = [], [], [], []
    for n, rec in _jsonl_records(path, guard):
        where = f"{path}:{n}"
        img = guard.join(rec["image"], where, "image")
        if not img.is_file():
            raise T2IError(f"{where}: image file missing: {img}")
        if "captions" in rec:
            c = rec["captions"]
            if not isinstance(c, list) or not c:
                raise T2IError(f"{where}: 'captions' must be a non-empty list of strings, got {c!r:.60}")
        elif "caption" in rec:
            c = [rec["caption"]]
        else:
            raise T2IError(f"{where}: empty or missing caption ('caption' or 'captions')")
        c = [check_caption(x, where) for x in c]
        rid = rec.get("id", Path(rec["image"]).stem)
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise T2IError(f"{where}: 'id' must be a string, got {rid!r:.60}")
        if rec.get("split", "train") != split and split != "all":
            continue
        ids.append(str(rid))
        paths.append(img)
        caps.append(c)
        attrs.append(rec.get("attributes"))
    if not ids:
        raise T2IError(f"{path}: no records for split '{split}'")
    attributes = attrs if all(isinstance(a, dict) for a in attrs) else None
    return CaptionedImages(root, split, ids, paths, caps, attributes, None, None, {"format": "jsonl"})


def _load_plain(root: Path, split: str, guard: PathGuard) -> CaptionedImages:
    txts = sorted(p for p in root.glob("*.txt"))
    if not txts:
        raise T2IError(f"{root}: no dataset.json, captions.jsonl or <image>.txt caption files found")
    all_ids = [p.stem for p in txts]
    ids = _read_split(root, split, all_ids, guard)
    paths, caps = [], []
    for i in ids:
        img = _find_image(root, i, guard)
        if img is None:
            raise T2IError(f"{root / (i + '.txt')}: no image '{i}.*' beside it")
        paths.append(img)
        caps.append(read_caption_file(root / f"{i}.txt", guard))
    return CaptionedImages(root, split, ids, paths, caps, None, None, None, {"format": "plain-folder"})
