"""SynthFaces: a deterministic procedural dataset of cartoon frontal faces with ground-truth attributes.

The face counterpart of SynthFlowers (``t2igan.data.synth``), written by the same writer
(``synth.write_generated``) in the same ``t2igan-folder`` layout. Every item is fully
determined by ``(index, size, seed)``: ``generate_item`` seeds
``numpy.random.default_rng([seed, index])`` and draws, in this order, the attributes
(``sample_attributes``), the picture (``render``) and 10 captions (``make_captions``).

Attributes (``ATTRIBUTES``): hair colour (6), hairstyle (short / long / curly; no "bald",
since every caption names the hair colour and it must be visible), eye colour (4), skin
tone (5), glasses (none / glasses / sunglasses; sunglasses are dark tinted lenses through
which the eye colour still shows), smile (smiling / neutral), beard (none / beard /
moustache, in the hair colour), hat (none / hat / cap; hair stays visible below it) and
background colour (5). Nuisance variation: position and scale jitter, face width, eye
spacing, small shade changes of hair and skin, shirt / hat / frame colours, and a linear
lighting gradient over the whole picture.

Faces are drawn with PIL at ``SUPERSAMPLE`` (4) times the target size and downsampled with
LANCZOS, so edges are anti-aliased at 64 px.

Captions are CelebA-style and gender-neutral ("this person has short black hair and blue
eyes and is wearing sunglasses"); every caption names the hair colour and the eye colour
(so that the ``novel`` split can be asked for) and a random subset of the other attributes,
records exactly which (``named``, sorted keys), and has at most ``MAX_CAPTION_WORDS`` words.
They are lowercase words separated by single spaces, with commas as the only punctuation.

Splits: an image whose (hair_colour, eye_colour) pair is in ``NOVEL_PAIRS`` goes to
``novel`` (never seen in training); the others go to ``test`` when a hash of (seed, index)
falls in 10%, else ``train``. Layout (``write_synthfaces``)::

    out_dir/dataset.json, images/<id>.png, captions/<id>.txt, attributes.jsonl,
    splits/{train,test,novel}.txt        (id = 8-digit zero-padded index)
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from t2igan.data import synth
from t2igan.data.synth import _and, _join, _normalise, _pick, _with_a

ATTRIBUTES: dict[str, list[str]] = {
    "hair_colour": ["black", "brown", "blond", "red", "grey", "white"],
    "hairstyle": ["short", "long", "curly"],
    "eye_colour": ["brown", "blue", "green", "grey"],
    "skin_tone": ["pale", "fair", "tan", "brown", "dark"],
    "glasses": ["none", "glasses", "sunglasses"],
    "smile": ["smiling", "neutral"],
    "beard": ["none", "beard", "moustache"],
    "hat": ["none", "hat", "cap"],
    "background": ["blue", "green", "pink", "yellow", "purple"],
}

# Held-out (hair_colour, eye_colour) pairs: the `novel` split; each hair and eye colour at most twice.
NOVEL_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("black", "blue"),
    ("blond", "green"),
    ("red", "grey"),
    ("white", "brown"),
})

MIN_SIZE, MAX_SIZE, SIZE_STEP = 32, 256, 16
MAX_CAPTION_WORDS = 24
SUPERSAMPLE = 4

# --- appearance ----------------------------------------------------------------------

HAIR_RGB = {
    "black": (32, 28, 28),
    "brown": (112, 64, 30),
    "blond": (232, 194, 96),
    "red": (196, 72, 28),
    "grey": (132, 132, 136),
    "white": (240, 238, 232),
}
EYE_RGB = {
    "brown": (118, 66, 24),
    "blue": (40, 105, 225),
    "green": (40, 160, 60),
    "grey": (150, 156, 166),
}
SKIN_RGB = {
    "pale": (250, 224, 206),
    "fair": (238, 192, 158),
    "tan": (206, 148, 100),
    "brown": (152, 98, 60),
    "dark": (94, 60, 42),
}
BACKGROUND_RGB = {
    "blue": (138, 178, 232),
    "green": (146, 208, 146),
    "pink": (240, 168, 200),
    "yellow": (250, 238, 168),
    "purple": (184, 154, 226),
}
# Nuisance colours: saturated cool hats (no hair colour among them), muted shirts, dark frames.
HAT_RGB = [(38, 50, 112), (36, 118, 62), (108, 48, 140), (20, 118, 128), (178, 40, 118)]
SHIRT_RGB = [(70, 82, 104), (118, 44, 48), (66, 102, 72), (196, 196, 200), (44, 44, 50), (92, 64, 124)]
FRAME_RGB = [(28, 28, 32), (74, 44, 26), (40, 40, 96)]
MOUTH_RGB = (150, 40, 52)
SUNGLASS_TINT = (18, 16, 22)  # lens colour; the eye shows through at SUNGLASS_SEE_THROUGH
SUNGLASS_SEE_THROUGH = 0.3
N_CURLS = 26  # circles of a curly outline (drawn for every hairstyle's draws, used by 'curly')


def _check_size(size) -> None:
    if (isinstance(size, bool) or not isinstance(size, (int, np.integer))
            or not MIN_SIZE <= size <= MAX_SIZE or size % SIZE_STEP):
        raise ValueError(f"size must be a multiple of {SIZE_STEP} in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")


def _check_attrs(attrs: dict[str, str]) -> None:
    synth.check_attributes(attrs, ATTRIBUTES)


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    """One value per attribute, uniform and independent (so 1/6 of draws are novel pairs)."""
    return synth.draw_attributes(rng, ATTRIBUTES)


def _shade(rgb, f: float) -> tuple[int, int, int]:
    return tuple(int(round(min(255.0, max(0.0, c * f)))) for c in rgb)


class _Face:
    """The geometry of one face in canvas pixels (the 4x canvas), from the nuisance draws."""

    def __init__(self, big: int, u: np.ndarray, curls: np.ndarray):
        s = (0.92 + 0.14 * u[2]) * 1.12  # scale 0.92..1.06 of the base size (the face spans ~40% of the width)
        self.cx = (0.5 + 0.07 * (u[0] - 0.5)) * big
        self.cy = (0.48 + 0.05 * (u[1] - 0.5)) * big
        self.fw = 0.165 * s * (0.93 + 0.1 * u[3]) * big  # face half-width
        self.fh = 0.215 * s * big  # face half-height
        self.ex = 0.072 * s * (0.95 + 0.1 * u[10]) * big  # eye offset from the centre line
        self.ey = self.cy - 0.08 * self.fh
        self.my = self.cy + 0.5 * self.fh  # mouth line
        self.mw = (0.055 + 0.015 * u[14]) * s * big  # mouth half-width
        self.unit = s * big  # length unit: the image side at scale 1
        self.part = 1.0 if u[15] < 0.5 else -1.0  # side of the fringe's sweep
        self.curls = curls

    def box(self, x: float, y: float, rx: float, ry: float) -> list[float]:
        return [x - rx, y - ry, x + rx, y + ry]


def _draw_hair_back(d: ImageDraw.ImageDraw, f: _Face, style: str, hair) -> None:
    """The hair behind the face: a cap for short, a long drop to the shoulders, a cloud of curls."""
    out = _shade(hair, 0.8)
    w = max(1, round(0.006 * f.unit))
    if style == "short":
        d.ellipse(f.box(f.cx, f.cy - 0.28 * f.fh, 1.16 * f.fw, 0.88 * f.fh), fill=hair, outline=out, width=w)
    elif style == "long":
        d.ellipse(f.box(f.cx, f.cy - 0.3 * f.fh, 1.2 * f.fw, 0.9 * f.fh), fill=hair, outline=out, width=w)
        d.rounded_rectangle([f.cx - 1.24 * f.fw, f.cy - 0.45 * f.fh, f.cx + 1.24 * f.fw, f.cy + 1.12 * f.fh],
                            radius=0.35 * f.fw, fill=hair, outline=out, width=w)
        d.ellipse(f.box(f.cx, f.cy - 0.3 * f.fh, 1.2 * f.fw - w, 0.9 * f.fh - w), fill=hair)
    else:  # curly: a ring of circles around the upper head over a filled core
        for i in range(N_CURLS):
            a = math.pi * (0.88 + 1.24 * i / (N_CURLS - 1))  # from the left cheek over the top to the right
            r = (0.16 + 0.05 * float(f.curls[i])) * f.fw
            x = f.cx + 1.12 * f.fw * math.cos(a)
            y = f.cy - 0.2 * f.fh + 0.95 * f.fh * math.sin(a)
            d.ellipse(f.box(x, y, r, r), fill=hair, outline=out, width=w)
        d.ellipse(f.box(f.cx, f.cy - 0.2 * f.fh, 1.12 * f.fw, 0.95 * f.fh), fill=hair)


def _draw_hair_front(d: ImageDraw.ImageDraw, f: _Face, style: str, hair) -> None:
    """The fringe over the forehead (and the side locks of long hair, over the ears)."""
    out = _shade(hair, 0.8)
    w = max(1, round(0.006 * f.unit))
    top = f.box(f.cx, f.cy, 1.04 * f.fw, 1.04 * f.fh)
    if style == "curly":
        n = 7
        for i in range(n):
            x = f.cx + (i / (n - 1) - 0.5) * 1.5 * f.fw
            y = f.cy - 0.66 * f.fh - 0.12 * f.fh * (1 - abs(2 * i / (n - 1) - 1))
            r = (0.2 + 0.04 * float(f.curls[i])) * f.fw
            d.ellipse(f.box(x, y, r, r), fill=hair, outline=out, width=w)
        return
    d.chord(top, 180 + 30, 360 - 30, fill=hair)  # forehead down to 0.52 fh above the centre
    # a swept side: a triangle from the parting down one temple
    p = f.part
    d.polygon([(f.cx - p * 0.1 * f.fw, f.cy - 1.0 * f.fh), (f.cx + p * 1.02 * f.fw, f.cy - 0.52 * f.fh),
               (f.cx + p * 0.95 * f.fw, f.cy - 0.25 * f.fh), (f.cx + p * 0.2 * f.fw, f.cy - 0.52 * f.fh)], fill=hair)
    if style == "long":  # side locks over the ears and cheek edges
        for side in (-1.0, 1.0):
            x0 = f.cx + side * 0.98 * f.fw
            x1 = f.cx + side * 0.8 * f.fw
            d.polygon([(x0 + side * 0.06 * f.fw, f.cy - 0.6 * f.fh), (x1, f.cy - 0.5 * f.fh),
                       (x1 + side * 0.06 * f.fw, f.cy + 0.5 * f.fh), (x0 + side * 0.2 * f.fw, f.cy + 1.1 * f.fh)],
                      fill=hair, outline=out)
    # strands: a few darker lines in the fringe
    for i in (-1, 0, 1):
        x = f.cx + (i * 0.35 + 0.15 * p) * f.fw
        d.line([(x, f.cy - 0.95 * f.fh), (x + p * 0.18 * f.fw, f.cy - 0.58 * f.fh)], fill=out, width=w)


def _draw_beard(d: ImageDraw.ImageDraw, f: _Face, beard: str, hair) -> None:
    out = _shade(hair, 0.8)
    w = max(1, round(0.006 * f.unit))
    if beard == "beard":  # the jaw below the cheeks, with sideburns up to the ears
        jaw = f.box(f.cx, f.cy + 0.02 * f.fh, 1.03 * f.fw, 1.06 * f.fh)
        d.chord(jaw, 22, 158, fill=hair, outline=out, width=w)
        for side in (-1.0, 1.0):  # the mouth is drawn on top of the beard
            d.polygon([(f.cx + side * 0.86 * f.fw, f.cy - 0.2 * f.fh), (f.cx + side * 1.03 * f.fw, f.cy - 0.2 * f.fh),
                       (f.cx + side * 0.98 * f.fw, f.cy + 0.44 * f.fh), (f.cx + side * 0.7 * f.fw, f.cy + 0.44 * f.fh)],
                      fill=hair)
    if beard in ("beard", "moustache"):
        for side in (-1.0, 1.0):
            x = f.cx + side * 0.55 * f.mw
            d.ellipse(f.box(x, f.my - 0.11 * f.fh, 0.68 * f.mw, 0.075 * f.fh), fill=hair, outline=out, width=w)


def _draw_mouth(d: ImageDraw.ImageDraw, f: _Face, smile: str) -> None:
    if smile == "smiling":  # an open smile: the lower half of an ellipse, teeth along its top
        box = f.box(f.cx, f.my, f.mw, 0.14 * f.fh)
        d.chord(box, 0, 180, fill=MOUTH_RGB, outline=_shade(MOUTH_RGB, 0.6), width=max(1, round(0.005 * f.unit)))
        d.chord(f.box(f.cx, f.my, 0.82 * f.mw, 0.05 * f.fh), 0, 180, fill=(246, 244, 238))
    else:  # neutral: a straight closed mouth
        d.line([(f.cx - 0.72 * f.mw, f.my + 0.02 * f.fh), (f.cx + 0.72 * f.mw, f.my + 0.02 * f.fh)],
               fill=_shade(MOUTH_RGB, 0.75), width=max(1, round(0.014 * f.unit)))


def _draw_eyes(d: ImageDraw.ImageDraw, f: _Face, eye, brow) -> None:
    rw, rh, ri = 0.062 * f.unit, 0.04 * f.unit, 0.03 * f.unit
    w = max(1, round(0.005 * f.unit))
    for side in (-1.0, 1.0):
        x = f.cx + side * f.ex
        d.ellipse(f.box(x, f.ey, rw, rh), fill=(250, 250, 250), outline=(60, 40, 40), width=w)
        d.ellipse(f.box(x, f.ey, ri, ri), fill=eye)
        d.ellipse(f.box(x, f.ey, 0.38 * ri, 0.38 * ri), fill=(12, 10, 10))
        d.ellipse(f.box(x + 0.35 * ri, f.ey - 0.35 * ri, 0.2 * ri, 0.2 * ri), fill=(255, 255, 255))
        by = f.ey - 0.075 * f.unit  # eyebrow: a thick arc in the hair colour
        d.line([(x - side * 0.06 * f.unit, by + 0.012 * f.unit), (x, by - 0.006 * f.unit),
                (x + side * 0.06 * f.unit, by + 0.006 * f.unit)], fill=brow, width=max(1, round(0.016 * f.unit)),
               joint="curve")


def _lens_boxes(f: _Face) -> list[list[float]]:
    rw, rh = 0.07 * f.unit, 0.052 * f.unit
    return [f.box(f.cx + side * f.ex, f.ey + 0.004 * f.unit, rw, rh) for side in (-1.0, 1.0)]


def _draw_glasses(img: Image.Image, f: _Face, kind: str, frame) -> None:
    """Glasses: thin frames over clear lenses. Sunglasses: thick black frames over dark lenses
    that let ``SUNGLASS_SEE_THROUGH`` of the eye through (the eye colour stays visible)."""
    boxes = _lens_boxes(f)
    radius = 0.018 * f.unit
    if kind == "sunglasses":
        mask = Image.new("L", img.size, 0)
        md = ImageDraw.Draw(mask)
        for b in boxes:
            md.rounded_rectangle(b, radius=radius, fill=255)
        tint = Image.new("RGB", img.size, SUNGLASS_TINT)
        dark = Image.blend(tint, img, SUNGLASS_SEE_THROUGH)
        img.paste(dark, (0, 0), mask)
        frame, width = (16, 16, 18), max(1, round(0.016 * f.unit))
    else:
        width = max(1, round(0.01 * f.unit))
    d = ImageDraw.Draw(img)
    for b in boxes:
        d.rounded_rectangle(b, radius=radius, outline=frame, width=width)
    y = f.ey - 0.01 * f.unit
    d.line([(boxes[0][2], y), (boxes[1][0], y)], fill=frame, width=width)  # bridge
    for side, b in ((-1.0, boxes[0]), (1.0, boxes[1])):  # temples to the face edge
        xo = b[0] if side < 0 else b[2]
        d.line([(xo, y), (f.cx + side * 0.98 * f.fw, y - 0.01 * f.unit)], fill=frame, width=width)


def _draw_hat(d: ImageDraw.ImageDraw, f: _Face, hat: str, colour) -> None:
    """A brimmed hat (tall crown, band, wide brim) or a cap (dome, button, visor down the forehead);
    either leaves the hair at the temples and some fringe visible."""
    out = _shade(colour, 0.6)
    w = max(1, round(0.006 * f.unit))
    top = f.cy - f.fh
    if hat == "hat":
        brim_y = f.cy - 0.8 * f.fh
        d.rounded_rectangle([f.cx - 0.92 * f.fw, top - 0.55 * f.fh, f.cx + 0.92 * f.fw, brim_y],
                            radius=0.3 * f.fw, fill=colour, outline=out, width=w)
        d.rectangle([f.cx - 0.92 * f.fw + w, brim_y - 0.2 * f.fh, f.cx + 0.92 * f.fw - w, brim_y - 0.06 * f.fh],
                    fill=_shade(colour, 0.55))
        d.ellipse(f.box(f.cx, brim_y, 1.75 * f.fw, 0.12 * f.fh), fill=colour, outline=out, width=w)
    else:
        base = f.cy - 0.78 * f.fh
        d.chord([f.cx - 1.1 * f.fw, top - 0.32 * f.fh, f.cx + 1.1 * f.fw, 2 * base - (top - 0.32 * f.fh)],
                180, 360, fill=colour, outline=out, width=w)
        d.line([(f.cx, top - 0.3 * f.fh), (f.cx, base)], fill=out, width=w)  # seam
        r = 0.09 * f.fw
        d.ellipse(f.box(f.cx, top - 0.32 * f.fh, r, r), fill=_shade(colour, 0.8))
        d.chord(f.box(f.cx, base, 0.95 * f.fw, 0.26 * f.fh), 0, 180, fill=_shade(colour, 0.78), outline=out, width=w)


def _lighting(arr: np.ndarray, angle: float, strength: float, brightness: float) -> np.ndarray:
    """A linear light gradient across the picture: factor brightness * (1 + strength * t), t in [-0.7, 0.7]."""
    s = arr.shape[0]
    c = (np.arange(s, dtype=np.float32) + 0.5) / s - 0.5
    t = c[None, :] * np.float32(math.cos(angle)) + c[:, None] * np.float32(math.sin(angle))  # (s, s)
    f = np.float32(brightness) * (np.float32(1.0) + np.float32(strength) * t)
    return arr.astype(np.float32) * f[..., None]


def render(attrs: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the face described by ``attrs`` as an RGB ``size`` x ``size`` image.

    The number of random draws does not depend on the attributes, so the same rng state with
    another value of any attribute gives the same geometry, nuisance colours and lighting
    (the tests find an attribute's pixels by changing only that attribute).
    """
    _check_attrs(attrs)
    _check_size(size)
    s = int(size)
    u = rng.random(16)
    curls = rng.random(N_CURLS)
    big = s * SUPERSAMPLE
    f = _Face(big, u, curls)

    hair = _shade(HAIR_RGB[attrs["hair_colour"]], 0.94 + 0.1 * u[11])
    skin = _shade(SKIN_RGB[attrs["skin_tone"]], 0.96 + 0.08 * u[12])
    bg = _shade(BACKGROUND_RGB[attrs["background"]], 0.96 + 0.08 * u[13])
    shirt = SHIRT_RGB[min(int(u[7] * len(SHIRT_RGB)), len(SHIRT_RGB) - 1)]
    hat_rgb = HAT_RGB[min(int(u[8] * len(HAT_RGB)), len(HAT_RGB) - 1)]
    frame = FRAME_RGB[min(int(u[9] * len(FRAME_RGB)), len(FRAME_RGB) - 1)]
    skin_out = _shade(skin, 0.72)
    w = max(1, round(0.006 * f.unit))

    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    # shoulders and neck
    d.ellipse([f.cx - 0.36 * f.unit, f.cy + 1.4 * f.fh, f.cx + 0.36 * f.unit, f.cy + 1.4 * f.fh + 0.45 * f.unit],
              fill=shirt, outline=_shade(shirt, 0.7), width=w)
    d.rectangle([f.cx - 0.42 * f.fw, f.cy + 0.5 * f.fh, f.cx + 0.42 * f.fw, f.cy + 1.55 * f.fh], fill=_shade(skin, 0.86))
    style = attrs["hairstyle"]
    _draw_hair_back(d, f, style, hair)
    if style != "long":  # ears (long hair covers them)
        for side in (-1.0, 1.0):
            d.ellipse(f.box(f.cx + side * 0.98 * f.fw, f.cy + 0.02 * f.fh, 0.16 * f.fw, 0.2 * f.fh),
                      fill=skin, outline=skin_out, width=w)
    d.ellipse(f.box(f.cx, f.cy, f.fw, f.fh), fill=skin, outline=skin_out, width=w)
    _draw_hair_front(d, f, style, hair)
    _draw_eyes(d, f, EYE_RGB[attrs["eye_colour"]], _shade(hair, 0.85))
    # nose: a short shaded hook
    d.line([(f.cx, f.cy + 0.05 * f.fh), (f.cx - 0.05 * f.fw, f.cy + 0.26 * f.fh), (f.cx + 0.06 * f.fw, f.cy + 0.28 * f.fh)],
           fill=skin_out, width=max(1, round(0.008 * f.unit)), joint="curve")
    _draw_beard(d, f, attrs["beard"], hair)
    _draw_mouth(d, f, attrs["smile"])
    if attrs["glasses"] != "none":
        _draw_glasses(img, f, attrs["glasses"], frame)
        d = ImageDraw.Draw(img)
    if attrs["hat"] != "none":
        _draw_hat(d, f, attrs["hat"], hat_rgb)

    small = np.asarray(img.resize((s, s), Image.LANCZOS))
    lit = _lighting(small, 2.0 * math.pi * float(u[4]), 0.28 * float(u[5]), 0.94 + 0.12 * float(u[6]))
    return Image.fromarray(np.clip(np.rint(lit), 0, 255).astype(np.uint8), "RGB")


# --- captions --------------------------------------------------------------------------

SUBJECTS = ["this person", "the person", "this face", "the face", "this individual"]
NOUNS = ["person", "face", "cartoon face", "individual"]
SKIN_WORDS = {"pale": ["pale"], "fair": ["fair"], "tan": ["tan", "tanned"], "brown": ["brown"], "dark": ["dark"]}
GLASSES_WORDS = {"none": ["no glasses"], "glasses": ["glasses", "eyeglasses", "spectacles"],
                 "sunglasses": ["sunglasses", "shades"]}
BEARD_WORDS = {"none": ["no beard"], "beard": ["a beard", "a full beard"], "moustache": ["a moustache", "a mustache"]}
HAT_WORDS = {"none": ["no hat"], "hat": ["a hat", "a brimmed hat"], "cap": ["a cap", "a baseball cap"]}
SMILE_NP = {"smiling": ["a smile", "a big smile"], "neutral": ["a neutral expression", "a serious expression"]}
SMILE_ADJ = {"smiling": "smiling", "neutral": "serious"}
SMILE_CLAUSE = {"smiling": ["is smiling"], "neutral": ["is not smiling", "looks serious"]}
BACKGROUND_PREPS = ["on", "in front of", "against"]
BACKGROUND_NOUNS = ["background", "backdrop"]
# Probability that a caption names each optional attribute; an absent value ('none', neutral)
# is named with ABSENT_FACTOR times that ("no beard").
MENTION_P = {"hairstyle": 0.5, "skin_tone": 0.3, "glasses": 0.5, "smile": 0.5, "beard": 0.45, "hat": 0.45,
             "background": 0.3}
ABSENT_FACTOR = 0.4
ALWAYS_NAMED = ("hair_colour", "eye_colour")


class _Words:
    """The word choices of one caption; an optional field is None when its attribute is not named."""

    def __init__(self, attrs: dict[str, str], named: set[str], rng: np.random.Generator):
        self.rng = rng
        self.hc, self.ec = attrs["hair_colour"], attrs["eye_colour"]
        self.style = attrs["hairstyle"] if "hairstyle" in named else None
        self.skin = _pick(rng, SKIN_WORDS[attrs["skin_tone"]]) + " skin" if "skin_tone" in named else None
        g, b, h, sm = attrs["glasses"], attrs["beard"], attrs["hat"], attrs["smile"]
        self.glasses = _pick(rng, GLASSES_WORDS[g]) if "glasses" in named else None
        self.glasses_worn = self.glasses is not None and g != "none"
        self.beard = _pick(rng, BEARD_WORDS[b]) if "beard" in named else None
        self.hat = _pick(rng, HAT_WORDS[h]) if "hat" in named else None
        self.hat_worn = self.hat is not None and h != "none"
        self.smile = sm if "smile" in named else None
        bg = attrs["background"]
        self.bg = f"{_with_a(bg + ' ' + _pick(rng, BACKGROUND_NOUNS))}" if "background" in named else None
        self.bg_colour = bg
        self.subject = _pick(rng, SUBJECTS)

    def hair(self) -> str:
        return _join(self.style, self.hc, "hair")

    def eyes(self) -> str:
        return f"{self.ec} eyes"

    def worn(self) -> list[str]:
        """What the face wears (a positive glasses / hat value)."""
        return [x for x, on in ((self.glasses, self.glasses_worn), (self.hat, self.hat_worn)) if on]

    def features(self, smile_np: bool) -> list[str]:
        """Noun phrases after the hair and eyes: skin, beard, absent glasses / hat, (smile)."""
        items = [self.skin, self.beard]
        items += [x for x, on in ((self.glasses, self.glasses_worn), (self.hat, self.hat_worn)) if x and not on]
        if smile_np and self.smile:
            items.append(_pick(self.rng, SMILE_NP[self.smile]))
        items = [i for i in items if i]
        return [items[int(j)] for j in self.rng.permutation(len(items))]

    def hair_eyes(self) -> list[str]:
        pair = [self.hair(), self.eyes()]
        return pair if self.rng.random() < 0.75 else pair[::-1]

    def bg_tail(self) -> str:
        return f"{_pick(self.rng, BACKGROUND_PREPS)} {self.bg}" if self.bg else ""

    def bg_clause(self) -> str:
        return f", the background is {self.bg_colour}" if self.bg else ""


# Each template returns a caption stating every named attribute, or None if it cannot.
def _t_has(w: _Words):  # this person has short black hair, blue eyes and a beard and is wearing sunglasses
    head = _join(w.subject, "has", _and(w.hair_eyes() + w.features(smile_np=True)))
    worn = w.worn()
    if worn:
        head += f" and {_pick(w.rng, ['is wearing', 'wears'])} {_and(worn)}"
    return _join(head, w.bg_tail())


def _t_with(w: _Words):  # a smiling person with curly red hair, grey eyes and a cap on a pink background
    adj = None
    if w.smile and w.rng.random() < 0.6:
        adj = SMILE_ADJ[w.smile]
    items = w.hair_eyes() + w.features(smile_np=adj is None) + w.worn()
    intro = _pick(w.rng, ["", "", "a photo of ", "a portrait of ", "a drawing of "])
    return intro + _join(_with_a(_join(adj, _pick(w.rng, NOUNS))), "with", _and(items), w.bg_tail())


def _t_clause(w: _Words):  # this person is smiling and has long brown hair and green eyes
    if not w.smile:
        return None
    head = _join(w.subject, _pick(w.rng, SMILE_CLAUSE[w.smile]), "and has", _and(w.hair_eyes() + w.features(False)))
    worn = w.worn()
    if worn:
        head += f", wearing {_and(worn)}"
    return head + w.bg_clause()


def _t_wears(w: _Words):  # the face wears glasses and a hat and has grey hair and brown eyes
    worn = w.worn()
    if not worn:
        return None
    return _join(w.subject, "wears", _and(worn), "and has", _and(w.hair_eyes() + w.features(True)), w.bg_tail())


def _t_list(w: _Words):  # short blond hair, blue eyes, a moustache and glasses
    return _and(w.hair_eyes() + w.features(True) + w.worn()) + w.bg_clause()


def _t_their(w: _Words):  # the person is smiling, their hair is short and black and their eyes are blue
    hair = f"{w.style} and {w.hc}" if w.style else w.hc
    det = "their" if w.smile else "the"  # 'their' only after a subject
    parts = [f"{det} hair is {hair}", f"{det} eyes are {w.ec}"]
    extra = w.features(smile_np=not w.smile) + w.worn()
    lead = _join(w.subject, _pick(w.rng, SMILE_CLAUSE[w.smile])) + ", " if w.smile else ""
    tail = f", with {_and(extra)}" if extra else ""
    return lead + _and(parts) + tail + w.bg_clause()


def _t_background_first(w: _Words):  # against a blue background, a person with ...
    if not w.bg:
        return None
    bg, w.bg = w.bg, None  # the body must not state it again
    prep = _pick(w.rng, BACKGROUND_PREPS)
    body = _t_with(w)
    w.bg = bg
    return f"{prep} {bg}, {body}"


_TEMPLATES = (_t_has, _t_with, _t_clause, _t_wears, _t_list, _t_their, _t_background_first)


def _n_words(caption: str) -> int:
    """Words as training's tokenizer counts them (captions are lowercase words, commas attached)."""
    return len(caption.split())


def _mentioned(attrs: dict[str, str], rng: np.random.Generator) -> set[str]:
    """The optional attributes a caption names (absent values less often), plus ALWAYS_NAMED."""
    absent = {"glasses": "none", "beard": "none", "hat": "none", "smile": "neutral"}
    u = rng.random(len(MENTION_P))
    named = set(ALWAYS_NAMED)
    for x, (key, p) in zip(u, MENTION_P.items()):
        if x < p * (ABSENT_FACTOR if attrs[key] == absent.get(key) else 1.0):
            named.add(key)
    return named


def _caption(attrs: dict[str, str], named: set[str], rng: np.random.Generator) -> str:
    """A caption stating exactly ``named``: the template drawn uniformly among those that can."""
    words = _Words(attrs, named, rng)
    for j in rng.permutation(len(_TEMPLATES)):
        caption = _TEMPLATES[int(j)](words)
        if caption is not None:
            return _normalise(caption)
    raise AssertionError("unreachable: _t_with states any named set")


def make_captions(attrs: dict[str, str], rng: np.random.Generator, k: int = 10) -> tuple[list[str], list[list[str]]]:
    """``k`` captions of the face, and for each the sorted attribute keys it states.

    A caption over ``MAX_CAPTION_WORDS`` words loses one optional attribute (drawn at random)
    and is rewritten, until it fits.
    """
    _check_attrs(attrs)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    captions: list[str] = []
    named_lists: list[list[str]] = []
    for _ in range(k):
        for _attempt in range(8):  # prefer distinct captions; keep the last draw otherwise
            named = _mentioned(attrs, rng)
            caption = _caption(attrs, named, rng)
            while _n_words(caption) > MAX_CAPTION_WORDS:
                optional = sorted(named - set(ALWAYS_NAMED))
                named.discard(optional[int(rng.integers(len(optional)))])
                caption = _caption(attrs, named, rng)
            if caption not in captions:
                break
        captions.append(caption)
        named_lists.append(sorted(named))
    return captions, named_lists


# --- items, splits, writing --------------------------------------------------------------

def split_of(attrs: dict[str, str], index: int, seed: int) -> str:
    """'novel' for a held-out (hair, eye) colour pair; otherwise synth.hashed_split (~10% 'test')."""
    if (attrs["hair_colour"], attrs["eye_colour"]) in NOVEL_PAIRS:
        return "novel"
    return synth.hashed_split("synthfaces", index, seed)


def _check_index_seed(index, seed) -> None:
    for name, v in (("index", index), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")


def generate_item(index: int, size: int, seed: int) -> tuple[Image.Image, dict[str, str], list[str], list[list[str]]]:
    """(image, attributes, captions, named keys per caption), fully determined by the arguments."""
    _check_size(size)
    _check_index_seed(index, seed)
    rng = np.random.default_rng([int(seed), int(index)])
    attrs = sample_attributes(rng)
    image = render(attrs, size, rng)
    captions, named = make_captions(attrs, rng)
    return image, attrs, captions, named


def write_synthfaces(out_dir, n: int = 10000, size: int = 64, seed: int = 0, workers: int | None = None,
                     overwrite: bool = False, progress: bool = True) -> dict:
    """Write ``n`` SynthFaces items to ``out_dir`` in the t2igan-folder format, atomically
    (``synth.write_generated``: built in a sibling temporary folder, moved into place when
    complete; bytes independent of ``workers``). Arguments are checked before anything is
    written. Returns {"n", "splits": {split: count}, "path"}."""
    _check_size(size)
    meta = {"name": "synthfaces", "attributes": ATTRIBUTES,
            "novel_pairs": [list(p) for p in sorted(NOVEL_PAIRS)], "generator": "t2igan.data.synthfaces"}
    return synth.write_generated(out_dir, n=n, size=size, seed=seed, workers=workers, overwrite=overwrite,
                                 progress=progress, generate=generate_item, split_of=split_of, meta=meta,
                                 desc="synthfaces")
