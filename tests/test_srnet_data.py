"""The synthetic SRNet pair generator (t2igan.data.srnet_synth, `t2igan data srnet`)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.data.srnet_synth import (FOLDERS, SynthOptions, find_fonts, load_pairs, make_pair, parse_size, read_words,
                                     skeletonize, split_ids, write_srnet_synth)


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_srnet_synth(tmp_path / name, 6, (32, 64), seed=seed, progress=False)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) == 6 * len(FOLDERS) + 2 and da == db
    assert sum(da[k] != dc[k] for k in da if k.startswith("i_s/")) == 6


def test_a_pair_regenerates_alone(tmp_path):
    write_srnet_synth(tmp_path / "d", 5, (32, 64), seed=1, progress=False)
    pair = make_pair(4, 1, find_fonts(), read_words(None), SynthOptions(size=(32, 64), test_fraction=0.1))
    for f in FOLDERS:
        a = np.asarray(Image.open(tmp_path / "d" / f / "000004.png"))
        assert np.array_equal(a, pair[f]), f


def test_layout_and_what_each_image_holds(tmp_path):
    root = tmp_path / "d"
    s = write_srnet_synth(root, 10, (32, 64), seed=0, progress=False, test_fraction=0.2)
    assert (s["train"], s["test"]) == (8, 2)
    recs = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    assert [r["split"] for r in recs] == ["train"] * 8 + ["test"] * 2
    assert all(r["caption"].lower() != r["source"].lower() for r in recs)
    assert split_ids(root, "test") == ["000008", "000009"]
    p = load_pairs(root, [r["id"] for r in recs])
    assert p["i_s"].shape == (10, 3, 32, 64) and p["mask_t"].shape == (10, 1, 32, 64)
    m = p["mask_t"][:, 0] > 0
    outside = ~m[:, None].repeat(3, 1)
    assert np.array_equal(p["t_f"][outside], p["t_b"][outside])  # the edit is the background outside the new word
    assert np.all(p["t_t"][outside] == 127)  # t_t: the styled word on grey
    assert m.mean(axis=(1, 2)).min() > 0.02  # every pair has ink
    sk = p["t_sk"][:, 0] > 0
    assert sk.any(axis=(1, 2)).all() and not (sk & ~m).any()  # the skeleton lies inside the word
    assert sk.sum() < 0.6 * m.sum()
    it = p["i_t"]
    assert (it == 127).mean() > 0.6 and (it < 60).any()  # black word on grey


def test_skeleton_is_one_pixel_wide():
    a = np.zeros((20, 40), bool)
    a[6:13, 4:36] = True  # a 7-pixel-thick bar
    sk = skeletonize(a)
    assert sk.any() and not (sk & ~a).any()
    cols = sk[:, 8:32].sum(axis=0)
    assert cols.max() == 1 and (cols == 1).mean() > 0.9  # one pixel across the bar
    assert not (sk[:-1, :-1] & sk[1:, :-1] & sk[:-1, 1:] & sk[1:, 1:]).any()  # no 2x2 block


def test_cli_and_bad_inputs(tmp_path, capsys):
    out = tmp_path / "pairs"
    assert main(["data", "srnet", "--out", str(out), "--n", "3", "--size", "32x64", "--quiet"]) == 0
    assert "train 3, test 0" in capsys.readouterr().out
    for args, msg in [(["--size", "30x64"], "multiples of 8"), (["--size", "big"], "HxW"),
                      (["--n", "0"], "--n must be"), ([], "not empty"),
                      (["--backgrounds", str(tmp_path / "none")], "background folder not found")]:
        rc = main(["data", "srnet", "--out", str(out), "--quiet", *args])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and msg in err and "\n" not in err, err
    (out / "t_b" / "000001.png").unlink()
    with pytest.raises(T2IError, match=r"t_b/000001.png: missing"):
        load_pairs(out, ["000000", "000001"])
    assert parse_size("64x128") == (64, 128)


def test_photo_backgrounds_are_used(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((50, 90, 3), (10, 200, 30), np.uint8)).save(photos / "green.png")
    write_srnet_synth(tmp_path / "d", 8, (32, 64), seed=0, backgrounds=photos, progress=False)
    p = load_pairs(tmp_path / "d", [f"{i:06d}" for i in range(8)])
    green = (np.abs(p["t_b"].astype(int) - np.array([10, 200, 30])[None, :, None, None]).max(axis=1) < 20).mean(axis=(1, 2))
    assert (green > 0.9).any()  # some backgrounds are crops of the photo (with grain)
