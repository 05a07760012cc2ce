"""SynthFlowers paraphrase captions: test images described with words no training caption uses.

The set measures how a text encoder generalises beyond its training vocabulary: every
attribute is stated with synonyms the SynthFlowers grammar (``t2igan.data.synth``) never
emits ("scarlet florets" for "red petals", "an ebony hub" for "a black center", "a quintet
of", "atop a lawn") in sentence frames of its own. Which words may appear is fixed here:

- ``LEXICON`` (attribute-bearing words, per attribute value, plus the nouns for flower,
  petals and centre): none of them occurs in any SynthFlowers caption;
- ``FRAME_WORDS``: the connecting words ("a", "with", "whose", "atop", ...); none of them
  names an attribute value (some, like "a" and "with", are in the training vocabulary).

``build_paraphrase_set`` is deterministic: for each test image (sorted ids) and each of its
first ``per_image`` captions j, one paraphrase naming the attributes that caption j names
plus the petal colour (so every paraphrase names at least the petal colour), drawn from
``numpy.random.default_rng([seed, hash(id), j])``. Beside it, a *control* caption from the
SynthFlowers grammar naming exactly the same attributes of the same image: evaluated in the
same order with the same seeds, the two differ only in wording.

``write_paraphrase_set(DIR)`` (``t2igan data paraphrase DIR``) checks that no lexicon word
occurs in DIR's train captions and writes ``DIR/paraphrase.jsonl`` and
``DIR/paraphrase_control.jsonl``, one record per line::

    {"id": "00000012", "caption": "...", "attributes": {...all six labels...},
     "named": ["centre_colour", "petal_colour"], "source_caption": 3}

(the caption-set format read by ``t2igan.data.caption_set``; ``t2igan eval RUN --captions
paraphrase`` scores it).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from t2igan import T2IError
from t2igan.data.synth import ATTRIBUTES, _a, caption_naming
from t2igan.data.text import tokenize

# Attribute value -> phrases (no article; the frame adds one where needed).
LEXICON: dict[str, dict[str, list[str]]] = {
    "petal_colour": {
        "red": ["scarlet", "crimson", "ruby"],
        "orange": ["tangerine", "apricot", "amber"],
        "yellow": ["golden", "lemon", "canary"],
        "pink": ["rosy", "blush", "flamingo"],
        "purple": ["violet", "plum", "amethyst"],
        "blue": ["cobalt", "sapphire", "ultramarine"],
        "white": ["snowy", "ivory", "milky"],
        "green": ["mint", "lime"],
    },
    "centre_colour": {
        "yellow": ["golden", "lemon", "canary"],
        "orange": ["tangerine", "amber", "apricot"],
        "brown": ["chocolate", "chestnut", "cocoa"],
        "black": ["ebony", "inky", "sable"],
        "white": ["snowy", "ivory", "milky"],
    },
    # collective nouns ("a quintet of ...") and "arranged in a fivefold ring"
    "petal_count": {
        "3": ["trio", "threefold"], "4": ["quartet", "fourfold"], "5": ["quintet", "fivefold"],
        "6": ["sextet", "sixfold"], "7": ["septet", "sevenfold"], "8": ["octet", "eightfold"],
    },
    "petal_shape": {
        "round": ["broad", "oval", "blunt"],
        "pointed": ["spiky", "tapering", "lanceolate"],
        "thin": ["slender", "slim", "spindly"],
    },
    "size": {
        "small": ["petite", "miniature", "diminutive"],
        "medium": ["moderate", "midsize", "middling"],
        "large": ["enormous", "giant", "massive"],
    },
    "background": {
        "sky": ["the heavens", "fluffy clouds", "a cloudy firmament"],
        "grass": ["a lawn", "turf", "a meadow"],
        "soil": ["bare earth", "mud", "loam"],
    },
}
FLOWER_NOUNS = ["bloom", "blossom"]
PETAL_NOUNS = ["florets", "rays"]
CENTRE_NOUNS = ["core", "heart", "hub", "disc", "eye"]
# Prepositions that put the flower in front of / on its background (frame words).
BACKGROUND_PREPS = {"sky": ["set before", "beneath", "below"], "grass": ["atop", "amid", "over"],
                    "soil": ["atop", "over", "amid"]}

# Every word a paraphrase may contain besides the lexicon; none names an attribute value.
FRAME_WORDS = frozenset(
    "a an the this of with and is are its whose bears displays shows boasts ringing framing circling "
    "fringed ringed by arranged in ring behind it backed backdrop here one sees set before beneath below "
    "atop amid over on them".split()
)
_ARTICLES = frozenset({"a", "an", "the"})


def lexicon_words() -> frozenset[str]:
    """The attribute-bearing words of the paraphrases (articles inside lexicon phrases excluded)."""
    words = set(FLOWER_NOUNS) | set(PETAL_NOUNS) | set(CENTRE_NOUNS)
    for per_value in LEXICON.values():
        for phrases in per_value.values():
            for p in phrases:
                words.update(tokenize(p))
    return frozenset(words - _ARTICLES)


def _pick(rng: np.random.Generator, options):
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


class _Para:
    """Word choices of one paraphrase; a field is None when its attribute is not named."""

    def __init__(self, attrs: dict[str, str], named: set[str], rng: np.random.Generator):
        self.rng = rng
        L = LEXICON

        def word(k, idx=None):
            if k not in named:
                return None
            opts = L[k][attrs[k]]
            return opts[idx] if idx is not None else _pick(rng, opts)

        self.pc = word("petal_colour")
        self.cc = word("centre_colour")
        self.sh = word("petal_shape")
        self.sz = word("size")
        self.bg = word("background")
        self.bg_prep = _pick(rng, BACKGROUND_PREPS[attrs["background"]]) if self.bg else None
        self.count_style = None
        if "petal_count" in named:
            self.count_style = "collective" if rng.random() < 0.6 else "fold"
            self.n = word("petal_count", 0 if self.count_style == "collective" else 1)
        else:
            self.n = None
        self.flower = _pick(rng, FLOWER_NOUNS)
        self.petal = _pick(rng, PETAL_NOUNS)
        self.core = _pick(rng, CENTRE_NOUNS)

    def petals(self) -> str:
        """'a quintet of spiky scarlet florets' / 'spiky scarlet florets arranged in a fivefold ring'."""
        core = " ".join(w for w in (self.sh, self.pc, self.petal) if w)
        if self.count_style == "collective":
            return f"{_a(self.n)} {self.n} of {core}"
        if self.count_style == "fold":
            return f"{core} arranged in {_a(self.n)} {self.n} ring"
        return core

    def centre(self) -> str:
        return f"{_a(self.cc)} {self.cc} {self.core}"

    def subject(self, article: str | None = None) -> str:
        phrase = " ".join(w for w in (self.sz, self.flower) if w)
        article = article or _pick(self.rng, ["a", "the", "this"])
        return f"{_a(phrase)} {phrase}" if article == "a" else f"{article} {phrase}"

    def bg_tail(self) -> str:
        if not self.bg:
            return ""
        r = self.rng.random()
        if r < 0.2:
            return f", {self.bg} behind it"
        if r < 0.35:
            return f", backed by {self.bg}"
        return f" {self.bg_prep} {self.bg}"


# Frames: each returns a paraphrase stating every named attribute, or None if it cannot.
def _f_bears(p: _Para):  # a petite bloom bears a quintet of spiky scarlet florets ringing an ebony hub
    verb = _pick(p.rng, ["bears", "displays", "shows", "boasts"])
    out = f"{p.subject()} {verb} {p.petals()}"
    if p.cc:
        out += f" {_pick(p.rng, ['ringing', 'framing', 'circling'])} {p.centre()}"
    return out + p.bg_tail()


def _f_whose(p: _Para):  # a giant blossom whose rays are cobalt and slender, with a golden heart
    adjs = [a for a in (p.pc, p.sh) if a]
    if len(adjs) == 2 and p.rng.random() < 0.5:
        adjs.reverse()
    out = f"{p.subject('a')} whose {p.petal} are {' and '.join(adjs)}"
    if p.n:
        out += (f", {_a(p.n)} {p.n} of them" if p.count_style == "collective"
                else f", arranged in {_a(p.n)} {p.n} ring")
    if p.cc:
        out += f", with {p.centre()}"
    return out + p.bg_tail()


def _f_label(p: _Para):  # crimson florets, ebony hub, backdrop of mud
    parts = []
    if p.sz:
        parts.append(f"{p.sz} {p.flower}")
    parts.append(p.petals())
    if p.cc:
        parts.append(f"{p.cc} {p.core}")
    if p.bg:
        parts.append(f"backdrop of {p.bg}")
    return ", ".join(parts)


def _f_its(p: _Para):  # a miniature blossom, its florets crimson and slender, its heart ebony
    adjs = [a for a in (p.pc, p.sh) if a]
    out = f"{p.subject('a')}, its {p.petal} {' and '.join(adjs)}"
    if p.n:
        out += f", arranged in {_a(p.n)} {LEXICON['petal_count'][_count_of(p.n)][1]} ring"
    if p.cc:
        out += f", its {p.core} {p.cc}"
    return out + p.bg_tail()


def _f_centre_first(p: _Para):  # an ebony hub fringed by a quintet of spiky crimson florets
    if not p.cc:
        return None
    out = f"{p.centre()} {_pick(p.rng, ['fringed', 'ringed'])} by {p.petals()}"
    if p.sz:
        out += f", on {_a(p.sz)} {p.sz} {p.flower}"
    return out + p.bg_tail()


def _f_background_first(p: _Para):  # atop bare earth, a giant bloom bears ...
    if not p.bg:
        return None
    bg, prep = p.bg, p.bg_prep
    p.bg = None  # the body must not state it again
    body = _f_bears(p) if p.rng.random() < 0.5 else _f_whose(p)
    p.bg = bg
    return f"{prep} {bg}, {body}"


def _f_here(p: _Para):  # here one sees a petite bloom with scarlet rays and a snowy core
    out = f"here one sees {p.subject('a')} with {p.petals()}"
    if p.cc:
        out += f" and {p.centre()}"
    return out + p.bg_tail()


def _count_of(word: str) -> str:
    for value, words in LEXICON["petal_count"].items():
        if word in words:
            return value
    raise KeyError(word)


_FRAMES = (_f_bears, _f_whose, _f_label, _f_its, _f_centre_first, _f_background_first, _f_here)


def make_paraphrase(attrs: dict[str, str], named, rng: np.random.Generator) -> str:
    """A caption stating exactly the attributes ``named`` (must include 'petal_colour') of ``attrs``
    in the paraphrase vocabulary; the frame is drawn uniformly among those that can state them."""
    named = set(named)
    if "petal_colour" not in named or not named <= set(ATTRIBUTES):
        raise ValueError(f"named must include 'petal_colour' and be a subset of {list(ATTRIBUTES)}, got {sorted(named)}")
    words = _Para(attrs, named, rng)
    for j in rng.permutation(len(_FRAMES)):
        caption = _FRAMES[int(j)](words)
        if caption is not None:
            return " ".join(caption.split())
    raise AssertionError("unreachable: _f_bears states any named set")


def _id_key(iid: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"paraphrase:{iid}".encode(), digest_size=8).digest(), "big")


def build_paraphrase_set(ids: list[str], attributes: list[dict[str, str]], named: list[list[list[str]]],
                         per_image: int = 2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(paraphrase records, control records) for the images ``ids`` (order kept), with their labels and
    the attribute keys each of their captions names; deterministic in the arguments."""
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise T2IError(f"per_image must be an integer >= 1, got {per_image!r}")
    paras, controls = [], []
    for iid, attrs, nm in zip(ids, attributes, named):
        for j in range(min(per_image, len(nm))):
            keys = sorted(set(nm[j]) | {"petal_colour"})
            rng = np.random.default_rng([int(seed), _id_key(iid), j])
            base = {"id": iid, "attributes": dict(attrs), "named": keys, "source_caption": j}
            paras.append({**base, "caption": make_paraphrase(attrs, keys, rng)})
            controls.append({**base, "caption": caption_naming(attrs, keys, rng)})
    return paras, controls


def check_vocabulary(train_captions) -> None:
    """T2IError when a lexicon word occurs in the given training captions."""
    seen = {w for c in train_captions for w in tokenize(c)}
    clash = sorted(lexicon_words() & seen)
    if clash:
        raise T2IError(f"paraphrase words also occur in the training captions: {', '.join(clash)}")


def write_paraphrase_set(root, per_image: int = 2, seed: int = 0, split: str = "test") -> dict:
    """Write ``root/paraphrase.jsonl`` and ``root/paraphrase_control.jsonl`` for a SynthFlowers folder."""
    from t2igan.data.folder import load_folder

    root = Path(root)
    meta = root / "dataset.json"
    name = json.loads(meta.read_text(encoding="utf-8")).get("name") if meta.is_file() else None
    if name not in (None, "synthflowers"):
        raise T2IError(f"{root}: a {name} folder; paraphrases are built for SynthFlowers only (its attribute words)")
    ds = load_folder(root, split)
    if ds.attributes is None or ds.named is None:
        raise T2IError(f"{root}: no attributes.jsonl with 'named' lists; paraphrases are built from a "
                       "SynthFlowers folder (`t2igan data synth`)")
    for i, a in zip(ds.ids, ds.attributes):
        for k, v in a.items():
            if k in LEXICON and v not in LEXICON[k]:
                raise T2IError(f"{root / 'attributes.jsonl'}: id '{i}' has {k}={v!r}, which has no paraphrase")
    check_vocabulary(c for caps in load_folder(root, "train").captions for c in caps)
    paras, controls = build_paraphrase_set(ds.ids, ds.attributes, ds.named, per_image, seed)
    out = {}
    for name, recs in (("paraphrase", paras), ("paraphrase_control", controls)):
        path = root / f"{name}.jsonl"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        out[name] = str(path)
    return {"n": len(paras), "images": len(ds), **out}
