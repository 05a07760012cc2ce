"""Emoji images with captions from an ``emoji-datasource-<set>`` npm package.

``npm pack emoji-datasource-google@16.0.0`` fetches the package as a tarball without
installing anything; :func:`build_emoji_dataset` reads it (no extraction: only the members
``package/emoji.json``, ``package/package.json`` and ``package/img/<set>/64/<hex>.png`` are
read, as regular files whose names are checked) and writes a ``t2igan-folder`` dataset::

    OUT/dataset.json        {"format": "t2igan-folder", "name": "emoji-<set>", "attributes": {...}, ...}
    OUT/images/<id>.png     64x64 RGB; the emoji's transparent background composited on white
    OUT/captions/<id>.txt   caption variants, one a line
    OUT/attributes.jsonl    {"id", "attributes": {"category", "subcategory"}, "named": [[] per caption]}
    OUT/splits/{train,test}.txt

``id`` is the image's code-point name (``1f34e``, ``1f44d-1f3fd``). Captions come from the
Unicode name, lower-cased ("red apple", "smiling face with heart-shaped eyes"), the short
names ("heart eyes"), and "<name> emoji"; skin-tone variants append the tone
("thumbs up sign: medium skin tone"). ``named`` is empty: captions name no attribute.
About 10 % of emoji go to ``test`` by a hash of the *base* emoji's code, so every skin-tone
variant of an emoji sits in the same split as the emoji itself.
The folder is built in a temporary sibling and moved into place when complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import zlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from t2igan import T2IError
from t2igan.core.fs import replace_dir

SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}
TEST_FRACTION = 0.1
_IMAGE_NAME = re.compile(r"^[0-9a-f]{2,6}(-[0-9a-f]{2,6})*\.png$")
_MAX_JSON = 64 << 20
_MAX_IMAGE = 4 << 20


def split_of(base_code: str) -> str:
    h = hashlib.blake2b(f"emoji:{base_code.lower()}".encode(), digest_size=8).digest()
    return "test" if int.from_bytes(h, "big") / 2 ** 64 < TEST_FRACTION else "train"


def emoji_base(image_id: str) -> str:
    """The base emoji of an image id: its code points without skin tones (1f3fb-1f3ff) and fe0f,
    so every skin-tone variant of an emoji (and its fe0f spelling) shares one base."""
    parts = [p for p in image_id.lower().split("-") if p not in _BASE_DROP]
    return "-".join(parts) or image_id.lower()


_BASE_DROP = {t.lower() for t in SKIN_TONES} | {"fe0f"}


def _unique(seq):
    out = []
    for s in seq:
        s = " ".join(s.split())
        if s and s not in out:
            out.append(s)
    return out


def emoji_captions(entry: dict, tone_key: str | None = None) -> list[str]:
    """Caption variants of an emoji.json entry (with ``tone_key`` like '1F3FD' or '1F3FB-1F3FC')."""
    name = str(entry.get("name") or "").lower()
    shorts = [s.replace("_", " ").replace("-", " ").lower() for s in entry.get("short_names") or []
              if isinstance(s, str) and re.search(r"[a-zA-Z]", s)]
    bases = _unique([name, *shorts])
    if tone_key is None:
        return _unique([*bases, f"{name} emoji" if name else ""])
    tones = [SKIN_TONES.get(t.upper()) for t in tone_key.split("-")]
    if any(t is None for t in tones):
        tone = "skin tone " + tone_key.lower()
    else:
        tone = ", ".join(_unique(tones))
    return _unique([f"{b}: {tone}" for b in bases] + ([f"{name} emoji, {tone}"] if name else []))


def _read_package(tgz: Path):
    """(set name, version, emoji.json list, {image name: png bytes}) from the tarball, read in one pass."""
    try:
        tf = tarfile.open(tgz, mode="r:*")
    except FileNotFoundError:
        raise T2IError(f"package file missing: {tgz}") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise T2IError(f"{tgz} is not a readable .tgz package ({e.__class__.__name__})") from None
    emoji_json = package_json = None
    images: dict[str, dict[str, bytes]] = {}  # set -> {file name -> bytes}
    try:
        with tf:
            for m in tf:
                name = m.name
                if name in ("package/emoji.json", "package/package.json"):
                    if not m.isfile() or m.size > _MAX_JSON:
                        raise T2IError(f"{tgz}: member {name} is not a regular file of sane size")
                    data = tf.extractfile(m).read()
                    if name.endswith("emoji.json"):
                        emoji_json = data
                    else:
                        package_json = data
                    continue
                parts = name.split("/")
                if len(parts) == 5 and parts[0] == "package" and parts[1] == "img" and parts[3] == "64":
                    if not re.fullmatch(r"[a-z]+", parts[2]) or not _IMAGE_NAME.match(parts[4]):
                        continue  # never touched: not a name we would write
                    if not m.isfile() or m.size > _MAX_IMAGE:
                        raise T2IError(f"{tgz}: member {name} is not a regular file of sane size")
                    images.setdefault(parts[2], {})[parts[4]] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise T2IError(f"{tgz}: corrupt package ({e.__class__.__name__})") from None
    if emoji_json is None:
        raise T2IError(f"{tgz}: no package/emoji.json (is it an emoji-datasource package?)")
    try:
        entries = json.loads(emoji_json.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise T2IError(f"{tgz}: package/emoji.json is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(entries, list):
        raise T2IError(f"{tgz}: package/emoji.json must be a list of emoji")
    pkg_name, version = None, None
    if package_json is not None:
        try:
            pj = json.loads(package_json.decode("utf-8"))
            pkg_name, version = pj.get("name"), pj.get("version")
        except (UnicodeDecodeError, ValueError, AttributeError):
            pass
    m = re.match(r"^emoji-datasource-([a-z]+)$", str(pkg_name or "")) or \
        re.match(r"^emoji-datasource-([a-z]+)-(\d+\.\d+\.\d+)\.tgz$", tgz.name)
    set_name = m.group(1) if m else (next(iter(images)) if len(images) == 1 else None)
    if version is None and m and m.re.groups == 2:
        version = m.group(2)
    if set_name is None:
        raise T2IError(f"{tgz}: cannot tell the image set (expected emoji-datasource-<set>-X.Y.Z.tgz)")
    if set_name not in images:
        raise T2IError(f"{tgz}: no images under package/img/{set_name}/64/")
    return set_name, version, entries, images[set_name]


def _to_rgb_png(data: bytes, where: str) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width > 1024 or im.height > 1024:
                raise T2IError(f"{where}: image is {im.width}x{im.height}, larger than expected")
            rgba = im.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise T2IError(f"{where}: cannot read image ({e.__class__.__name__})") from None
    out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    out.alpha_composite(rgba)
    buf = io.BytesIO()
    out.convert("RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def build_emoji_dataset(tgz_path: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write the emoji dataset from an npm tarball; returns {"n", "captions", "splits", "skipped", "path", "name"}."""
    tgz, out = Path(tgz_path), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise T2IError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise T2IError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    set_name, version, entries, pngs = _read_package(tgz)

    items = []  # (id, base code, captions, category, subcategory, image name)
    skipped = 0
    flag = f"has_img_{set_name}"
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("image"), str) or not isinstance(e.get("unified"), str):
            raise T2IError(f"{tgz}: package/emoji.json entry {n} has no 'image'/'unified'")
        cat, sub = str(e.get("category") or "unknown"), str(e.get("subcategory") or "unknown")
        variants = [(None, e)] + sorted((e.get("skin_variations") or {}).items())
        for tone, v in variants:
            if not isinstance(v, dict) or not isinstance(v.get("image"), str):
                raise T2IError(f"{tgz}: package/emoji.json entry {n} ({e['unified']}) has a bad skin variation {tone}")
            img = v["image"]
            if not v.get(flag, True) or img not in pngs:
                skipped += 1
                continue
            caps = emoji_captions(e, tone)
            if not caps:
                skipped += 1
                continue
            items.append((img[:-4], e["unified"], caps, cat, sub, img))
    if not items:
        raise T2IError(f"{tgz}: no emoji with an image in set '{set_name}'")
    ids = [i[0] for i in items]
    if len(set(ids)) != len(ids):
        raise T2IError(f"{tgz}: package/emoji.json lists an image twice")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        for sub in ("images", "captions", "splits"):
            (tmp / sub).mkdir()
        splits: dict[str, list[str]] = {"train": [], "test": []}
        ncap = 0
        with open(tmp / "attributes.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for iid, base, caps, cat, sub, img in items:
                (tmp / "images" / f"{iid}.png").write_bytes(_to_rgb_png(pngs[img], f"{tgz}: package/img/{set_name}/64/{img}"))
                (tmp / "captions" / f"{iid}.txt").write_text("".join(c + "\n" for c in caps), encoding="utf-8")
                ncap += len(caps)
                f.write(json.dumps({"id": iid, "attributes": {"category": cat, "subcategory": sub},
                                    "named": [[] for _ in caps]}) + "\n")
                splits[split_of(base)].append(iid)
        for s, v in splits.items():
            (tmp / "splits" / f"{s}.txt").write_text("".join(i + "\n" for i in sorted(v)), encoding="utf-8")
        meta = {
            "format": "t2igan-folder", "version": 1, "name": f"emoji-{set_name}", "size": 64, "n": len(items),
            "attributes": {"category": sorted({i[3] for i in items}), "subcategory": sorted({i[4] for i in items})},
            "source": {"package": f"emoji-datasource-{set_name}", "version": version, "file": tgz.name},
            "background": "white (transparent pixels composited on white, saved as RGB)",
            "splits": f"test: ~{TEST_FRACTION:.0%} of emoji by blake2b('emoji:<base code>'); skin tones follow their emoji",
            "generator": "t2igan.data.emoji",
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"n": len(items), "captions": ncap, "splits": {s: len(v) for s, v in splits.items()},
            "skipped": skipped, "path": str(out), "name": f"emoji-{set_name}"}
