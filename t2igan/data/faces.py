"""Face datasets in their released on-disk layouts: CelebA, Multi-Modal-CelebA-HQ, Face2Text.

``celeba`` (CelebA, "Align&Cropped" release)::

    DIR/img_align_celeba/000001.jpg ...
    DIR/list_attr_celeba.txt         line 1: image count; line 2: the 40 attribute names;
                                     then "000001.jpg  -1  1  1 ..." (whitespace-separated, -1 / 1)
    DIR/list_eval_partition.txt      "000001.jpg 0" (0 train, 1 val, 2 test); absent: all is train
    DIR/list_bbox_celeba.txt         optional: count, "image_id x_1 y_1 width height", rows
    DIR/list_landmarks_align_celeba.txt  optional: count, 10 coordinate names, rows

  CelebA has no captions: each image gets ``captions_per_image`` pseudo-captions written from
  its positive attributes (:func:`pseudo_captions`; deterministic, seeded by the image name).
  ``attributes`` holds every image's 40 labels ("1" / "-1") and ``named`` the attributes each
  caption states, as the attribute evaluator and caption sets use them.

``celeba-hq`` (Multi-Modal-CelebA-HQ, as TediGAN trains on it)::

    DIR/CelebA-HQ-img/<id>.jpg   (or DIR/image/images/, DIR/image/)
    DIR/celeba-caption/<id>.txt  (or DIR/text/celeba-caption/, DIR/text/)   10 captions, one a line
    DIR/train/filenames.pickle, DIR/test/filenames.pickle   optional: ids of each split
        (or DIR/train.txt, DIR/test.txt, one id a line; neither: every image is 'train')
    DIR/CelebA-HQ-to-CelebA-mapping.txt   optional: "idx orig_idx orig_file" (CelebA file of each id)

``face2text`` (Face2Text v2.x, or a v1.0 CSV), beside a CelebA image folder::

    DIR/img_align_celeba/<celeba name>.jpg
    DIR/clean_{train,dev,test}_2.1.json   [{"filename": "000001.jpg", "description": "...",
                                            "response_id": ..., "user_id": ...}, ...]
        (or one DIR/raw_2.1.json / DIR/face2text*.json / DIR/face2text*.csv with columns
        filename, description: every image is 'train'); several records may describe one image

Every file must lie inside ``DIR`` (folder.py's :class:`~t2igan.data.folder.PathGuard`) and
captions pass folder.py's ``check_caption``; malformed input is one T2IError line naming the
file and line (JSON: the record). ``DIR/dataset.json`` may carry ``captions_per_image``
(CelebA pseudo-captions, default 10) besides ``allow_outside_root``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
from pathlib import Path

import numpy as np

from t2igan import T2IError
from t2igan.data.folder import (
    IMAGE_EXTS,
    CaptionedImages,
    PathGuard,
    check_caption,
    dataset_settings,
    file_present,
    read_caption_file,
    read_text,
)

FACE_FORMATS = ("celeba", "celeba-hq", "face2text")
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
DEFAULT_CAPTIONS_PER_IMAGE = 10

# attribute -> (phrase after "with", clause after "the woman ..."); Male gives the noun instead
ATTRIBUTE_PHRASES: dict[str, tuple[str, str]] = {
    "5_o_Clock_Shadow": ("a five o'clock shadow", "has a five o'clock shadow"),
    "Arched_Eyebrows": ("arched eyebrows", "has arched eyebrows"),
    "Attractive": ("an attractive face", "is attractive"),
    "Bags_Under_Eyes": ("bags under the eyes", "has bags under the eyes"),
    "Bald": ("a bald head", "is bald"),
    "Bangs": ("bangs", "has bangs"),
    "Big_Lips": ("big lips", "has big lips"),
    "Big_Nose": ("a big nose", "has a big nose"),
    "Black_Hair": ("black hair", "has black hair"),
    "Blond_Hair": ("blond hair", "has blond hair"),
    "Blurry": ("a blurry look", "looks blurry"),
    "Brown_Hair": ("brown hair", "has brown hair"),
    "Bushy_Eyebrows": ("bushy eyebrows", "has bushy eyebrows"),
    "Chubby": ("a chubby face", "is chubby"),
    "Double_Chin": ("a double chin", "has a double chin"),
    "Eyeglasses": ("eyeglasses", "wears eyeglasses"),
    "Goatee": ("a goatee", "has a goatee"),
    "Gray_Hair": ("gray hair", "has gray hair"),
    "Heavy_Makeup": ("heavy makeup", "wears heavy makeup"),
    "High_Cheekbones": ("high cheekbones", "has high cheekbones"),
    "Male": ("", ""),
    "Mouth_Slightly_Open": ("a slightly open mouth", "has a slightly open mouth"),
    "Mustache": ("a mustache", "has a mustache"),
    "Narrow_Eyes": ("narrow eyes", "has narrow eyes"),
    "No_Beard": ("no beard", "has no beard"),
    "Oval_Face": ("an oval face", "has an oval face"),
    "Pale_Skin": ("pale skin", "has pale skin"),
    "Pointy_Nose": ("a pointy nose", "has a pointy nose"),
    "Receding_Hairline": ("a receding hairline", "has a receding hairline"),
    "Rosy_Cheeks": ("rosy cheeks", "has rosy cheeks"),
    "Sideburns": ("sideburns", "has sideburns"),
    "Smiling": ("a smile", "is smiling"),
    "Straight_Hair": ("straight hair", "has straight hair"),
    "Wavy_Hair": ("wavy hair", "has wavy hair"),
    "Wearing_Earrings": ("earrings", "wears earrings"),
    "Wearing_Hat": ("a hat", "wears a hat"),
    "Wearing_Lipstick": ("lipstick", "wears lipstick"),
    "Wearing_Necklace": ("a necklace", "wears a necklace"),
    "Wearing_Necktie": ("a necktie", "wears a necktie"),
    "Young": ("a young face", "is young"),
}
CELEBA_ATTRIBUTES = tuple(ATTRIBUTE_PHRASES)  # the order of list_attr_celeba.txt

# {p}: man | woman | person; {with}: "with"-phrases joined; {clauses}: clauses joined
TEMPLATES = (
    "the {p} {clauses}",
    "a {p} with {with}",
    "this {p} {clauses}",
    "a photo of a {p} with {with}",
    "a {p} who {clauses}",
    "a portrait of a {p} with {with}",
)
MAX_NAMED = 4  # attributes one pseudo-caption names at most

HQ_IMAGE_DIRS = ("CelebA-HQ-img", "image/images", "image")
HQ_TEXT_DIRS = ("celeba-caption", "text/celeba-caption", "text")
HQ_MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
F2T_SPLIT_FILE = re.compile(r"^clean_(train|dev|test)(_[\d.]+)?\.json$")
F2T_SPLITS = {"train": "train", "dev": "val", "test": "test"}


# ----------------------------------------------------------------------------- detection
def _first_dir(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _face2text_files(root: Path) -> dict[str, Path]:
    """{split: descriptions file} of a Face2Text folder ({} if none)."""
    split_files = {}
    for p in sorted(root.glob("clean_*.json")):
        m = F2T_SPLIT_FILE.match(p.name)
        if m:
            split_files[F2T_SPLITS[m.group(1)]] = p
    if split_files:
        return split_files
    for pat in ("raw_*.json", "face2text*.json", "face2text*.csv", "Face2Text*.json", "Face2Text*.csv"):
        found = sorted(root.glob(pat))
        if found:
            return {"train": found[0]}
    return {}


def detect_face_format(root: str | os.PathLike) -> str | None:
    """'face2text' | 'celeba' | 'celeba-hq' | None (checked in that order)."""
    root = Path(root)
    if not root.is_dir():
        return None
    if (root / "img_align_celeba").is_dir() and _face2text_files(root):
        return "face2text"
    if file_present(root / "list_attr_celeba.txt"):
        return "celeba"
    text = _first_dir(root, HQ_TEXT_DIRS)
    if text is not None and _first_dir(root, HQ_IMAGE_DIRS) is not None and any(text.glob("*.txt")):
        return "celeba-hq"
    return None


def face_splits(root: str | os.PathLike, fmt: str | None = None) -> list[str]:
    """The splits a face folder has (in train, val, test order)."""
    root = Path(root)
    fmt = fmt or detect_face_format(root)
    if fmt == "face2text":
        have = set(_face2text_files(root))
    elif fmt == "celeba":
        part = root / "list_eval_partition.txt"
        if not file_present(part):
            return ["train"]
        try:
            have = {s for _, s, _ in _read_partition(part, PathGuard(root))}
        except T2IError:  # loading split 'train' reports it
            return ["train"]
    else:
        have = {s for s in ("train", "test") if _hq_split_file(root, s) is not None} or {"train"}
    return [s for s in ("train", "val", "test") if s in have]


def load_faces(root: str | os.PathLike, split: str = "train", fmt: str | None = None, **kw) -> CaptionedImages:
    """Load one split of a face folder in whichever layout it is (see :func:`detect_face_format`)."""
    root = Path(root)
    fmt = fmt or detect_face_format(root)
    if fmt == "celeba":
        return load_celeba(root, split, **kw)
    if fmt == "celeba-hq":
        return load_celeba_hq(root, split, **kw)
    if fmt == "face2text":
        return load_face2text(root, split, **kw)
    raise T2IError(f"{root}: not a CelebA, Multi-Modal-CelebA-HQ or Face2Text folder")


# ----------------------------------------------------------------------------- helpers
def _open_root(root) -> tuple[Path, PathGuard, dict]:
    root = Path(root)
    if not root.is_dir():
        raise T2IError(f"dataset folder not found: {root}")
    settings = dataset_settings(root)
    return root, PathGuard(root, settings.get("allow_outside_root", False)), settings


def _check_split(split: str, fmt: str) -> None:
    if split not in ("train", "val", "test"):
        raise T2IError(f"{fmt} split must be train, val or test, got '{split}'")


def _check_max_images(max_images) -> None:
    if max_images is not None and (not isinstance(max_images, int) or isinstance(max_images, bool)
                                   or max_images < 1):
        raise T2IError(f"max_images must be a positive integer or None, got {max_images!r:.40}")


def _image_name(name: str, where: str) -> str:
    """A CelebA image file name: a plain name (no folder, no '..') with an image extension."""
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise T2IError(f"{where}: image name {name!r:.80} must be a plain file name (no folder or '..'): "
                       "paths must stay inside the image folder")
    if not name.lower().endswith(IMAGE_EXTS):
        raise T2IError(f"{where}: {name!r:.80} is not an image file name ({', '.join(IMAGE_EXTS)})")
    return name


def _image_path(img_dir: Path, name: str, where: str, guard: PathGuard) -> Path:
    p = guard.check(img_dir / name, where)
    if not p.is_file():
        raise T2IError(f"image file missing: {p} (listed at {where})")
    return p


def _numbered_lines(path: Path, guard: PathGuard) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of each non-blank line."""
    text = read_text(path, guard)
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _count_header_table(path: Path, guard: PathGuard, what: str) -> tuple[list[str], int, list[tuple[int, list[str]]]]:
    """The CelebA list files: line 1 the row count, line 2 the column names, then rows.
    Returns (column names, their line number, rows)."""
    lines = _numbered_lines(path, guard)
    if len(lines) < 2:
        raise T2IError(f"{path}: expected a count line and a {what} line, got {len(lines)} non-blank line(s)")
    (n1, first), (n2, header) = lines[0], lines[1]
    if len(first) != 1 or not first[0].isdigit():
        raise T2IError(f"{path}:{n1}: first line must be the number of images, got {' '.join(first)[:60]!r}")
    rows = lines[2:]
    if int(first[0]) != len(rows):
        raise T2IError(f"{path}:{n1}: says {int(first[0])} images but the file has {len(rows)} rows")
    return header, n2, rows


# ----------------------------------------------------------------------------- CelebA
def _read_attributes(path: Path, guard: PathGuard) -> tuple[list[str], dict[str, tuple[int, list[int]]]]:
    """(attribute names, {image name: (line, [+1/-1, ...])})."""
    names, n2, rows = _count_header_table(path, guard, "attribute-name")
    for a in names:
        if a not in ATTRIBUTE_PHRASES:
            raise T2IError(f"{path}:{n2}: unknown attribute name {a!r:.60} (CelebA has: {', '.join(CELEBA_ATTRIBUTES)})")
    if len(set(names)) != len(names):
        dup = next(a for a in names if names.count(a) > 1)
        raise T2IError(f"{path}:{n2}: attribute {dup!r} is named twice")
    table: dict[str, tuple[int, list[int]]] = {}
    for n, f in rows:
        where = f"{path}:{n}"
        if len(f) != len(names) + 1:
            raise T2IError(f"{where}: expected an image name and {len(names)} values, got {len(f)} fields")
        name = _image_name(f[0], where)
        if name in table:
            raise T2IError(f"{where}: image {name} is listed twice (first on line {table[name][0]})")
        bad = next((v for v in f[1:] if v not in ("1", "-1")), None)
        if bad is not None:
            a = names[f[1:].index(bad)]
            raise T2IError(f"{where}: attribute {a} must be 1 or -1, got {bad!r:.20}")
        table[name] = (n, [int(v) for v in f[1:]])
    if not table:
        raise T2IError(f"{path}: no image rows")
    return names, table


def _read_partition(path: Path, guard: PathGuard) -> list[tuple[str, str, int]]:
    """[(image name, split, line)] of list_eval_partition.txt."""
    out, seen = [], {}
    for n, f in _numbered_lines(path, guard):
        where = f"{path}:{n}"
        if len(f) != 2:
            raise T2IError(f"{where}: expected 'image_name partition', got {len(f)} fields")
        name = _image_name(f[0], where)
        if f[1] not in PARTITIONS:
            raise T2IError(f"{where}: partition must be 0 (train), 1 (val) or 2 (test), got {f[1]!r:.20}")
        if name in seen:
            raise T2IError(f"{where}: image {name} is listed twice (first on line {seen[name]})")
        seen[name] = n
        out.append((name, PARTITIONS[f[1]], n))
    return out


def _read_int_table(path: Path, guard: PathGuard, columns: tuple[str, ...] | int, known: dict) -> dict[str, list[int]]:
    """An optional CelebA box / landmark list: {image name: ints}; names must be in ``known``."""
    header, n2, rows = _count_header_table(path, guard, "column-name")
    ncol = columns if isinstance(columns, int) else len(columns)
    if header and header[0] == "image_id":  # list_bbox_celeba.txt names the image column too
        header = header[1:]
    if len(header) != ncol or (not isinstance(columns, int) and tuple(header) != columns):
        want = f"{ncol} column names" if isinstance(columns, int) else " ".join(columns)
        raise T2IError(f"{path}:{n2}: expected the column names {want}, got {' '.join(header)[:80]!r}")
    out: dict[str, list[int]] = {}
    for n, f in rows:
        where = f"{path}:{n}"
        if len(f) != ncol + 1:
            raise T2IError(f"{where}: expected an image name and {ncol} integers, got {len(f)} fields")
        name = _image_name(f[0], where)
        try:
            vals = [int(v) for v in f[1:]]
        except ValueError:
            raise T2IError(f"{where}: values must be integers, got {' '.join(f[1:])[:60]!r}") from None
        if any(v < 0 for v in vals):
            raise T2IError(f"{where}: negative coordinate in {' '.join(f[1:])[:60]!r}")
        if name not in known:
            raise T2IError(f"{where}: image {name} is not in list_attr_celeba.txt")
        if name in out:
            raise T2IError(f"{where}: image {name} is listed twice")
        out[name] = vals
    return out


BBOX_COLUMNS = ("x_1", "y_1", "width", "height")
LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _join_clauses(clauses: list[str]) -> str:
    """'has blond hair', 'has bangs', 'is smiling' -> 'has blond hair and bangs and is smiling'
    (clauses grouped by their verb, in order of first appearance)."""
    groups: dict[str, list[str]] = {}
    for c in clauses:
        verb, obj = c.split(" ", 1)
        groups.setdefault(verb, []).append(obj)
    return " and ".join(f"{verb} {_join(objs)}" for verb, objs in groups.items())


def pseudo_captions(name: str, attrs: dict[str, int], n: int = DEFAULT_CAPTIONS_PER_IMAGE
                    ) -> tuple[list[str], list[list[str]]]:
    """``n`` captions of one CelebA image from its attributes (+1 / -1 by name) and, for each,
    the attributes it names (sorted). Each caption picks one of :data:`TEMPLATES` and 1 to
    :data:`MAX_NAMED` positive attributes (table order), drawn in turn from one random generator
    seeded by SHA-256 of the image name: the same on every run and machine, and the first k of
    ``n`` captions are the ``k`` captions asked with ``n=k``.
    The noun is 'man' / 'woman' from ``Male`` ('person' without it); an image with no other
    positive attribute gets 'a photo of the face of a man'."""
    male = attrs.get("Male")
    noun = "person" if male is None else ("man" if male > 0 else "woman")
    gender = [] if male is None else ["Male"]
    pos = [a for a in CELEBA_ATTRIBUTES if a != "Male" and attrs.get(a, -1) > 0]
    caps, named = [], []
    rng = random.Random(_seed(name))
    for _ in range(n):
        if not pos:
            caps.append(f"a photo of the face of a {noun}")
            named.append(list(gender))
            continue
        k = rng.randint(1, min(MAX_NAMED, len(pos)))
        chosen = sorted(rng.sample(pos, k), key=CELEBA_ATTRIBUTES.index)
        t = TEMPLATES[rng.randrange(len(TEMPLATES))]
        caps.append(t.format(p=noun, **{"with": _join([ATTRIBUTE_PHRASES[a][0] for a in chosen]),
                                        "clauses": _join_clauses([ATTRIBUTE_PHRASES[a][1] for a in chosen])}))
        named.append(sorted(gender + chosen))
    return caps, named


def _captions_per_image(value, root: Path) -> int:
    if value is None:
        value = dataset_settings(root).get("captions_per_image", DEFAULT_CAPTIONS_PER_IMAGE)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
        raise T2IError(f"captions_per_image must be an integer from 1 to 100, got {value!r:.40}")
    return value


def load_celeba(root: str | os.PathLike, split: str = "train", captions_per_image: int | None = None,
                max_images: int | None = None) -> CaptionedImages:
    """One split of a CelebA folder with attribute pseudo-captions (see the module docstring).
    ``max_images``: the first that many images of the split (file order)."""
    root, guard, _ = _open_root(root)
    _check_split(split, "CelebA")
    _check_max_images(max_images)
    ncap = _captions_per_image(captions_per_image, root)
    attr_file = root / "list_attr_celeba.txt"
    if not file_present(attr_file):
        raise T2IError(f"attribute file missing: {attr_file}")
    names, table = _read_attributes(attr_file, guard)
    part_file = root / "list_eval_partition.txt"
    if file_present(part_file):
        part = _read_partition(part_file, guard)
        for name, _, n in part:
            if name not in table:
                raise T2IError(f"{part_file}:{n}: image {name} is not in {attr_file.name}")
        chosen = [(name, f"{part_file}:{n}") for name, s, n in part if s == split]
    elif split == "train":
        chosen = [(name, f"{attr_file}:{n}") for name, (n, _) in table.items()]
    else:
        raise T2IError(f"{root} has no list_eval_partition.txt, so only split 'train' (every image) exists, "
                       f"not '{split}'")
    if not chosen:
        raise T2IError(f"{part_file}: no images in split '{split}'")
    if max_images is not None:
        chosen = chosen[:max_images]
    extra = {}
    for fname, key, cols in (("list_bbox_celeba.txt", "bboxes", BBOX_COLUMNS),
                             ("list_landmarks_align_celeba.txt", "landmarks", LANDMARK_COLUMNS)):
        if file_present(root / fname):
            extra[key] = _read_int_table(root / fname, guard, cols, table)
    img_dir = root / "img_align_celeba"
    if not img_dir.is_dir():
        raise T2IError(f"image folder missing: {img_dir}")
    ids, paths, caps, attributes, named = [], [], [], [], []
    for name, where in chosen:
        paths.append(_image_path(img_dir, name, where, guard))
        vals = dict(zip(names, table[name][1]))
        c, nm = pseudo_captions(name, vals, ncap)
        ids.append(Path(name).stem)
        caps.append(c)
        named.append(nm)
        attributes.append({a: str(v) for a, v in vals.items()})
    meta: dict = {"format": "celeba", "dataset": "celeba", "captions_per_image": ncap, "attribute_file": str(attr_file)}
    for key, rows in extra.items():
        missing = next((Path(p).name for p in paths if Path(p).name not in rows), None)
        if missing is not None:
            raise T2IError(f"{root / ('list_bbox_celeba.txt' if key == 'bboxes' else 'list_landmarks_align_celeba.txt')}"
                           f": no row for image {missing}")
        meta[key] = np.array([rows[Path(p).name] for p in paths], dtype=np.int64)
    return CaptionedImages(root, split, ids, paths, caps, attributes, named, {a: ["-1", "1"] for a in names}, meta)


# ----------------------------------------------------------------------------- Multi-Modal-CelebA-HQ
def _hq_split_file(root: Path, split: str) -> Path | None:
    for p in (root / split / "filenames.pickle", root / f"{split}.txt"):
        if file_present(p):
            return p
    return None


def _hq_ids(path: Path, guard: PathGuard) -> list[tuple[str, str]]:
    """[(id, where)] of a split file (pickle list or text, ids with or without '.jpg')."""
    if path.suffix == ".pickle":
        from t2igan.data.safe_pickle import load_pickle

        obj = load_pickle(guard.check(path))
        if isinstance(obj, np.ndarray):
            obj = obj.tolist()
        if not isinstance(obj, (list, tuple)) or not obj:
            raise T2IError(f"{path}: expected a non-empty list of image ids, got {type(obj).__name__}")
        items = [(str(k.decode("latin1") if isinstance(k, bytes) else k), f"{path}: entry {i}")
                 for i, k in enumerate(obj)]
    else:
        items = [(f[0] if len(f) == 1 else "", f"{path}:{n}") for n, f in _numbered_lines(path, guard)]
        if not items:
            raise T2IError(f"{path}: no image ids")
    out, seen = [], set()
    for k, where in items:
        stem = k[:-len(Path(k).suffix)] if Path(k).suffix.lower() in IMAGE_EXTS else k
        if not stem or "/" in stem or "\\" in stem or ".." in stem:
            raise T2IError(f"{where}: expected one image id (a plain name such as 12 or 12.jpg), got {k!r:.60}")
        if stem in seen:
            raise T2IError(f"{where}: id '{stem}' is listed twice")
        seen.add(stem)
        out.append((stem, where))
    return out


def _read_hq_mapping(path: Path, guard: PathGuard) -> dict[str, str]:
    """{CelebA-HQ id: CelebA file name} of CelebA-HQ-to-CelebA-mapping.txt."""
    lines = _numbered_lines(path, guard)
    if not lines or lines[0][1] != ["idx", "orig_idx", "orig_file"]:
        raise T2IError(f"{path}:1: expected the header 'idx orig_idx orig_file'")
    out = {}
    for n, f in lines[1:]:
        where = f"{path}:{n}"
        if len(f) != 3 or not f[0].isdigit() or not f[1].isdigit():
            raise T2IError(f"{where}: expected 'idx orig_idx orig_file' (two integers and a file name)")
        out[f[0]] = _image_name(f[2], where)
    return out


def _sort_ids(ids):
    return sorted(ids, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))


def load_celeba_hq(root: str | os.PathLike, split: str = "train", max_images: int | None = None) -> CaptionedImages:
    """One split of a Multi-Modal-CelebA-HQ folder (see the module docstring)."""
    root, guard, _ = _open_root(root)
    _check_split(split, "CelebA-HQ")
    _check_max_images(max_images)
    img_dir, text_dir = _first_dir(root, HQ_IMAGE_DIRS), _first_dir(root, HQ_TEXT_DIRS)
    if img_dir is None:
        raise T2IError(f"image folder missing: {root / HQ_IMAGE_DIRS[0]} (nor {', '.join(HQ_IMAGE_DIRS[1:])})")
    if text_dir is None:
        raise T2IError(f"caption folder missing: {root / HQ_TEXT_DIRS[0]} (nor {', '.join(HQ_TEXT_DIRS[1:])})")
    guard.check(img_dir)
    guard.check(text_dir)
    all_ids = _sort_ids(p.stem for p in text_dir.glob("*.txt"))
    if not all_ids:
        raise T2IError(f"{text_dir}: no caption files (*.txt)")
    sfile = _hq_split_file(root, split)
    if sfile is not None:
        chosen = _hq_ids(sfile, guard)
        known = set(all_ids)
        for i, where in chosen:
            if i not in known:
                raise T2IError(f"{where}: id '{i}' has no caption file {text_dir / (i + '.txt')}")
    elif split == "train" and _hq_split_file(root, "test") is None:
        chosen = [(i, str(text_dir / f"{i}.txt")) for i in all_ids]
    else:
        raise T2IError(f"split '{split}' not found in {root} (no {split}/filenames.pickle or {split}.txt)")
    if max_images is not None:
        chosen = chosen[:max_images]
    mapping = None
    if file_present(root / HQ_MAPPING):
        mapping = _read_hq_mapping(root / HQ_MAPPING, guard)
    ids, paths, caps = [], [], []
    for i, where in chosen:
        img = next((img_dir / (i + e) for e in IMAGE_EXTS if file_present(img_dir / (i + e))), None)
        if img is None:
            raise T2IError(f"image file missing: {img_dir / (i + '.jpg')} (id '{i}' at {where})")
        paths.append(guard.check(img, where))
        caps.append(read_caption_file(text_dir / f"{i}.txt", guard))
        ids.append(i)
    meta: dict = {"format": "celeba-hq", "dataset": "celeba-hq", "images": str(img_dir), "captions": str(text_dir)}
    if mapping is not None:
        missing = next((i for i in ids if i not in mapping), None)
        if missing is not None:
            raise T2IError(f"{root / HQ_MAPPING}: no row for id '{missing}'")
        meta["celeba_files"] = [mapping[i] for i in ids]
    return CaptionedImages(root, split, ids, paths, caps, None, None, None, meta)


# ----------------------------------------------------------------------------- Face2Text
def _face2text_records(path: Path, guard: PathGuard) -> list[tuple[str, str, str]]:
    """[(filename, description, where)] of a Face2Text JSON list or CSV."""
    text = read_text(path, guard, "description file")
    out = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        cols = reader.fieldnames or []
        if "filename" not in cols or "description" not in cols:
            raise T2IError(f"{path}:1: expected a header with 'filename' and 'description' columns, got "
                           f"{', '.join(cols)[:80] or 'nothing'}")
        try:
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if row.get("filename") is None or row.get("description") is None:
                    raise T2IError(f"{where}: expected {len(cols)} fields, got fewer")
                out.append((row["filename"].strip(), row["description"], where))
        except csv.Error as e:
            raise T2IError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise T2IError(f"{path}:{getattr(e, 'lineno', '?')}: not valid JSON") from None
        if not isinstance(data, list):
            raise T2IError(f"{path}: expected a JSON list of {{\"filename\", \"description\"}} records")
        for n, rec in enumerate(data):
            where = f"{path}: record {n}"
            if not isinstance(rec, dict) or not isinstance(rec.get("filename"), str) \
                    or not isinstance(rec.get("description"), str):
                raise T2IError(f"{where}: expected an object with string 'filename' and 'description'")
            out.append((rec["filename"].strip(), rec["description"], where))
    if not out:
        raise T2IError(f"{path}: no descriptions")
    return out


def load_face2text(root: str | os.PathLike, split: str = "train", max_images: int | None = None) -> CaptionedImages:
    """One split of Face2Text descriptions with their CelebA images (see the module docstring);
    images keep the order of their first description, descriptions their file order."""
    root, guard, _ = _open_root(root)
    _check_split(split, "Face2Text")
    _check_max_images(max_images)
    files = _face2text_files(root)
    if split not in files:
        raise T2IError(f"split '{split}' not found in {root} (have: {', '.join(files) or 'no description file'})")
    path = files[split]
    img_dir = root / "img_align_celeba"
    if not img_dir.is_dir():
        raise T2IError(f"image folder missing: {img_dir}")
    by_name: dict[str, tuple[str, list[str]]] = {}
    for name, desc, where in _face2text_records(path, guard):
        _image_name(name, where)
        cap = check_caption(" ".join(desc.split()), where)
        if name not in by_name:
            if max_images is not None and len(by_name) >= max_images:
                continue
            by_name[name] = (where, [])
        by_name[name][1].append(cap)
    ids, paths, caps = [], [], []
    for name, (where, c) in by_name.items():
        paths.append(_image_path(img_dir, name, where, guard))
        ids.append(Path(name).stem)
        caps.append(c)
    meta = {"format": "face2text", "dataset": "face2text", "descriptions": str(path)}
    return CaptionedImages(root, split, ids, paths, caps, None, None, None, meta)
