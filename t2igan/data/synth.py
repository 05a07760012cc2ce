"""SynthFlowers: a deterministic procedural dataset of flowers with ground-truth attributes.

Every item is fully determined by ``(index, size, seed)``: ``generate_item`` seeds
``numpy.random.default_rng([seed, index])`` and draws, in this order, the attributes
(``sample_attributes``), the picture (``render``) and 10 captions (``make_captions``).

Attributes (``ATTRIBUTES``): petal colour (8), centre colour (5), petal count (3-8),
petal shape (round / pointed / thin), flower size (small / medium / large, radii ~0.24 /
0.33 / 0.43 of the image side, jitter that never overlaps) and background (sky / grass /
soil, always textured). Nuisance variation: position, rotation, lighting, slight hue
noise, per-petal jitter, an optional stem, background texture.

Captions are Oxford-102 / StackGAN style ("this flower has five pointed pink petals and
a yellow center"); each names a random non-empty subset of the attributes and records
exactly which (``named``, sorted keys). They are lowercase words separated by single
spaces, with commas as the only punctuation.

Splits: an image whose (petal_colour, centre_colour) pair is in ``NOVEL_PAIRS`` goes to
``novel`` (never seen in training); the others go to ``test`` when a hash of
(seed, index) falls in 10%, else ``train``.

``write_synthflowers`` writes the project's ``t2igan-folder`` format (read by
``t2igan.data.folder``)::

    out_dir/dataset.json, images/<id>.png, captions/<id>.txt, attributes.jsonl,
    splits/{train,test,novel}.txt        (id = 8-digit zero-padded index)
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from t2igan.core.fs import replace_dir

ATTRIBUTES: dict[str, list[str]] = {
    "petal_colour": ["red", "orange", "yellow", "pink", "purple", "blue", "white", "green"],
    "centre_colour": ["yellow", "orange", "brown", "black", "white"],
    "petal_count": ["3", "4", "5", "6", "7", "8"],
    "petal_shape": ["round", "pointed", "thin"],
    "size": ["small", "medium", "large"],
    "background": ["sky", "grass", "soil"],
}

# Held-out (petal_colour, centre_colour) pairs: the `novel` split; each petal colour once.
NOVEL_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("red", "white"),
    ("blue", "yellow"),
    ("yellow", "brown"),
    ("purple", "orange"),
    ("white", "black"),
})

MIN_SIZE, MAX_SIZE = 32, 256
TEST_FRACTION_PERCENT = 10
SPLITS = ("train", "test", "novel")

# --- appearance ----------------------------------------------------------------------

PETAL_RGB = {
    "red": (205, 25, 40),
    "orange": (250, 135, 15),
    "yellow": (250, 222, 40),
    "pink": (250, 150, 200),
    "purple": (135, 45, 175),
    "blue": (35, 75, 215),
    "white": (248, 248, 244),
    "green": (125, 240, 115),  # light mint-lime: brighter and bluer than any grass pixel
}
CENTRE_RGB = {
    "yellow": (250, 210, 30),
    "orange": (240, 115, 15),
    "brown": (115, 62, 22),
    "black": (28, 24, 24),
    "white": (250, 250, 250),
}
# Flower radius (petal tips) as a fraction of the image side: (low, high); the ranges never overlap.
SIZE_RADIUS = {"small": (0.225, 0.25), "medium": (0.32, 0.345), "large": (0.415, 0.44)}
CENTRE_FRACTION = (0.28, 0.32)  # centre-disc radius / flower radius
STEM_RGB = (45, 115, 45)
SUPERSAMPLE = 4

# Petal outline per shape, in units of the flower radius (tip at 1.0):
#   base: where the petal starts (under the centre disc);
#   gap: fraction of the angular period left free so that adjacent petals never merge;
#   max_half_width: cap on the half-width for small petal counts.
_SHAPE = {
    "round": dict(base=0.22, gap=0.12, max_half_width=0.28),
    "pointed": dict(base=0.18, gap=0.30, max_half_width=0.17),
    "thin": dict(base=0.15, gap=0.35, max_half_width=0.08),
}


def _profile(shape: str, t: np.ndarray) -> np.ndarray:
    """Half-width (unscaled, max 1) along the petal axis, t in [0, 1] from base to tip."""
    if shape == "round":  # broad super-ellipse with a blunt, rounded tip
        u = np.abs(2.0 * t - 1.0)
        return (1.0 - u ** 3.0) ** (1.0 / 3.0)
    if shape == "pointed":  # lanceolate: widest at 35 %, long taper to a sharp tip
        tm = 0.35
        rise = np.sin(0.5 * np.pi * np.clip(t / tm, 0, 1)) ** 0.8
        fall = np.clip((1.0 - t) / (1.0 - tm), 0, 1) ** 1.3
        return np.where(t < tm, rise, fall)
    if shape == "thin":  # a narrow strip with rounded ends
        u = np.clip((np.abs(2.0 * t - 1.0) - 0.86) / 0.14, 0, 1)
        return np.sqrt(1.0 - u ** 2)
    raise ValueError(f"unknown petal shape {shape!r}")


@lru_cache(maxsize=None)
def _petal_outline(shape: str, count: int) -> np.ndarray:
    """Closed petal polygon (m, 2) in flower-radius units: x along the petal axis, y across.

    The width is scaled so that the visible part (outside the centre disc) spans at most
    (1 - gap) of the angular period 2*pi/count: petals stay separate and countable.
    """
    spec = _SHAPE[shape]
    base = spec["base"]
    t = np.linspace(0.0, 1.0, 41)
    x = base + (1.0 - base) * t
    w = _profile(shape, t)
    visible = x >= CENTRE_FRACTION[0]
    max_angle = (1.0 - spec["gap"]) * math.pi / count  # half of the allowed angular width
    # the largest width scale whose angular half-width stays within max_angle
    scale = float(np.min(x[visible] * math.tan(max_angle) / np.maximum(w[visible], 1e-9)))
    scale = min(scale, spec["max_half_width"])
    y = w * scale
    pts = np.concatenate([np.stack([x, y], 1), np.stack([x[::-1], -y[::-1]], 1)[1:-1]])
    pts.setflags(write=False)
    return pts


@lru_cache(maxsize=256)
def _interp_index(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """For n_out pixels over n_in grid points: left grid index and smoothstep weight of the right one."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(pos).astype(np.intp), n_in - 2)
    f = pos - i0
    f = f * f * (3.0 - 2.0 * f)
    i0.setflags(write=False)
    f.setflags(write=False)
    return i0, f


def _value_noise(rng: np.random.Generator, gh: int, gw: int, h: int, w: int) -> np.ndarray:
    """Smooth noise (h, w) in about [-1, 1]: a (gh, gw) grid of normals, smoothstep-interpolated.

    Element-wise arithmetic only (no BLAS reductions), so the values do not depend on the CPU.
    """
    grid = rng.standard_normal((gh, gw))
    iy, fy = _interp_index(h, gh)
    ix, fx = _interp_index(w, gw)
    rows = grid[iy] * (1.0 - fy)[:, None] + grid[iy + 1] * fy[:, None]  # (h, gw)
    return rows[:, ix] * (1.0 - fx) + rows[:, ix + 1] * fx


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Textured background, float (size, size, 3) in 0..255."""
    s = size
    if kind == "sky":  # pale vertical blue gradient + soft clouds
        top = np.array([rng.uniform(100, 130), rng.uniform(155, 185), rng.uniform(228, 248)])
        bottom = np.array([rng.uniform(170, 200), rng.uniform(205, 225), rng.uniform(240, 252)])
        y = np.linspace(0.0, 1.0, s)[:, None, None]
        img = top * (1.0 - y) + bottom * y
        img = np.broadcast_to(img, (s, s, 3)).copy()
        clouds = _value_noise(rng, 4, 6, s, s) + 0.5 * _value_noise(rng, 8, 10, s, s)
        cover = np.clip((clouds - 0.4) * 0.9, 0.0, 1.0) * rng.uniform(0.25, 0.45)
        img = img * (1.0 - cover[..., None]) + 250.0 * cover[..., None]
        img += rng.normal(0.0, 2.0, (s, s, 1))
    elif kind == "grass":  # darker green with vertical blade streaks and patches
        base = np.array([rng.uniform(40, 65), rng.uniform(92, 118), rng.uniform(26, 44)])
        blades = _value_noise(rng, 3, max(4, s // 2), s, s)
        patches = _value_noise(rng, 4, 4, s, s)
        fine = rng.normal(0.0, 1.0, (s, s, 1))
        shade = 1.0 + 0.16 * blades[..., None] + 0.10 * patches[..., None] + 0.07 * fine
        img = base * shade
    elif kind == "soil":  # brown noise at two scales plus grain
        base = np.array([rng.uniform(100, 125), rng.uniform(68, 85), rng.uniform(42, 56)])
        coarse = _value_noise(rng, 5, 5, s, s)
        mid = _value_noise(rng, max(4, s // 6), max(4, s // 6), s, s)
        fine = rng.normal(0.0, 1.0, (s, s, 1))
        shade = 1.0 + 0.12 * coarse[..., None] + 0.08 * mid[..., None] + 0.10 * fine
        img = base * shade
    else:
        raise ValueError(f"unknown background {kind!r}")
    return img


def _lit(rgb, brightness: float, shift: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(rgb, float) * brightness + shift, 0, 255)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.rint(c))


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")


def check_attributes(attrs: dict[str, str], table: dict[str, list[str]]) -> None:
    """``attrs`` has exactly the keys of ``table`` (a procedural set's ATTRIBUTES), each a listed value."""
    if set(attrs) != set(table):
        raise ValueError(f"attributes must have exactly the keys {list(table)}, got {sorted(attrs)}")
    for k, v in attrs.items():
        if v not in table[k]:
            raise ValueError(f"attribute {k}={v!r} is not one of {table[k]}")


def draw_attributes(rng: np.random.Generator, table: dict[str, list[str]]) -> dict[str, str]:
    """One value per attribute of ``table``, uniform and independent, from one draw of len(table) uniforms."""
    u = rng.random(len(table))
    return {k: vals[min(int(x * len(vals)), len(vals) - 1)] for x, (k, vals) in zip(u, table.items())}


def hashed_split(name: str, index: int, seed: int) -> str:
    """'test' for ~TEST_FRACTION_PERCENT of the items by a hash of (name, seed, index), else 'train'."""
    h = hashlib.blake2b(f"{name}:{seed}:{index}".encode(), digest_size=8).digest()
    return "test" if int.from_bytes(h, "big") % 100 < TEST_FRACTION_PERCENT else "train"


def _check_attrs(attrs: dict[str, str]) -> None:
    check_attributes(attrs, ATTRIBUTES)


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    """One value per attribute, uniform and independent (so ~1/8 of draws are novel pairs)."""
    return draw_attributes(rng, ATTRIBUTES)


def render(attrs: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the flower described by ``attrs`` as an RGB ``size`` x ``size`` image.

    The number of random draws does not depend on the colours, so the same rng state with
    a different petal or centre colour gives the same geometry and lighting.
    """
    _check_attrs(attrs)
    _check_size(size)
    s = int(size)
    bg = _background(attrs["background"], s, rng)

    # nuisance draws, in a fixed number whatever the attributes
    u = rng.random(10)
    jitter = rng.random((3, 8))
    shifts = np.clip(rng.normal(0.0, 4.0, (2, 3)), -8.0, 8.0)  # slight per-channel hue noise

    # geometry (image pixels)
    lo, hi = SIZE_RADIUS[attrs["size"]]
    radius = (lo + (hi - lo) * u[0]) * s
    margin = 0.03 * s
    free = s - 2.0 * (radius + margin)  # >= 0: the flower always stays in frame
    cx, cy = radius + margin + free * u[1], radius + margin + free * u[2]
    rotation = 2.0 * math.pi * u[3]
    centre_r = (CENTRE_FRACTION[0] + (CENTRE_FRACTION[1] - CENTRE_FRACTION[0]) * u[4]) * radius
    count = int(attrs["petal_count"])
    angle_jitter = (jitter[0, :count] - 0.5) * 0.1 * (2.0 * math.pi / count)
    length_jitter = 0.93 + 0.07 * jitter[1, :count]
    petal_light = 0.94 + 0.12 * jitter[2, :count]

    # lighting: one brightness factor for the flower, 0.85..1.15
    brightness = 0.85 + 0.3 * u[5]
    petal_rgb = _lit(PETAL_RGB[attrs["petal_colour"]], brightness, shifts[0])
    centre_rgb = _lit(CENTRE_RGB[attrs["centre_colour"]], brightness, shifts[1])
    has_stem = u[6] < 0.5
    stem_bend = (u[7] - 0.5) * 0.3 * s
    stem_width = (0.03 + 0.015 * u[8]) * s
    stem_rgb = _lit(STEM_RGB, 0.85 + 0.3 * u[9], 0.0)

    # Draw the flower super-sampled on an RGBX layer whose 4th band is coverage (fills
    # replace pixels, colour stays black outside the flower), then box-downsample: a plain
    # average of every band, i.e. premultiplied colour and coverage (RGBA would be
    # un-premultiplied by PIL, and is slower), composited over the background.
    k = SUPERSAMPLE
    big = s * k
    layer = Image.new("RGBX", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    X, Y, R = cx * k, cy * k, radius * k
    line = max(1, round(0.6 * k))  # outline ~0.6 px after downsampling

    def rgba(c) -> tuple[int, int, int, int]:
        return (*_rgb(c), 255)

    if has_stem:
        t = np.linspace(0.0, 1.0, 12)
        pts = np.stack([X + stem_bend * k * t ** 2, Y + t * (big + k - Y)], 1)
        draw.line(pts.ravel().tolist(), fill=rgba(stem_rgb), width=max(1, round(stem_width * k)), joint="curve")

    outline = _petal_outline(attrs["petal_shape"], count)
    dark = 0.62 if attrs["petal_colour"] != "white" else 0.75
    if attrs["petal_shape"] == "thin":  # a dark rim would eat most of a narrow strip's colour
        dark = 0.5 + 0.5 * dark
    angles = [rotation + 2.0 * math.pi * i / count + float(angle_jitter[i]) for i in range(count)]
    ca = np.array([math.cos(a) for a in angles])[:, None]  # libm, not numpy's SIMD variants
    sa = np.array([math.sin(a) for a in angles])[:, None]
    along = outline[None, :, 0] * (length_jitter[:, None] * R)  # (count, m)
    across = outline[None, :, 1] * R
    xs, ys = X + along * ca - across * sa, Y + along * sa + across * ca
    fills = np.clip(petal_rgb[None, :] * petal_light[:, None], 0, 255)  # (count, 3)
    for i in range(count):
        pts = np.stack([xs[i], ys[i]], 1).ravel().tolist()
        draw.polygon(pts, fill=rgba(fills[i]), outline=rgba(fills[i] * dark), width=line)

    cr = centre_r * k
    ring = centre_rgb * 0.6 if attrs["centre_colour"] != "black" else np.array([70.0, 60.0, 50.0])
    draw.ellipse([X - cr, Y - cr, X + cr, Y + cr], fill=rgba(centre_rgb), outline=rgba(ring), width=line)

    small = np.asarray(layer.reduce(k), dtype=np.float32)
    alpha = small[..., 3:] * np.float32(1.0 / 255.0)
    out = bg.astype(np.float32) * (1.0 - alpha) + small[..., :3]
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


# --- captions --------------------------------------------------------------------------

COUNT_WORDS = {"3": "three", "4": "four", "5": "five", "6": "six", "7": "seven", "8": "eight"}
SHAPE_WORDS = {"round": ["round", "rounded"], "pointed": ["pointed", "pointy", "sharp"],
               "thin": ["thin", "narrow", "skinny"]}
SIZE_WORDS = {"small": ["small", "tiny", "little"], "medium": ["medium", "medium sized", "average sized"],
              "large": ["large", "big", "huge"]}
CENTRE_WORDS = ["center", "centre", "middle", "pistil"]
BACKGROUND_NOUNS = {"sky": ["a blue sky", "the sky"], "grass": ["grass", "green grass"],
                    "soil": ["dirt", "soil", "brown soil"]}
BACKGROUND_PREPS = {"sky": ["in front of", "against", "under"], "grass": ["on", "in", "in front of", "against"],
                    "soil": ["on", "in", "against", "growing in"]}
# Probability that a caption names each attribute (a caption naming none is redrawn).
MENTION_P = {"petal_colour": 0.8, "centre_colour": 0.6, "petal_count": 0.4, "petal_shape": 0.4,
             "size": 0.3, "background": 0.3}


def _pick(rng: np.random.Generator, options):
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


def _a(word: str) -> str:
    """The indefinite article for the word that follows."""
    return "an" if word[:1] in "aeiou8" else "a"


def _with_a(phrase: str) -> str:
    return f"{_a(phrase)} {phrase}"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _and(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class _Words:
    """The word choices of one caption; a field is None when its attribute is not named."""

    def __init__(self, attrs: dict[str, str], named: set[str], rng: np.random.Generator):
        g = attrs.get
        self.pc = g("petal_colour") if "petal_colour" in named else None
        self.cc = g("centre_colour") if "centre_colour" in named else None
        self.cw = _pick(rng, CENTRE_WORDS)
        c = g("petal_count")
        self.n = (c if rng.random() < 0.25 else COUNT_WORDS[c]) if "petal_count" in named else None
        self.sh = _pick(rng, SHAPE_WORDS[g("petal_shape")]) if "petal_shape" in named else None
        self.sz = _pick(rng, SIZE_WORDS[g("size")]) if "size" in named else None
        bg = g("background") if "background" in named else None
        self.bg_np = _pick(rng, BACKGROUND_NOUNS[bg]) if bg else None
        self.bg_prep = _pick(rng, BACKGROUND_PREPS[bg]) if bg else None
        self.rng = rng

    # phrases -------------------------------------------------------------------------
    def petals(self, colour: bool = True) -> str:
        """'five pointed pink petals' (whichever of count/shape/colour are named)."""
        return _join(self.n, self.sh, self.pc if colour else None, "petals")

    def centre(self) -> str:
        if self.rng.random() < 0.15:
            return f"{_a(self.cw)} {self.cw} that is {self.cc}"
        return _with_a(f"{self.cc} {self.cw}")

    def bg_tail(self) -> str:
        """Background as a trailing phrase ('' when not named)."""
        if not self.bg_np:
            return ""
        if self.rng.random() < 0.3:
            return f"with {self.bg_np} in the background"
        return f"{self.bg_prep} {self.bg_np}"

    def bg_clause(self) -> str:
        if not self.bg_np:
            return ""
        if self.rng.random() < 0.5:
            return f", with {self.bg_np} in the background"
        return f", the background is {self.bg_np}"

    def subject(self, article: str = "this") -> str:
        return _join(article, self.sz, "flower")

    def petal_named(self) -> bool:
        return bool(self.n or self.sh or self.pc)


# Each template returns a caption stating every named attribute, or None if it cannot.
def _t_has(w: _Words):  # this small flower has five pointed pink petals and a yellow center
    if not (w.petal_named() or w.cc):
        return None
    obj = _and([w.petals() if w.petal_named() else "", w.centre() if w.cc else ""])
    subj = w.subject(_pick(w.rng, ["this", "the", "this"]))
    return _join(subj, "has", obj, w.bg_tail())


def _t_petals_are(w: _Words):  # the petals of this flower are pink and the middle is yellow
    if not (w.pc or w.sh):
        return None
    adjs = [a for a in (w.pc, w.sh) if a]
    if len(adjs) == 2 and w.rng.random() < 0.5:
        adjs.reverse()
    head = _join("the", w.n, "petals", _pick(w.rng, ["of", "on"]), w.subject(), "are", " and ".join(adjs))
    if w.cc:
        head += f" and the {w.cw} is {w.cc}"
    return head + w.bg_clause()


def _t_noun_phrase(w: _Words):  # a small flower with thin purple petals surrounding a black centre
    colour_on_flower = w.pc is not None and w.rng.random() < 0.4
    flower = _join(w.sz, w.pc if colour_on_flower else None, "flower")
    petals = w.petals(colour=not colour_on_flower)
    has_petals = petals != "petals"
    if has_petals and w.cc:
        tail = f"with {petals} {_pick(w.rng, ['surrounding', 'around', 'and', 'encircling'])} {w.centre()}"
    elif has_petals:
        tail = f"with {petals}"
    elif w.cc:
        tail = f"with {w.centre()}"
    else:
        tail = ""
    intro = _pick(w.rng, ["", "", "this is ", "a picture of "])
    return intro + _join(_with_a(flower), tail, w.bg_tail())


def _t_in_colour(w: _Words):  # this flower is white in color, with petals that are round
    if not w.pc:
        return None
    head = _join(w.subject(), "is", w.pc, _pick(w.rng, ["in color", "in colour", ""]))
    extras = []
    if w.n or w.sh:
        extras.append(_join(w.n, "petals", f"that are {w.sh}" if w.sh else ""))
    if w.cc:
        extras.append(w.centre())
    if extras:
        head += ", with " + _and(extras)
    return head + w.bg_clause()


def _t_centre_first(w: _Words):  # this flower has a yellow center surrounded by pink petals
    if not w.cc:
        return None
    return _join(w.subject(), "has", w.centre(), _pick(w.rng, ["surrounded by", "encircled by"]),
                 w.petals(), w.bg_tail())


def _t_surround(w: _Words):  # five pink petals surround a yellow middle
    if not (w.cc and w.petal_named()) or w.sz:
        return None
    verb = _pick(w.rng, ["surround", "surrounding", "around"])
    return _join(w.petals(), verb, w.centre(), w.bg_tail())


def _t_petal_colour(w: _Words):  # the petal color of this flower is pink and the center is yellow
    if not w.pc or w.n or w.sh:
        return None
    head = _join("the petal", _pick(w.rng, ["color", "colour"]), "of", w.subject(), "is", w.pc)
    if w.cc:
        head += f" and the {w.cw} is {w.cc}"
    return head + w.bg_clause()


def _t_count(w: _Words):  # this flower has five petals that are pink and pointed
    if not w.n:
        return None
    adjs = [a for a in (w.pc, w.sh) if a]
    head = _join(w.subject(), "has", w.n, "petals", ("that are " + " and ".join(adjs)) if adjs else "")
    if w.cc:
        head += f" with {w.centre()}"
    return head + w.bg_clause()


def _t_there_are(w: _Words):  # there are six narrow white petals on this flower
    if not w.n:
        return None
    head = _join("there are", w.petals(), "on", w.subject())
    if w.cc:
        head += f" and the {w.cw} is {w.cc}"
    return head + w.bg_clause()


def _t_background_first(w: _Words):  # against green grass, this flower has ...
    if not w.bg_np:
        return None
    bg, prep = w.bg_np, w.bg_prep
    w.bg_np = None  # the body must not state it again
    body = _t_has(w) or _t_noun_phrase(w)
    w.bg_np = bg
    return f"{prep} {bg}, {body}"


_TEMPLATES = (_t_has, _t_petals_are, _t_noun_phrase, _t_in_colour, _t_centre_first, _t_surround,
              _t_petal_colour, _t_count, _t_there_are, _t_background_first)


def _normalise(caption: str) -> str:
    caption = " ".join(caption.split())
    return caption.replace(" ,", ",")


def make_captions(attrs: dict[str, str], rng: np.random.Generator, k: int = 10) -> tuple[list[str], list[list[str]]]:
    """``k`` captions of the flower, and for each the sorted attribute keys it states."""
    _check_attrs(attrs)
    captions: list[str] = []
    named_lists: list[list[str]] = []
    for _ in range(k):
        for _attempt in range(8):  # prefer distinct captions; keep the last draw otherwise
            named: set[str] = set()
            while not named:
                u = rng.random(len(MENTION_P))
                named = {key for x, (key, p) in zip(u, MENTION_P.items()) if x < p}
            words = _Words(attrs, named, rng)
            # the first template that can state the named set, in random order: uniform
            # over the templates that can
            caption = None
            for j in rng.permutation(len(_TEMPLATES)):
                caption = _TEMPLATES[int(j)](words)
                if caption is not None:
                    break
            caption = _normalise(caption)
            if caption not in captions:
                break
        captions.append(caption)
        named_lists.append(sorted(named))
    return captions, named_lists


def caption_naming(attrs: dict[str, str], named, rng: np.random.Generator) -> str:
    """One caption of the grammar stating exactly the attributes in ``named`` (a non-empty subset of
    ATTRIBUTES' keys), the template drawn uniformly among those that can state them."""
    _check_attrs(attrs)
    named = set(named)
    if not named or not named <= set(ATTRIBUTES):
        raise ValueError(f"named must be a non-empty subset of {list(ATTRIBUTES)}, got {sorted(named)}")
    words = _Words(attrs, named, rng)
    for j in rng.permutation(len(_TEMPLATES)):
        caption = _TEMPLATES[int(j)](words)
        if caption is not None:
            return _normalise(caption)
    raise AssertionError("unreachable: _t_noun_phrase states any named set")


# --- items, splits, writing --------------------------------------------------------------

def item_id(index: int) -> str:
    return f"{index:08d}"


def split_of(attrs: dict[str, str], index: int, seed: int) -> str:
    """'novel' for a held-out colour pair; otherwise 'test' for ~10% by a hash of (seed, index)."""
    if (attrs["petal_colour"], attrs["centre_colour"]) in NOVEL_PAIRS:
        return "novel"
    return hashed_split("synthflowers", index, seed)


def generate_item(index: int, size: int, seed: int) -> tuple[Image.Image, dict[str, str], list[str], list[list[str]]]:
    """(image, attributes, captions, named keys per caption), fully determined by the arguments."""
    _check_size(size)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng([int(seed), int(index)])
    attrs = sample_attributes(rng)
    image = render(attrs, size, rng)
    captions, named = make_captions(attrs, rng)
    return image, attrs, captions, named


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _write_item(job: tuple) -> tuple[int, dict[str, str], list[list[str]]]:
    root, index, size, seed, generate = job
    image, attrs, captions, named = generate(index, size, seed)
    iid = item_id(index)
    with open(os.path.join(root, "images", iid + ".png"), "wb") as f:
        f.write(png_bytes(image))
    with open(os.path.join(root, "captions", iid + ".txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(captions) + "\n")
    return index, attrs, named


# PIL frees each image's memory block at once by default, so every fresh 4x canvas is a new
# mmap with page faults; keeping a few freed blocks roughly halves the system time.
_PIL_BLOCKS = 16


def _init_worker() -> None:
    Image.core.set_blocks_max(max(Image.core.get_blocks_max(), _PIL_BLOCKS))


def _is_nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


def write_synthflowers(out_dir, n: int = 10000, size: int = 64, seed: int = 0, workers: int | None = None,
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Write ``n`` SynthFlowers items to ``out_dir`` in the t2igan-folder format, atomically.

    Everything is built in a sibling ``<out_dir>.tmp-XXXX`` and moved into place when
    complete; an existing non-empty ``out_dir`` is replaced only with ``overwrite``.
    Output bytes do not depend on ``workers``. Returns {"n", "splits": {split: count}, "path"}.
    """
    meta = {"name": "synthflowers", "attributes": ATTRIBUTES,
            "novel_pairs": [list(p) for p in sorted(NOVEL_PAIRS)], "generator": "t2igan.data.synth"}
    return write_generated(out_dir, n=n, size=size, seed=seed, workers=workers, overwrite=overwrite,
                           progress=progress, generate=generate_item, split_of=split_of, meta=meta,
                           desc="synthflowers")


def write_generated(out_dir, n: int, size: int, seed: int, workers: int | None, overwrite: bool, progress: bool, *,
                    generate, split_of, meta: dict, desc: str) -> dict:
    """The writer of the procedural datasets (SynthFlowers, SynthFaces), atomically.

    ``generate(index, size, seed)`` -> (image, attributes, captions, named) must be a
    module-level function (worker processes receive it by reference); ``split_of(attrs,
    index, seed)`` gives each item's split (one of SPLITS); ``meta`` holds "name",
    "attributes", "novel_pairs" and "generator" for dataset.json. Returns
    {"n", "splits": {split: count}, "path"}.
    """
    _check_size(size)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    n, size, seed, workers = int(n), int(size), int(seed), int(workers)

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if _is_nonempty_dir(out) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = out.with_name(f"{out.name}.tmp-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            continue

    try:
        for sub in ("images", "captions", "splits"):
            (tmp / sub).mkdir()
        jobs = [(str(tmp), i, size, seed, generate) for i in range(n)]
        results: list = [None] * n
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n, desc=desc, unit="img")
        blocks_before = Image.core.get_blocks_max()
        pool = None
        if workers == 1 or n < 64:
            _init_worker()
            it = map(_write_item, jobs)
        else:
            import multiprocessing as mp
            pool = mp.get_context().Pool(min(workers, n), initializer=_init_worker)
            it = pool.imap_unordered(_write_item, jobs, chunksize=max(1, min(256, n // (workers * 8))))
        try:
            for index, attrs, named in it:
                results[index] = (attrs, named)
                if bar is not None:
                    bar.update(1)
            if pool is not None:
                pool.close()
        finally:
            Image.core.set_blocks_max(blocks_before)
            if pool is not None:
                pool.terminate()  # a no-op after close() and a full run; stops workers on an error
                pool.join()
            if bar is not None:
                bar.close()

        splits: dict[str, list[str]] = {s: [] for s in SPLITS}
        with open(tmp / "attributes.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for i, (attrs, named) in enumerate(results):
                iid = item_id(i)
                splits[split_of(attrs, i, seed)].append(iid)
                f.write(json.dumps({"id": iid, "attributes": attrs, "named": named}) + "\n")
        for s, ids in splits.items():
            (tmp / "splits" / f"{s}.txt").write_text("".join(i + "\n" for i in sorted(ids)), encoding="utf-8")
        meta = {"format": "t2igan-folder", "version": 1, "name": meta["name"], "size": size, "seed": seed, "n": n,
                "attributes": meta["attributes"], "novel_pairs": meta["novel_pairs"], "generator": meta["generator"]}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

        # move into place; an existing folder is replaced only now that the new one is complete
        if out.exists() and _is_nonempty_dir(out) and not overwrite:
            raise FileExistsError(f"{out_dir} already exists and is not empty; pass --overwrite to replace it")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"n": n, "splits": {s: len(v) for s, v in splits.items()}, "path": str(out)}

