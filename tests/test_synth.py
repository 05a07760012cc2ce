"""SynthFlowers: determinism, caption grammar, splits, argument checks, colour separability."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2igan.data import synth
from t2igan.data.synth import (ATTRIBUTES, NOVEL_PAIRS, generate_item, make_captions, render,
                               sample_attributes, write_synthflowers)

# Words a caption may use for each attribute value (the test's own copy of the grammar).
VALUE_WORDS = {
    "petal_count": {"3": {"three", "3"}, "4": {"four", "4"}, "5": {"five", "5"}, "6": {"six", "6"},
                    "7": {"seven", "7"}, "8": {"eight", "8"}},
    "petal_shape": {"round": {"round", "rounded"}, "pointed": {"pointed", "pointy", "sharp"},
                    "thin": {"thin", "narrow", "skinny"}},
    "size": {"small": {"small", "tiny", "little"}, "medium": {"medium", "average"},
             "large": {"large", "big", "huge"}},
    "background": {"sky": {"sky"}, "grass": {"grass"}, "soil": {"soil", "dirt"}},
}
CENTRE_NOUNS = {"center", "centre", "middle", "pistil"}
COLOUR_WORDS = set(ATTRIBUTES["petal_colour"]) | set(ATTRIBUTES["centre_colour"])
BACKGROUND_COLOURS = {"sky": {"blue"}, "grass": {"green"}, "soil": {"brown"}}


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_determinism_and_worker_independence(tmp_path):
    # n >= 64 with workers=2 takes the multiprocessing path; workers=1 runs in-process
    a = write_synthflowers(tmp_path / "a", n=64, size=32, seed=3, workers=1, progress=False)
    write_synthflowers(tmp_path / "b", n=64, size=32, seed=3, workers=2, progress=False)
    fa, fb = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert len(fa) == 2 * 64 + 5  # images, captions, dataset.json, attributes.jsonl, 3 splits
    assert fa == fb
    # generate_item gives the same item again
    for i in (0, 5, 63):
        img, attrs, caps, named = generate_item(i, 32, 3)
        assert synth.png_bytes(img) == fa[f"images/{i:08d}.png"]
        assert ("\n".join(caps) + "\n").encode() == fa[f"captions/{i:08d}.txt"]
    # another seed gives other images
    write_synthflowers(tmp_path / "c", n=24, size=32, seed=4, workers=1, progress=False)
    fc = _all_files(tmp_path / "c")
    assert not any(fa[f"images/{i:08d}.png"] == fc[f"images/{i:08d}.png"] for i in range(24))
    assert a == {"n": 64, "splits": a["splits"], "path": str(tmp_path / "a")}
    assert sum(a["splits"].values()) == 64


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    real = synth.generate_item

    def broken(index, size, seed):
        if index == 7:
            raise RuntimeError("boom")
        return real(index, size, seed)

    monkeypatch.setattr(synth, "generate_item", broken)
    with pytest.raises(RuntimeError, match="boom"):
        write_synthflowers(tmp_path / "sf", n=12, size=32, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_folder_layout(tmp_path):
    out = tmp_path / "sf"
    summary = write_synthflowers(out, n=40, size=32, seed=0, workers=1, progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta == {"format": "t2igan-folder", "version": 1, "name": "synthflowers", "size": 32, "seed": 0,
                    "n": 40, "attributes": ATTRIBUTES, "novel_pairs": [list(p) for p in sorted(NOVEL_PAIRS)],
                    "generator": "t2igan.data.synth"}
    recs = [json.loads(line) for line in (out / "attributes.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == [f"{i:08d}" for i in range(40)]
    for r in recs:
        assert list(r["attributes"]) == list(ATTRIBUTES)
        caps = (out / "captions" / f"{r['id']}.txt").read_text(encoding="utf-8")
        assert caps.endswith("\n") and len(caps.splitlines()) == 10 == len(r["named"])
        with Image.open(out / "images" / f"{r['id']}.png") as im:
            assert im.mode == "RGB" and im.size == (32, 32)
    assert not list(tmp_path.glob("sf.tmp-*"))
    assert summary["path"] == str(out)


def test_splits(tmp_path):
    out = tmp_path / "sf"
    summary = write_synthflowers(out, n=60, size=32, seed=7, workers=1, progress=False)
    attrs = {json.loads(l)["id"]: json.loads(l)["attributes"] for l in (out / "attributes.jsonl").read_text().splitlines()}
    splits = {}
    for s in ("train", "test", "novel"):
        ids = (out / "splits" / f"{s}.txt").read_text().splitlines()
        assert ids == sorted(ids)
        splits[s] = ids
        assert summary["splits"][s] == len(ids)
    all_ids = splits["train"] + splits["test"] + splits["novel"]
    assert sorted(all_ids) == sorted(attrs) and len(set(all_ids)) == len(all_ids)
    for s, ids in splits.items():
        for i in ids:
            pair = (attrs[i]["petal_colour"], attrs[i]["centre_colour"])
            assert (pair in NOVEL_PAIRS) == (s == "novel"), (s, i, pair)
    assert splits["novel"] and splits["train"]


def test_split_fractions_and_novel_pairs():
    assert len(NOVEL_PAIRS) >= 5
    petals = [p for p, _ in NOVEL_PAIRS]
    assert len(petals) == len(set(petals))
    for p, c in NOVEL_PAIRS:
        assert p in ATTRIBUTES["petal_colour"] and c in ATTRIBUTES["centre_colour"]
    rng = np.random.default_rng(0)
    counts = defaultdict(int)
    for i in range(4000):
        counts[synth.split_of(sample_attributes(rng), i, 0)] += 1
    assert 0.09 < counts["novel"] / 4000 < 0.16
    assert 0.06 < counts["test"] / (counts["test"] + counts["train"]) < 0.14


def _tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", caption)


def _check_caption(caption: str, named: list[str], attrs: dict[str, str]) -> None:
    assert caption == caption.lower() and caption == caption.strip() and "  " not in caption
    assert re.fullmatch(r"[a-z0-9 ,]+", caption), caption
    assert named and named == sorted(set(named)) and set(named) <= set(ATTRIBUTES), (caption, named)
    toks = set(_tokens(caption))
    for key, table in VALUE_WORDS.items():
        said = {v for v, words in table.items() if toks & words}
        if key in named:
            assert said == {attrs[key]}, (caption, key, said)
        else:
            assert not said, (caption, key, said)
    # colours: each colour word must be explained by a named attribute
    allowed = set()
    if "petal_colour" in named:
        allowed.add(attrs["petal_colour"])
        assert attrs["petal_colour"] in toks, caption
    if "centre_colour" in named:
        allowed.add(attrs["centre_colour"])
        assert attrs["centre_colour"] in toks and toks & CENTRE_NOUNS, caption
    else:
        assert not toks & CENTRE_NOUNS, caption
    if "background" in named:
        allowed |= BACKGROUND_COLOURS[attrs["background"]]
    # so the flower's petal colour word never appears unless petal_colour (or a named
    # attribute with the same colour word) is named
    assert toks & COLOUR_WORDS <= allowed, (caption, named)


def test_caption_grammar():
    seen = {k: set() for k in ATTRIBUTES}
    mention = defaultdict(int)
    total = 0
    for i in range(300):
        _, attrs, caps, named = generate_item(i, 32, 11)
        assert len(caps) == len(named) == 10
        for c, nm in zip(caps, named):
            _check_caption(c, nm, attrs)
            total += 1
            for k in nm:
                seen[k].add(attrs[k])
                mention[k] += 1
    for k, vals in ATTRIBUTES.items():
        assert seen[k] == set(vals), (k, set(vals) - seen[k])
    assert 0.7 < mention["petal_colour"] / total < 0.9
    assert 0.5 < mention["centre_colour"] / total < 0.7


def test_caption_grammar_catches_a_wrong_value():
    attrs = {"petal_colour": "pink", "centre_colour": "yellow", "petal_count": "5", "petal_shape": "pointed",
             "size": "small", "background": "grass"}
    _check_caption("this flower has five pointed pink petals and a yellow center",
                   ["centre_colour", "petal_colour", "petal_count", "petal_shape"], attrs)
    bad = [("this flower has six pointed pink petals", ["petal_colour", "petal_count", "petal_shape"]),
           ("this flower has pink petals", ["centre_colour", "petal_colour"]),
           ("this flower has pink petals and a yellow center", ["petal_colour"]),
           ("a pink flower on green grass", ["petal_colour"])]
    for cap, nm in bad:
        with pytest.raises(AssertionError):
            _check_caption(cap, nm, attrs)


def test_make_captions_k_and_validation():
    attrs = sample_attributes(np.random.default_rng(1))
    caps, named = make_captions(attrs, np.random.default_rng(2), k=25)
    assert len(caps) == len(named) == 25
    with pytest.raises(ValueError):
        make_captions({**attrs, "petal_colour": "teal"}, np.random.default_rng(0))


@pytest.mark.parametrize("size", [32, 256])
def test_render_sizes(size):
    img = generate_item(0, size, 0)[0]
    assert img.mode == "RGB" and img.size == (size, size)


def test_bad_arguments(tmp_path):
    for size in (31, 257, 64.0):
        with pytest.raises(ValueError):
            write_synthflowers(tmp_path / "x", n=4, size=size, progress=False)
        with pytest.raises(ValueError):
            generate_item(0, size, 0)
    for n in (0, -1):
        with pytest.raises(ValueError):
            write_synthflowers(tmp_path / "x", n=n, size=32, progress=False)
    with pytest.raises(ValueError):
        write_synthflowers(tmp_path / "x", n=4, size=32, workers=0, progress=False)
    assert not (tmp_path / "x").exists()


def test_existing_dir_needs_overwrite(tmp_path):
    out = tmp_path / "sf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists and is not empty; pass --overwrite"):
        write_synthflowers(out, n=4, size=32, workers=1, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sf"]
    write_synthflowers(out, n=4, size=32, workers=1, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sf"]
    # an existing empty folder is fine without overwrite
    empty = tmp_path / "empty"
    empty.mkdir()
    write_synthflowers(empty, n=2, size=32, workers=1, progress=False)
    assert len(list((empty / "images").iterdir())) == 2


def test_petal_colours_separable():
    base = {"petal_colour": "red", "centre_colour": "black", "petal_count": "6", "petal_shape": "round",
            "size": "large", "background": "grass"}
    imgs = {pc: np.asarray(render({**base, "petal_colour": pc}, 64, np.random.default_rng(5)), dtype=np.float64)
            for pc in ATTRIBUTES["petal_colour"]}
    # the same nuisance draws: pixels differ only where the petals are
    diff = np.abs(imgs["red"] - imgs["blue"]).sum(-1) > 30
    assert 0.08 < diff.mean() < 0.6
    means = {pc: im[diff].mean(0) for pc, im in imgs.items()}
    cols = list(means)
    for i, a in enumerate(cols):
        for b in cols[i + 1:]:
            assert np.abs(means[a] - means[b]).max() > 40, (a, b, means[a], means[b])
    # green petals stand out from the grass behind them
    bg = imgs["green"][~diff].mean(0)
    assert np.abs(means["green"] - bg).max() > 60
    # the centre colour changes the pixels too (same geometry)
    other = np.asarray(render({**base, "centre_colour": "white"}, 64, np.random.default_rng(5)), dtype=np.float64)
    assert (np.abs(other - imgs["red"]).sum(-1) > 30).mean() > 0.01


def test_sizes_are_separated():
    assert list(ATTRIBUTES) == ["petal_colour", "centre_colour", "petal_count", "petal_shape", "size", "background"]
    lo_hi = [synth.SIZE_RADIUS[s] for s in ATTRIBUTES["size"]]
    for (lo1, hi1), (lo2, hi2) in zip(lo_hi, lo_hi[1:]):
        assert hi1 + 0.05 < lo2
    assert lo_hi[-1][1] + 0.03 < 0.5  # the largest flower fits in the frame with a margin
