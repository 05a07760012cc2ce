"""CUB-200-2011 birds and Oxford-102 flowers (and COCO) in the StackGAN / AttnGAN / DF-GAN layouts.

Two on-disk layouts are read, both as released by those projects (``DATA_DIR`` = e.g.
``Data/birds``, ``data/flowers``, ``data/coco``):

``stackgan`` (StackGAN, StackGAN-Pytorch, StackGAN-v2)::

    DATA_DIR/{train,test}/filenames.pickle               list of keys, e.g. '002.Laysan_Albatross/Laysan_Albatross_0002_1027'
                                                        (flowers: 'jpg/image_06734')
    DATA_DIR/{train,test}/class_info.pickle              list of int class ids (optional)
    DATA_DIR/{train,test}/char-CNN-RNN-embeddings.pickle [N, 10, 1024] float32 (optional)
    DATA_DIR/text_c10/<key>.txt  or  DATA_DIR/text/<key>.txt    captions, one a line
        (flowers: text_c10/class_%05d/image_06734.txt, the class from class_info)
    birds:   DATA_DIR/CUB_200_2011/images/<key>.jpg, CUB_200_2011/{images,bounding_boxes}.txt
    flowers: DATA_DIR/<key>.jpg (= DATA_DIR/jpg/image_06734.jpg) or DATA_DIR/images/<key>.jpg

``attngan`` (AttnGAN, DF-GAN): the same plus ``DATA_DIR/captions.pickle`` (or
``captions_DAMSM.pickle``) = ``[train_captions, test_captions, ixtoword, wordtoix]``, the
captions as token-id lists, ``k`` per image in filename order. Captions are read from
``text/<key>.txt`` when those files exist, otherwise decoded from the pickle with ``ixtoword``.
Images: ``CUB_200_2011/images/<key>.jpg`` (birds), ``images/<key>.jpg`` (COCO in AttnGAN),
``images/{train,val}2014/[jpg/]<key>.jpg`` (COCO in DF-GAN).

Birds images are cropped to the CUB bounding box enlarged 1.5x around its centre (clipped
to the image), as StackGAN's/AttnGAN's ``get_imgs`` do; then, like every t2igan dataset,
centre-cropped to a square and resized (Lanczos) when decoded into the uint8 cache.
(AttnGAN resizes the shorter side and random-crops; we crop at the centre once and leave
random crops to the tensor augmentation.)

Results are :class:`~t2igan.data.folder.CaptionedImages` with ``meta`` holding
``format``, ``dataset`` ('birds' | 'flowers' | 'coco' | 'other'), ``class_ids`` (int64 array or
None), ``embeddings`` (float32 ``[N, C, D]`` or None), ``bboxes`` (list or None) and, for
``attngan``, ``caption_tokens``, ``ixtoword``, ``wordtoix``.

:func:`detect_format` names the layout of any dataset folder and :func:`load_any` loads
whichever it is (birds layouts, COCO json, or the generic folder formats of folder.py).

Every file read must lie inside ``DATA_DIR`` with symlinks resolved (folder.py's
:class:`~t2igan.data.folder.PathGuard`; ``{"allow_outside_root": true}`` in
``DATA_DIR/dataset.json`` lifts it), and captions pass folder.py's ``check_caption``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from t2igan import T2IError
from t2igan.data.folder import (
    CaptionedImages,
    PathGuard,
    check_caption,
    file_present,
    open_rgb,
    read_caption_file,
    read_text,
)
from t2igan.data.safe_pickle import load_pickle

SPLITS = ("train", "test")
CAPTION_PICKLES = ("captions.pickle", "captions_DAMSM.pickle")
EMBEDDING_FILES = ("char-CNN-RNN-embeddings.pickle", "char-CNN-GRU-embeddings.pickle", "skip-thought-embeddings.pickle")


# ----------------------------------------------------------------------------- images with boxes
@dataclass
class BoxedImages(CaptionedImages):
    """CaptionedImages whose images are first cropped around a CUB box ``[x, y, w, h]`` (see
    :func:`stackgan_crop`); ``boxes[i] = None`` keeps image i whole."""

    boxes: list[list[int] | None] | None = None

    def _cache_tag(self) -> tuple[str, list]:
        return ("box", [self.boxes]) if self.boxes else super()._cache_tag()

    def _decode(self, i: int, size: int) -> np.ndarray:
        if not self.boxes:
            return super()._decode(i, size)
        return load_image_box(self.image_paths[i], size, self.boxes[i])


def stackgan_crop(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop StackGAN/AttnGAN take around a CUB box ``[x, y, w, h]``: a square of side
    1.5 x max(w, h) centred on the box, clipped to the image. Returns ``(x1, y1, x2, y2)``."""
    x, y, w, h = (int(v) for v in bbox)
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def load_image_box(path: Path, size: int, bbox) -> np.ndarray:
    """Decode, crop around the CUB ``bbox`` [x, y, w, h] (None: whole image), centre-square, resize."""
    im = open_rgb(path)
    box = None
    if bbox is not None:
        box = stackgan_crop(bbox, *im.size)
        im = im.crop(box)
    w, h = im.size
    s = min(w, h)
    if s < 1:
        raise T2IError(f"{path}: bounding box {box} leaves no pixels")
    if (w, h) != (s, s):
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


# ----------------------------------------------------------------------------- detection
def detect_format(root: str | os.PathLike) -> str | None:
    """'celeba' | 'celeba-hq' | 'face2text' (faces.py) | 'attngan' | 'stackgan' | 'coco' | 'folder'
    (any folder.py layout) | None."""
    root = Path(root)
    if not root.is_dir():
        return None
    from t2igan.data.faces import detect_face_format

    face = detect_face_format(root)  # first: Multi-Modal-CelebA-HQ also has train/filenames.pickle
    if face is not None:
        return face
    has_names = any((root / s / "filenames.pickle").is_file() for s in SPLITS)
    if has_names and any((root / c).is_file() for c in CAPTION_PICKLES):
        return "attngan"
    if has_names:
        return "stackgan"
    from t2igan.data.coco import find_coco

    if find_coco(root):
        return "coco"
    if (root / "dataset.json").is_file() or (root / "captions.jsonl").is_file() or any(root.glob("*.txt")):
        return "folder"
    return None


def list_splits(root: str | os.PathLike, fmt: str | None = None) -> list[str]:
    """The splits a dataset folder has (for 'folder' the splits/ files, or ['train'])."""
    root = Path(root)
    fmt = fmt or detect_format(root)
    if fmt in ("attngan", "stackgan"):
        return [s for s in SPLITS if (root / s / "filenames.pickle").is_file()]
    from t2igan.data.faces import FACE_FORMATS, face_splits

    if fmt in FACE_FORMATS:
        return face_splits(root, fmt)
    if fmt == "coco":
        from t2igan.data.coco import find_coco

        return sorted({s for s, _ in find_coco(root)}, key=["train", "val"].index)
    from t2igan.data.folder import folder_splits

    return folder_splits(root)


def load_any(root: str | os.PathLike, split: str = "train") -> CaptionedImages:
    """Load a dataset folder in whichever layout it is (see :func:`detect_format`)."""
    root = Path(root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    fmt = detect_format(root)
    if fmt in ("attngan", "stackgan"):
        return load_dataset(root, split)
    from t2igan.data.faces import FACE_FORMATS, load_faces

    if fmt in FACE_FORMATS:
        return load_faces(root, split, fmt)
    if fmt == "coco":
        from t2igan.data.coco import load_coco

        return load_coco(root, split)
    from t2igan.data.folder import load_folder

    return load_folder(root, split)


# ----------------------------------------------------------------------------- loading
def load_dataset(root: str | os.PathLike, split: str = "train", embeddings: bool = True) -> CaptionedImages:
    """Load one split of a StackGAN- or AttnGAN-layout folder (birds, flowers, COCO-in-AttnGAN).

    ``embeddings=False`` skips reading the (large) precomputed text embeddings. Every file read
    must lie inside ``root`` (:class:`~t2igan.data.folder.PathGuard`).
    """
    root = Path(root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    guard = PathGuard(root)
    if split not in SPLITS:
        raise T2IError(f"split '{split}' not found in {root} (this layout has: {', '.join(SPLITS)})")
    sdir = root / split
    names_file = sdir / "filenames.pickle"
    if not names_file.is_file():
        have = [s for s in SPLITS if (root / s / "filenames.pickle").is_file()]
        raise T2IError(f"split '{split}' not found: {names_file} is missing (have: {', '.join(have) or 'none'})")
    keys = _read_filenames(guard.check(names_file))
    n = len(keys)

    class_ids = _read_class_ids(guard.check(sdir / "class_info.pickle"), n)
    if class_ids is None:
        class_ids = _class_ids_from_keys(keys)

    emb = None
    if embeddings:
        for name in EMBEDDING_FILES:
            if (sdir / name).is_file():
                emb = _read_embeddings(guard.check(sdir / name), n)
                break

    cap_pickle = next((root / c for c in CAPTION_PICKLES if (root / c).is_file()), None)
    fmt = "attngan" if cap_pickle is not None else "stackgan"
    meta: dict = {"format": fmt, "class_ids": class_ids, "embeddings": emb, "bboxes": None}
    tokens = None
    if cap_pickle is not None:
        tokens, ixtoword, wordtoix = _read_caption_pickle(guard.check(cap_pickle), split, n)
        meta.update(caption_tokens=tokens, ixtoword=ixtoword, wordtoix=wordtoix)

    captions = _read_captions(root, keys, class_ids, tokens, meta.get("ixtoword"), cap_pickle, split, guard)

    bbox_by_key = _read_cub_boxes(root, guard)
    meta["dataset"] = ("birds" if bbox_by_key is not None else "flowers" if keys[0].startswith("jpg/")
                       else "coco" if keys[0].startswith("COCO_") else "other")
    paths = _image_paths(root, keys, split, birds=bbox_by_key is not None, guard=guard)
    boxes = None
    if bbox_by_key is not None:
        boxes = []
        for k in keys:
            b = bbox_by_key.get(k)
            if b is None:
                raise T2IError(f"{root / 'CUB_200_2011' / 'images.txt'}: no bounding box for '{k}'")
            boxes.append(b)
        meta["bboxes"] = boxes
    return BoxedImages(root, split, list(keys), paths, captions, None, None, None, meta, boxes=boxes)


def _read_filenames(path: Path) -> list[str]:
    obj = load_pickle(path)
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if not isinstance(obj, (list, tuple)) or not obj:
        raise T2IError(f"{path}: expected a non-empty list of filenames, got {type(obj).__name__}")
    keys = []
    for i, k in enumerate(obj):
        if isinstance(k, bytes):
            k = k.decode("latin1")
        if not isinstance(k, str) or not k or k.startswith("/") or ".." in k.split("/"):
            raise T2IError(f"{path}: entry {i} is not a relative filename: {k!r}")
        keys.append(k)
    return keys


def _read_class_ids(path: Path, n: int) -> np.ndarray | None:
    if not file_present(path):
        return None
    obj = load_pickle(path)
    try:
        arr = np.asarray(obj, dtype=np.int64)
    except (TypeError, ValueError):
        raise T2IError(f"{path}: expected a list of integer class ids") from None
    if arr.shape != (n,):
        raise T2IError(f"{path}: has shape {list(arr.shape)}, expected [{n}] (one class id per filename)")
    return arr


def _class_ids_from_keys(keys: list[str]) -> np.ndarray | None:
    ids = []
    for k in keys:
        m = re.match(r"^(?:class_)?(\d+)", k.split("/")[0])
        if m is None or "/" not in k:
            return None
        ids.append(int(m.group(1)))
    return np.asarray(ids, dtype=np.int64)


def _read_embeddings(path: Path, n: int) -> np.ndarray:
    obj = load_pickle(path)
    try:
        arr = np.asarray(obj, dtype=np.float32)
    except (TypeError, ValueError):
        raise T2IError(f"{path}: expected an array of embeddings [N, captions, dim]") from None
    if arr.ndim != 3 or arr.shape[0] != n or min(arr.shape) < 1:
        raise T2IError(f"{path}: embeddings have shape {list(arr.shape)}, expected [{n}, captions, dim] "
                       f"(e.g. [{n}, 10, 1024]; {n} = filenames in this split)")
    return arr


def _read_caption_pickle(path: Path, split: str, n: int):
    obj = load_pickle(path)
    if not isinstance(obj, (list, tuple)) or len(obj) < 4:
        raise T2IError(f"{path}: expected [train_captions, test_captions, ixtoword, wordtoix]")
    caps, ixtoword, wordtoix = obj[SPLITS.index(split)], obj[2], obj[3]
    if not isinstance(ixtoword, dict) or not isinstance(wordtoix, dict):
        raise T2IError(f"{path}: items 3 and 4 must be the ixtoword and wordtoix dicts")
    if not isinstance(caps, (list, tuple)) or not caps or len(caps) % n:
        got = len(caps) if isinstance(caps, (list, tuple)) else type(caps).__name__
        raise T2IError(f"{path}: {got} {split} captions for {n} filenames in {split}/filenames.pickle "
                       "(expected a whole number per image)")
    k = len(caps) // n
    try:
        flat = [[int(t) for t in c] for c in caps]
    except (TypeError, ValueError):
        raise T2IError(f"{path}: {split} captions must be lists of integer token ids") from None
    return [flat[i * k:(i + 1) * k] for i in range(n)], ixtoword, wordtoix


def _text_candidates(root: Path, key: str, class_id) -> list[Path]:
    c = [root / "text" / f"{key}.txt", root / "text_c10" / f"{key}.txt"]
    if key.startswith("jpg/") and class_id is not None:  # flowers: jpg/image_X -> class_%05d/image_X
        name = key[len("jpg/"):]
        c += [root / d / f"class_{int(class_id):05d}" / f"{name}.txt" for d in ("text_c10", "text")]
    return c


def _read_captions(root, keys, class_ids, tokens, ixtoword, cap_pickle, split, guard) -> list[list[str]]:
    first = _text_candidates(root, keys[0], None if class_ids is None else class_ids[0])
    use_text = any(file_present(p) for p in first)
    if not use_text and tokens is None:
        raise T2IError(f"caption file missing: {first[0]} (nor {first[1].relative_to(root)}; "
                       "no captions.pickle either)")
    out = []
    pat = None  # index of the candidate that worked, tried first for the next key
    for i, k in enumerate(keys):
        if not use_text:
            try:
                caps = [" ".join(str(ixtoword[t]) for t in c) for c in tokens[i]]
            except KeyError as e:
                raise T2IError(f"{cap_pickle}: token id {e.args[0]} (caption of '{k}') is not in ixtoword") from None
            k_per = len(tokens[i])
            out.append([check_caption(c, f"{cap_pickle}: {split} caption {i * k_per + j} (of '{k}')")
                        for j, c in enumerate(caps)])
            continue
        cands = _text_candidates(root, k, None if class_ids is None else class_ids[i])
        order = ([cands[pat]] if pat is not None and pat < len(cands) else []) + cands
        found = next((j for j, p in enumerate(order) if file_present(p)), None)
        if found is None:
            raise T2IError(f"caption file missing: {cands[pat or 0]} (for '{k}')")
        p = order[found]
        pat = cands.index(p)
        out.append([c.replace("\ufffd\ufffd", " ") for c in read_caption_file(p, guard)])
    return out


def _read_cub_boxes(root: Path, guard: PathGuard) -> dict[str, list[int]] | None:
    cub = root / "CUB_200_2011"
    images_txt, boxes_txt = cub / "images.txt", cub / "bounding_boxes.txt"
    if not cub.is_dir():
        return None
    for f in (images_txt, boxes_txt):
        if not file_present(f):
            raise T2IError(f"{f} is missing (CUB-200 birds need it for the bounding-box crop)")
    names, boxes = {}, {}
    for f, dest, parse in ((images_txt, names, lambda v: v[0]),
                           (boxes_txt, boxes, lambda v: [int(float(x)) for x in v])):
        lines = read_text(f, guard).splitlines()
        for ln, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                dest[parts[0]] = parse(parts[1:])
                if dest is boxes and len(dest[parts[0]]) != 4:
                    raise ValueError
            except (ValueError, IndexError):
                raise T2IError(f"{f}:{ln}: expected '<id> " + ("<path>'" if dest is names else "<x> <y> <w> <h>'")) from None
    out = {}
    for i, name in names.items():
        if i not in boxes:
            raise T2IError(f"{boxes_txt}: no box for image id {i} ({name})")
        out[name[:-4] if name.lower().endswith(".jpg") else name] = boxes[i]
    return out


def _image_candidates(root: Path, key: str, split: str, birds: bool) -> list[Path]:
    if birds:
        return [root / "CUB_200_2011" / "images" / f"{key}.jpg"]
    c = [root / "images" / f"{key}.jpg", root / f"{key}.jpg"]
    if key.startswith("jpg/"):
        c.append(root / "jpg" / f"{key[4:]}.jpg")
    for y in ("2014", "2017"):
        sub = f"{'train' if split == 'train' else 'val'}{y}"
        c += [root / "images" / sub / "jpg" / f"{key}.jpg", root / "images" / sub / f"{key}.jpg"]
    c.append(root / "oxford-102-flowers" / "images" / f"{key}.jpg")
    return c


def _image_paths(root: Path, keys: list[str], split: str, birds: bool, guard: PathGuard) -> list[Path]:
    paths, pat = [], None
    for k in keys:
        cands = _image_candidates(root, k, split, birds)
        if pat is not None and file_present(cands[pat]):
            paths.append(guard.check(cands[pat]))
            continue
        found = next((j for j, p in enumerate(cands) if file_present(p)), None)
        if found is None:
            raise T2IError(f"image file missing: {cands[pat or 0]} (for '{k}' in {split}/filenames.pickle)")
        pat = found
        paths.append(guard.check(cands[found]))
    return paths
