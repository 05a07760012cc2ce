"""Synthetic scene-text editing pairs in SRNet's layout, and the loader that training reads.

``write_srnet_synth(out, n, size=(64, 128), seed)`` writes, for every pair id ``000123``::

    i_s/000123.png    the source word in a font, colour, rotation and perspective, on a background
    i_t/000123.png    the target word in the standard font (DejaVu Sans), black on grey (127)
    t_sk/000123.png   the skeleton of the target word in the source's geometry (L, 0/255)
    t_t/000123.png    the target word in the source's style on grey (127)
    t_b/000123.png    the background alone
    t_f/000123.png    the target word in the source's style on the background (the edit to learn)
    mask_t/000123.png the target word's mask (L, 0/255)
    captions.jsonl    one record per pair: image i_s/ID.png, caption = the target word, source word,
                      font, split (train / test: the held-out pairs); the trainer's dataset reader
                      (jsonl layout) reads it
    srnet.json        size, seed, fonts, counts

The folder names are those of SRNet's data generators (youdao-ai/SRNet ``datagen``,
Niwhskal/SRNet ``cfg.py``: ``mask_t`` for the mask). Fonts: the DejaVu fonts that ship with
matplotlib plus any TrueType font under /usr/share/fonts (Debian font packages), sorted by
file name. Backgrounds: procedural (gradients, smooth colour noise, stripes and checks, with
grain) and, with ``backgrounds=DIR``, random crops of the photos in DIR. Every draw comes from
``numpy.random.default_rng([seed, index])``: the same seed, fonts and library versions give the
same bytes, and any pair can be regenerated alone.

Skeletons: Zhang-Suen thinning written here in numpy (:func:`skeletonize`), so the data
generator needs no scikit-image (its ``skeletonize`` gives a comparable one-pixel skeleton).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from t2igan import T2IError

FOLDERS = ("i_s", "i_t", "t_sk", "t_t", "t_b", "t_f", "mask_t")
GREY = 127
# common English words (what an OCR engine's dictionary knows), 3-9 letters
WORDS = """about above after again album alpha amber angel apple april arrow autumn bakery banana beach
bread brick bridge bright brown butter cable camera candle canyon carbon castle central cheese cherry
church circle city clock cloud coffee copper corner cotton credit daily dance danger desert diamond
dinner doctor dragon dream drive eagle early earth eleven empire energy engine exit fabric family
farm field final flower forest fresh friday garden gentle giant ginger glass global golden grand
green guitar hammer harbor health honey hotel house island jacket jungle kitchen lemon letter light
limit lucky magic market master meadow metal middle minute modern monday motor mountain music nature
night north ocean office orange paper parking people pepper pizza planet plaza pocket police power
public purple queen quiet radio river rocket royal salad silver simple sister smile snow south space
spring square station steel stone storm street studio sugar summer sunday sunset table taxi theater
thunder ticket tiger timber today tower travel valley velvet village violet water winter wonder yellow
zebra""".split()


@dataclass
class SynthOptions:
    size: tuple[int, int] = (64, 128)  # (H, W) of every image; multiples of 8 for SRNet
    max_rotation: float = 8.0  # degrees either way
    perspective: float = 0.06  # corner jitter as a fraction of the image side
    test_fraction: float = 0.1  # held-out pairs (split "test")
    grain: float = 4.0  # std of the per-pixel noise added to backgrounds (0-255)


# ----------------------------------------------------------------------------- fonts, words
def find_fonts(extra_dirs: tuple[str, ...] = ("/usr/share/fonts",)) -> list[Path]:
    """TrueType fonts for text: matplotlib's DejaVu set and those of Debian font packages, sorted by name."""
    import matplotlib

    found = sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("DejaVu*.ttf"))
    for d in extra_dirs:
        if Path(d).is_dir():
            found += sorted(p for p in Path(d).rglob("*.ttf") if p.is_file())
    seen, out = set(), []
    for p in found:  # one file per name (DejaVu is also in fonts-dejavu-core)
        if p.name not in seen and "Display" not in p.name:  # DejaVu*Display: a few glyphs only
            seen.add(p.name)
            out.append(p)
    return sorted(out, key=lambda p: p.name)


def standard_font() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def read_words(path: str | os.PathLike | None) -> list[str]:
    if path is None:
        return list(WORDS)
    p = Path(path)
    if not p.is_file():
        raise T2IError(f"word list not found: {p}")
    words = [w.strip() for w in p.read_text(encoding="utf-8").split() if w.strip()]
    bad = [w for w in words if not w.isascii() or not w.isalnum()]
    if bad or not words:
        raise T2IError(f"{p}: expected whitespace-separated words of letters/digits" + (f", got {bad[0]!r:.40}" if bad else ""))
    return words


# ----------------------------------------------------------------------------- rendering
def _fit_font(font_path: Path, words: list[str], h: int, w: int, fill: float = 0.82) -> ImageFont.FreeTypeFont:
    """The font at the largest size (<= 0.7 h) at which every word fits ``fill`` of (w, h)."""
    fs = max(8, int(0.7 * h))
    font = ImageFont.truetype(str(font_path), fs)
    widths = [font.getbbox(t)[2] - font.getbbox(t)[0] for t in words]
    heights = [font.getbbox(t)[3] - font.getbbox(t)[1] for t in words]
    s = min(1.0, fill * w / max(max(widths), 1), fill * h / max(max(heights), 1))
    return ImageFont.truetype(str(font_path), max(6, int(fs * s)))


def render_mask(text: str, font: ImageFont.FreeTypeFont, h: int, w: int) -> Image.Image:
    """The word centred on an (h, w) canvas: L image, 255 = ink."""
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((w / 2, h / 2), text, fill=255, font=font, anchor="mm")
    return im


def render_standard(text: str, size: tuple[int, int], font_path: Path | None = None) -> np.ndarray:
    """SRNet's i_t: ``text`` in the standard font, black on grey, centred: (H, W, 3) uint8."""
    h, w = size
    font = _fit_font(font_path or standard_font(), [text], h, w)
    m = np.asarray(render_mask(text, font, h, w), dtype=np.float32)[..., None] / 255.0
    return (GREY * (1.0 - m) + 0.5).astype(np.uint8).repeat(3, axis=2)


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output points ``dst`` to input points ``src`` (4x2 each)."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(a, dtype=np.float64), src.reshape(8).astype(np.float64)).tolist()


def _geometry(rng: np.random.Generator, h: int, w: int, o: SynthOptions) -> list[float]:
    """One random rotation + perspective warp of the (h, w) canvas about its centre."""
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    c = np.array([w / 2, h / 2])
    t = np.deg2rad(rng.uniform(-o.max_rotation, o.max_rotation))
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    dst = (corners - c) @ rot.T + c + rng.uniform(-o.perspective, o.perspective, (4, 2)) * [w, h]
    return _perspective_coeffs(corners, dst)


def warp(mask: Image.Image, coeffs: list[float]) -> np.ndarray:
    """The warped mask as float (H, W, 1) in [0, 1]."""
    out = mask.transform(mask.size, Image.PERSPECTIVE, coeffs, resample=Image.BILINEAR)
    return np.asarray(out, dtype=np.float32)[..., None] / 255.0


def _colour(rng) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[..., 0].mean() + 0.587 * c[..., 1].mean() + 0.114 * c[..., 2].mean())


def background(rng: np.random.Generator, h: int, w: int, o: SynthOptions, photos: list[Path]) -> np.ndarray:
    """A background (H, W, 3) float32 in 0..255: a photo crop, a gradient, smooth colour noise or a pattern."""
    kinds = ["gradient", "noise", "pattern"] + (["photo"] * 2 if photos else [])
    kind = kinds[rng.integers(len(kinds))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "photo":
        with Image.open(photos[rng.integers(len(photos))]) as im:
            im = im.convert("RGB")
            s = max(h / im.height, w / im.width) * rng.uniform(1.0, 2.0)
            im = im.resize((max(w, int(im.width * s + 1)), max(h, int(im.height * s + 1))), Image.BILINEAR)
            x0, y0 = rng.integers(0, im.width - w + 1), rng.integers(0, im.height - h + 1)
            bg = np.asarray(im.crop((x0, y0, x0 + w, y0 + h)), dtype=np.float32)
    elif kind == "gradient":
        a, b = _colour(rng), _colour(rng)
        t = rng.uniform(0, np.pi)
        p = (xx * np.cos(t) + yy * np.sin(t))
        p = (p - p.min()) / max(float(p.max() - p.min()), 1e-6)
        bg = a + (b - a) * p[..., None]
    elif kind == "noise":
        gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 9))
        grid = rng.integers(0, 256, (gh, gw, 3)).astype(np.uint8)
        bg = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), dtype=np.float32)
    else:
        a, b = _colour(rng), _colour(rng)
        f1, f2 = rng.uniform(0.05, 0.4, 2)
        t = rng.uniform(0, np.pi)
        wave = np.sin((xx * np.cos(t) + yy * np.sin(t)) * f1)
        if rng.random() < 0.5:
            wave = wave * np.sin((-xx * np.sin(t) + yy * np.cos(t)) * f2)
        bg = a + (b - a) * (0.5 + 0.5 * np.sign(wave) * np.abs(wave) ** 0.3)[..., None]
    if o.grain > 0:
        bg = bg + rng.normal(0, o.grain, bg.shape)
    return np.clip(bg, 0, 255).astype(np.float32)


def text_colour(rng, bg: np.ndarray) -> np.ndarray:
    """A random colour that differs from the background's mean brightness by at least 90."""
    c = _colour(rng)
    lb = _luma(bg)
    if abs(_luma(c) - lb) < 90:
        c = np.clip(c + (110 if lb < 128 else -110), 0, 255)
        if abs(_luma(c) - lb) < 90:
            c = np.full(3, 255.0 if lb < 128 else 0.0, np.float32)
    return c.astype(np.float32)


# ----------------------------------------------------------------------------- skeleton
def skeletonize(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean (H, W) array -> boolean one-pixel-wide skeleton."""
    img = np.pad(mask.astype(bool), 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            # neighbours P2..P9, clockwise from north
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            b = sum(x.astype(np.int32) for x in n)
            a = sum(((n[k] == 0) & (n[(k + 1) % 8] == 1)).astype(np.int32) for k in range(8))
            if step == 0:
                c1, c2 = n[0] * n[2] * n[4], n[2] * n[4] * n[6]
            else:
                c1, c2 = n[0] * n[2] * n[6], n[0] * n[4] * n[6]
            rm = (p[1:-1, 1:-1] == 1) & (b >= 2) & (b <= 6) & (a == 1) & (c1 == 0) & (c2 == 0)
            if rm.any():
                img[1:-1, 1:-1][rm] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


# ----------------------------------------------------------------------------- one pair
def make_pair(index: int, seed: int, fonts: list[Path], words: list[str], o: SynthOptions,
              photos: list[Path] | None = None) -> dict:
    """Pair ``index`` of the dataset of ``seed``: {folder: uint8 array}, plus source/target words and font."""
    rng = np.random.default_rng([seed, index])
    h, w = o.size
    src, dst = words[rng.integers(len(words))], words[rng.integers(len(words))]
    while dst == src and len(words) > 1:
        dst = words[rng.integers(len(words))]
    case = rng.integers(3)  # lower, Title, UPPER
    src, dst = [(s.lower(), s.title(), s.upper())[case] for s in (src, dst)]
    font_path = fonts[rng.integers(len(fonts))]
    font = _fit_font(font_path, [src, dst], h, w)
    coeffs = _geometry(rng, h, w, o)
    m_s = warp(render_mask(src, font, h, w), coeffs)  # (H, W, 1)
    m_t = warp(render_mask(dst, font, h, w), coeffs)
    bg = background(rng, h, w, o, photos or [])
    col = text_colour(rng, bg)
    grey = np.full((h, w, 3), float(GREY), np.float32)

    def u8(x):
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)

    sk = skeletonize(m_t[..., 0] > 0.5)
    return {
        "i_s": u8(bg * (1 - m_s) + col * m_s),
        "i_t": render_standard(dst, (h, w)),
        "t_sk": (sk * 255).astype(np.uint8),
        "t_t": u8(grey * (1 - m_t) + col * m_t),
        "t_b": u8(bg),
        "t_f": u8(bg * (1 - m_t) + col * m_t),
        "mask_t": u8(m_t[..., 0] * 255),
        "source": src, "target": dst, "font": font_path.name,
    }


# ----------------------------------------------------------------------------- the dataset
def parse_size(text: str) -> tuple[int, int]:
    """'64x128' -> (64, 128); both multiples of 8, 16..1024."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise T2IError(f"--size must be HxW, e.g. 64x128, got {text!r}") from None
    if not (16 <= h <= 1024 and 16 <= w <= 1024) or h % 8 or w % 8:
        raise T2IError(f"--size {h}x{w}: height and width must be multiples of 8 between 16 and 1024")
    return h, w


def write_srnet_synth(out, n: int, size: tuple[int, int] = (64, 128), seed: int = 0, words_file=None,
                      backgrounds=None, test_fraction: float = 0.1, overwrite: bool = False,
                      progress: bool = True, fonts: list[Path] | None = None) -> dict:
    """Write ``n`` pairs into ``out`` (layout in the module docstring); returns a summary."""
    from tqdm import tqdm

    out = Path(out)
    if n < 1 or n > 10_000_000:
        raise T2IError(f"--n must be between 1 and 10,000,000, got {n}")
    if not 0 <= test_fraction < 1:
        raise T2IError(f"test fraction must be in [0, 1), got {test_fraction}")
    words = read_words(words_file)
    photos = []
    if backgrounds is not None:
        bdir = Path(backgrounds)
        if not bdir.is_dir():
            raise T2IError(f"background folder not found: {bdir}")
        photos = sorted(p for p in bdir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if not photos:
            raise T2IError(f"{bdir}: no .png/.jpg/.webp photos")
    fonts = fonts if fonts is not None else find_fonts()
    if not fonts:
        raise T2IError("no TrueType fonts found (matplotlib's DejaVu fonts or /usr/share/fonts)")
    if out.exists() and not out.is_dir():
        raise T2IError(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise T2IError(f"{out} is not empty; pass --overwrite to replace it")
    o = SynthOptions(size=tuple(size), test_fraction=test_fraction)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for f in FOLDERS:
        (tmp / f).mkdir(parents=True)
    n_test = int(round(n * test_fraction))
    records = []
    for i in tqdm(range(n), desc="srnet pairs", unit="pair", disable=not progress):
        pair = make_pair(i, seed, fonts, words, o, photos)
        name = f"{i:06d}"
        for f in FOLDERS:
            Image.fromarray(pair[f]).save(tmp / f / f"{name}.png")
        records.append({"id": name, "image": f"i_s/{name}.png", "caption": pair["target"], "source": pair["source"],
                        "font": pair["font"], "split": "test" if i >= n - n_test else "train"})
    (tmp / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    meta = {"format": "srnet-synth", "version": 1, "n": n, "size": list(o.size), "seed": seed,
            "splits": {"train": n - n_test, "test": n_test}, "fonts": [p.name for p in fonts],
            "words": hashlib.sha1(" ".join(words).encode()).hexdigest()[:12],
            "backgrounds": [p.name for p in photos], "folders": list(FOLDERS)}
    (tmp / "srnet.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"path": str(out), **meta["splits"], "fonts": len(fonts)}


# ----------------------------------------------------------------------------- reading it back
def read_meta(root) -> dict:
    p = Path(root) / "srnet.json"
    if not p.is_file():
        raise T2IError(f"{root}: no srnet.json (make the data with `t2igan data srnet`)")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        raise T2IError(f"{p}: not valid JSON") from None
    if meta.get("format") != "srnet-synth":
        raise T2IError(f"{p}: not an SRNet pair folder (format={meta.get('format')!r})")
    return meta


def load_pairs(root, ids: list[str], size: tuple[int, int] | None = None, progress: bool = False) -> dict[str, np.ndarray]:
    """The pairs ``ids`` as uint8 arrays: {folder: (N, C, H, W)} (C = 3, or 1 for t_sk / mask_t).

    Every image must exist and have the folder's size (``size`` or srnet.json's); otherwise one
    line naming the file."""
    from tqdm import tqdm

    root = Path(root)
    h, w = size or tuple(read_meta(root)["size"])
    out = {f: np.zeros((len(ids), 1 if f in ("t_sk", "mask_t") else 3, h, w), np.uint8) for f in FOLDERS}
    for k, i in enumerate(tqdm(ids, desc="reading pairs", unit="pair", disable=not progress)):
        for f in FOLDERS:
            p = root / f / f"{i}.png"
            try:
                with Image.open(p) as im:
                    im = im.convert("L" if f in ("t_sk", "mask_t") else "RGB")
                    a = np.asarray(im)
            except FileNotFoundError:
                raise T2IError(f"{p}: missing (every pair needs {', '.join(FOLDERS)})") from None
            except OSError as e:
                raise T2IError(f"{p}: not a readable image ({str(e)[:60]})") from None
            if a.shape[:2] != (h, w):
                raise T2IError(f"{p}: {a.shape[0]}x{a.shape[1]}, the pairs are {h}x{w}")
            out[f][k] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return out


def split_ids(root, split: str) -> list[str]:
    """Pair ids of a split, from captions.jsonl."""
    p = Path(root) / "captions.jsonl"
    if not p.is_file():
        raise T2IError(f"{root}: no captions.jsonl")
    ids = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                r = json.loads(line)
                if r.get("split", "train") == split:
                    ids.append(str(r["id"]))
            except (ValueError, KeyError, AttributeError):
                raise T2IError(f"{p}:{n}: expected a JSON object with an 'id'") from None
    if not ids:
        raise T2IError(f"{p}: no pairs in split {split!r}")
    return ids


def words_of(root) -> dict[str, tuple[str, str]]:
    """id -> (source word, target word)."""
    out = {}
    for line in (Path(root) / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            out[str(r["id"])] = (r.get("source", ""), r["caption"])
    return out
