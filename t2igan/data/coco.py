"""MS-COCO captions (2014 or 2017) in the layout of the official downloads::

    DIR/annotations/captions_train2014.json   {"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "id", "caption"}]}
    DIR/annotations/captions_val2014.json
    DIR/train2014/COCO_train2014_000000000009.jpg   (2017: DIR/train2017/000000000009.jpg)
    DIR/val2014/...

Image folders may also sit under ``DIR/images/`` (``DIR/images/train2014/...``).
Splits: ``train`` reads train20xx; ``val`` and ``test`` read val20xx (text-to-image papers
evaluate on COCO val2014). With both years present, 2014 is used unless ``year=2017``.
``ids`` are the COCO image ids (as strings, ascending); every caption of an image is kept,
in annotation-id order, whitespace collapsed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from t2igan import T2IError
from t2igan.data.folder import CaptionedImages, PathGuard, check_caption, read_text

YEARS = ("2014", "2017")


def find_coco(root: str | os.PathLike) -> list[tuple[str, str]]:
    """[(split 'train'|'val', year)] of the caption files present under ``root/annotations``."""
    ann = Path(root) / "annotations"
    return [(s, y) for y in YEARS for s in ("train", "val") if (ann / f"captions_{s}{y}.json").is_file()]


def load_coco(root: str | os.PathLike, split: str = "train", year: str | int | None = None) -> CaptionedImages:
    """One split; files must lie inside ``root`` (:class:`~t2igan.data.folder.PathGuard`), captions
    pass :func:`~t2igan.data.folder.check_caption` (blank ones are skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    guard = PathGuard(root)
    if split not in ("train", "val", "test"):
        raise T2IError(f"COCO split must be train, val or test, got '{split}'")
    part = "train" if split == "train" else "val"
    have = find_coco(root)
    years = [y for s, y in have if s == part]
    if year is not None:
        year = str(year)
        if year not in years:
            raise T2IError(f"caption file missing: {root / 'annotations' / f'captions_{part}{year}.json'}")
    elif not years:
        raise T2IError(f"caption file missing: {root / 'annotations' / f'captions_{part}2014.json'} "
                       f"(nor captions_{part}2017.json)")
    else:
        year = years[0]
    ann_path = root / "annotations" / f"captions_{part}{year}.json"
    data = _read_json(guard.check(ann_path), guard)
    images, anns = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise T2IError(f"{ann_path}: expected 'images' and 'annotations' lists")

    files: dict[int, tuple[int, str]] = {}
    for n, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise T2IError(f"{ann_path}: images[{n}] needs an integer 'id' and a 'file_name'")
        files[im["id"]] = (n, im["file_name"])
    caps: dict[int, list[tuple[int, str]]] = {}
    for n, a in enumerate(anns):
        if not isinstance(a, dict) or not isinstance(a.get("image_id"), int) or not isinstance(a.get("caption"), str):
            raise T2IError(f"{ann_path}: annotations[{n}] needs an integer 'image_id' and a 'caption'")
        if a["image_id"] not in files:
            raise T2IError(f"{ann_path}: annotations[{n}] refers to image_id {a['image_id']}, which is not in 'images'")
        text = " ".join(a["caption"].split())
        if text:
            text = check_caption(text, f"{ann_path}: annotations[{n}]")
            aid = a.get("id", n)
            caps.setdefault(a["image_id"], []).append((aid if isinstance(aid, int) else n, text))
    if not caps:
        raise T2IError(f"{ann_path}: no captions")

    img_dir = _image_dir(root, part, year)
    ids, paths, captions = [], [], []
    for iid in sorted(caps):
        n, fn = files[iid]
        p = guard.join(fn, f"{ann_path}: images[{n}]", "file_name", base=img_dir)
        if not p.is_file():
            raise T2IError(f"image file missing: {p} (image_id {iid} in {ann_path.name})")
        ids.append(str(iid))
        paths.append(p)
        captions.append([t for _, t in sorted(caps[iid], key=lambda x: x[0])])
    meta = {"format": "coco", "year": int(year), "annotations": str(ann_path),
            "images_without_captions": len(files) - len(caps)}
    return CaptionedImages(root, split, ids, paths, captions, None, None, None, meta)


def _image_dir(root: Path, part: str, year: str) -> Path:
    for d in (root / f"{part}{year}", root / "images" / f"{part}{year}"):
        if d.is_dir():
            return d
    raise T2IError(f"image folder missing: {root / f'{part}{year}'} (nor {root / 'images' / f'{part}{year}'})")


def _read_json(path: Path, guard: PathGuard | None = None) -> dict:
    try:
        data = json.loads(read_text(path, guard, "caption file"))
    except ValueError as e:
        raise T2IError(f"{path}: not valid JSON ({e.__class__.__name__} at line {getattr(e, 'lineno', '?')})") from None
    if not isinstance(data, dict):
        raise T2IError(f"{path}: expected a JSON object")
    return data
