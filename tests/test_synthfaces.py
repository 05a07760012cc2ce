"""SynthFaces: determinism, captions naming the recorded hair and eye colours, the novel split,
attributes visible in the pixels, sizes, `data check`, argument checks."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from t2igan.cli import main
from t2igan.data import synthfaces as sf
from t2igan.data.synth import png_bytes
from t2igan.data.synthfaces import (ATTRIBUTES, HAIR_RGB, NOVEL_PAIRS, generate_item, render, sample_attributes,
                                    split_of, write_synthfaces)

# The test's own copy of the words a caption uses for each value (checked both ways: a named
# attribute's words are there, an unnamed attribute's are not).
PHRASES = {
    "hairstyle": {"short": [r"\bshort (\w+ )?hair\b", r"hair is short\b"], "long": [r"\blong (\w+ )?hair\b", r"hair is long\b"],
                  "curly": [r"\bcurly (\w+ )?hair\b", r"hair is curly\b"]},
    "skin_tone": {v: [rf"\b{w} skin\b" for w in ws] for v, ws in
                  {"pale": ["pale"], "fair": ["fair"], "tan": ["tan", "tanned"], "brown": ["brown"], "dark": ["dark"]}.items()},
    "glasses": {"none": [r"\bno glasses\b"], "glasses": [r"\b(?<!no )(eye)?glasses\b", r"\bspectacles\b"],
                "sunglasses": [r"\bsunglasses\b", r"\bshades\b"]},
    "smile": {"smiling": [r"\ba (big )?smile\b", r"(?<!not )\bsmiling\b"],
              "neutral": [r"\bneutral expression\b", r"\bserious\b", r"\bnot smiling\b"]},
    "beard": {"none": [r"\bno beard\b"], "beard": [r"\ba (full )?beard\b"], "moustache": [r"\bmou?stache\b", r"\bmustache\b"]},
    "hat": {"none": [r"\bno hat\b"], "hat": [r"\ba (brimmed )?hat\b"], "cap": [r"\b(baseball )?cap\b"]},
    "background": {v: [rf"\b{v} (background|backdrop)\b", rf"background is {v}\b"] for v in ATTRIBUTES["background"]},
}
HAIR_COLOUR = re.compile(r"\b(?!their\b|the\b)(\w+) hair\b|\bhair is (?:(?:short|long|curly) and )?(\w+)")
EYE_COLOUR = re.compile(r"\b(?!their\b|the\b)(\w+) eyes\b|\beyes are (\w+)")


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sf") / "faces"
    write_synthfaces(out, n=160, size=32, seed=1, workers=1, progress=False)
    return out


def _records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "attributes.jsonl").read_text().splitlines()]


def test_determinism(tmp_path, faces):
    write_synthfaces(tmp_path / "again", n=160, size=32, seed=1, workers=2, progress=False)  # the worker-pool path
    fa = _all_files(faces)
    assert len(fa) == 2 * 160 + 5
    assert _all_files(tmp_path / "again") == fa
    for i in (0, 7, 159):
        img, attrs, caps, named = generate_item(i, 32, 1)
        assert png_bytes(img) == fa[f"images/{i:08d}.png"]
        assert ("\n".join(caps) + "\n").encode() == fa[f"captions/{i:08d}.txt"]
    write_synthfaces(tmp_path / "other", n=20, size=32, seed=2, workers=1, progress=False)
    fo = _all_files(tmp_path / "other")
    assert not any(fa[f"images/{i:08d}.png"] == fo[f"images/{i:08d}.png"] for i in range(20))
    assert fa["attributes.jsonl"] != fo["attributes.jsonl"]


def test_layout_and_meta(faces):
    meta = json.loads((faces / "dataset.json").read_text())
    assert meta == {"format": "t2igan-folder", "version": 1, "name": "synthfaces", "size": 32, "seed": 1, "n": 160,
                    "attributes": ATTRIBUTES, "novel_pairs": [list(p) for p in sorted(NOVEL_PAIRS)],
                    "generator": "t2igan.data.synthfaces"}
    recs = _records(faces)
    assert [r["id"] for r in recs] == [f"{i:08d}" for i in range(160)]
    for r in recs:
        assert list(r["attributes"]) == list(ATTRIBUTES)
        assert all(r["attributes"][k] in ATTRIBUTES[k] for k in ATTRIBUTES)
        assert len(r["named"]) == 10


def test_captions_name_the_recorded_attributes(faces):
    recs = {r["id"]: r for r in _records(faces)}
    n_optional = 0
    for iid, r in recs.items():
        caps = (faces / "captions" / f"{iid}.txt").read_text().splitlines()
        a = r["attributes"]
        assert len(caps) == 10 and len(set(caps)) >= 8
        for cap, named in zip(caps, r["named"]):
            assert re.fullmatch(r"[a-z]+(,? [a-z]+)*", cap), cap
            assert len(cap.split()) <= sf.MAX_CAPTION_WORDS, cap
            hair = [x or y for x, y in HAIR_COLOUR.findall(cap)]
            eyes = [x or y for x, y in EYE_COLOUR.findall(cap)]
            assert hair == [a["hair_colour"]] and eyes == [a["eye_colour"]], (cap, a)
            assert {"hair_colour", "eye_colour"} <= set(named) and named == sorted(named)
            for key, values in PHRASES.items():
                hits = {v for v, pats in values.items() if any(re.search(p, cap) for p in pats)}
                assert hits == ({a[key]} if key in named else set()), (key, cap, a, named)
            n_optional += len(named) - 2
    assert n_optional > 160 * 10 * 1.0  # on average more than one optional attribute per caption


def test_novel_split(faces):
    recs = {r["id"]: r["attributes"] for r in _records(faces)}
    splits = {s: (faces / "splits" / f"{s}.txt").read_text().split() for s in ("train", "test", "novel")}
    assert sorted(sum(splits.values(), [])) == sorted(recs)
    for s, ids in splits.items():
        for i in ids:
            pair = (recs[i]["hair_colour"], recs[i]["eye_colour"])
            assert (pair in NOVEL_PAIRS) == (s == "novel"), (s, pair)
    # over many draws: every held-out pair occurs, only in novel; test is ~10% of the rest
    counts = {"train": 0, "test": 0, "novel": 0}
    seen = set()
    for i in range(4000):
        attrs = sample_attributes(np.random.default_rng([0, i]))  # generate_item's first draw
        s = split_of(attrs, i, 0)
        counts[s] += 1
        if s == "novel":
            seen.add((attrs["hair_colour"], attrs["eye_colour"]))
    assert seen == NOVEL_PAIRS
    assert 0.13 < counts["novel"] / 4000 < 0.2
    assert 0.08 < counts["test"] / (counts["train"] + counts["test"]) < 0.12


def _pair(attrs: dict, key: str, a: str, b: str, seed: int, size: int = 64):
    """Two renders from the same rng state differing only in attribute ``key`` (a, then b)."""
    imgs = []
    for v in (a, b):
        imgs.append(np.asarray(render({**attrs, key: v}, size, np.random.default_rng(seed)), dtype=np.float64))
    return imgs


def _base(i: int) -> dict:
    return sample_attributes(np.random.default_rng([99, i]))


def test_hair_colour_is_rendered():
    palette = np.array([HAIR_RGB[c] for c in ATTRIBUTES["hair_colour"]], float)
    for i in range(12):  # every hairstyle, with and without hats and beards
        base = _base(i)
        for colour in ATTRIBUTES["hair_colour"]:
            other = "white" if colour in ("black", "brown", "red") else "black"
            img, ref = _pair(base, "hair_colour", colour, other, seed=i)
            region = np.abs(img - ref).sum(-1) > 200  # pixels that are mostly hair
            assert region.sum() > 60, (base, colour)
            mean = img[region].mean(0)
            nearest = ATTRIBUTES["hair_colour"][int(np.argmin(((palette - mean) ** 2).sum(1)))]
            assert nearest == colour, (base, colour, mean)
            if colour in ("brown", "blond", "red"):  # the label's channel order
                assert mean[0] > mean[1] > mean[2], (colour, mean)


def test_sunglasses_are_dark_and_glasses_are_frames():
    for i in range(8):
        base = {**_base(i), "glasses": "none"}
        clear, sun = _pair(base, "glasses", "none", "sunglasses", seed=i)
        lens = np.abs(sun - clear).sum(-1) > 30
        luma = np.array([0.299, 0.587, 0.114])
        dark, before = sun[lens] @ luma, clear[lens] @ luma
        assert lens.sum() > 40 and dark.mean() < 100 and dark.mean() < 0.5 * before.mean(), (base, dark.mean(), before.mean())
        _, glasses = _pair(base, "glasses", "none", "glasses", seed=i)
        frames = np.abs(glasses - clear).sum(-1) > 30
        assert 0 < frames.sum() < lens.sum(), (frames.sum(), lens.sum())


def test_eye_colour_shows_through_sunglasses():
    for glasses in ("none", "sunglasses"):
        for i in range(4):
            base = {**_base(i), "glasses": glasses}
            blue, brown = _pair(base, "eye_colour", "blue", "brown", seed=i)
            iris = np.abs(blue - brown).sum(-1) > (20 if glasses == "sunglasses" else 60)
            assert iris.sum() >= 4, (glasses, base)
            assert blue[iris].mean(0)[2] > blue[iris].mean(0)[0], (glasses, blue[iris].mean(0))
            assert brown[iris].mean(0)[0] > brown[iris].mean(0)[2], (glasses, brown[iris].mean(0))


def test_smile_and_hat_change_their_region():
    for i in range(4):
        base = _base(i)
        smiling, neutral = _pair(base, "smile", "smiling", "neutral", seed=i)
        rows = np.nonzero(np.abs(smiling - neutral).sum(-1).max(1) > 60)[0]
        assert rows.size and rows.min() > 64 * 0.5, rows  # the mouth: lower half of the picture
        hat, none = _pair(base, "hat", "hat", "none", seed=i)
        rows = np.nonzero(np.abs(hat - none).sum(-1).max(1) > 60)[0]
        assert rows.size and rows.max() < 64 * 0.45, rows  # the hat: above the eyes


@pytest.mark.parametrize("size", [32, 64, 128])
def test_image_size(size):
    img, attrs, caps, named = generate_item(3, size, 0)
    assert img.size == (size, size) and img.mode == "RGB"
    assert np.asarray(img).std() > 20


def test_data_check_passes(faces, capsys):
    assert main(["data", "check", str(faces)]) == 0
    out = capsys.readouterr().out
    assert "folder layout" in out and out.strip().endswith("OK")
    assert re.search(r"novel: \d+ images, \d+ captions, attributes", out)


def test_evaluator_reads_the_attributes(faces):
    from t2igan.eval.evaluator import labelled_split

    images, targets, values = labelled_split(faces, "train", 32)
    assert values == ATTRIBUTES
    assert targets.shape == (images.shape[0], len(ATTRIBUTES)) and images.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "n must be an integer >= 1, got 0"),
    (["--size", "40"], "size must be a multiple of 16 in 32..256, got 40"),
    (["--size", "16"], "size must be a multiple of 16 in 32..256, got 16"),
    (["--size", "272"], "size must be a multiple of 16 in 32..256, got 272"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
])
def test_bad_arguments(tmp_path, capsys, args, message):
    out = tmp_path / "x"
    assert main(["data", "synthfaces", "--out", str(out), "--n", "4", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_in_python(tmp_path):
    with pytest.raises(ValueError, match="size must be a multiple of 16"):
        write_synthfaces(tmp_path / "x", n=4, size=48.0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        write_synthfaces(tmp_path / "x", n=4, size=32, seed=True)
    with pytest.raises(ValueError, match="index must be an integer"):
        generate_item(-1, 32, 0)
    with pytest.raises(ValueError, match="hat='beret' is not one of"):
        render({**_base(0), "hat": "beret"}, 32, np.random.default_rng(0))
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["data", "synthfaces", "--out", str(out), "--n", "6", "--size", "32", "--quiet"]) == 0
    assert "SynthFaces written to" in capsys.readouterr().out
    assert main(["data", "synthfaces", "--out", str(out), "--n", "6", "--size", "32", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_paraphrase_set_refuses_a_face_folder(faces):
    """Paraphrases swap SynthFlowers' attribute words; on a SynthFaces folder the refusal names the dataset."""
    from t2igan import T2IError
    from t2igan.data.paraphrase import write_paraphrase_set

    with pytest.raises(T2IError, match="a synthfaces folder; paraphrases are built for SynthFlowers only"):
        write_paraphrase_set(faces)
    assert not (faces / "paraphrase.jsonl").exists()
