"""GALIP and LAFITE under torchrun: 2 gloo processes train the parameters of 1 on the same global batch
(GALIP with captions; LAFITE with captions and language-free), with the frozen CLIP unchanged.

What must be the global batch's for that: the noise, LAFITE's per-pixel noise, style-mixing noise,
condition perturbation and caption/pseudo-text mixing, GALIP's mismatched captions, LAFITE's
contrastive terms (every image against every condition of all processes) and its ``w_avg`` (the
global batch's mean w). A per-process draw, pairing or negative set moves the weights by O(1) of
the distance they travel (measured: 0.3 to 16 for the worst tensor); float rounding of the split
batch, amplified by Adam, by ~1e-4 of it (tolerance as tests/test_distributed.py).
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_overrides
from test_distributed import assert_same, initial_weights, torchrun, train_here, weights

from t2igan import T2IError
from t2igan.config import load_config

pytest.importorskip("transformers", reason="GALIP and LAFITE need CLIP (pip install 't2igan[clip]')")

GALIP = {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "model.code_ch": 8, "model.mid_ch": 8, "model.map_num": 2,
         "data.crop": False}
LAFITE = {"model.z_dim": 16, "model.w_dim": 16, "model.map_num": 2, "model.channel_base": 128, "model.channel_max": 8,
          "model.fts_dim": 16, "data.image_size": 16, "lafite.r1_interval": 2}  # lazy R1 at steps 0 and 2
# GALIP (Adam betas 0, 0.9: each first step is about lr * sign(gradient)) amplifies rounding more on some
# tiny CLIPs (the fixture's BPE vocabulary, hence its text features, follows the string hash seed): there
# a 1-process run on 2 threads differs from one on 1 thread by the same 1.2e-2 of the distance moved
# (worst tensor; median 6e-4), elsewhere by 2e-5. A mismatched caption of the process's own rows
# moves netC by 0.3 of it, a per-process noise or no gradient average every tensor by ~0.5.
TOLERANCE = {"galip": 3e-2}
RUNS = {
    "galip": ("galip", GALIP),
    # all four contrastive terms, both softmax directions
    "lafite_captions": ("lafite", {**LAFITE, "lafite.iid": 1.0, "lafite.iic": 1.0, "lafite.lam": 0.5}),
    "lafite_language_free": ("lafite", {**LAFITE, "lafite.mixing_prob": 1.0, "lafite.itd": 10.0}),
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from clip_fixture import tiny_clip_dir

    return tiny_clip_dir(tmp_path_factory.mktemp("clip"), image_size=32, patch_size=8, width=32, layers=2, proj=16)


def overrides(name: str, data, clip_dir, out) -> list[str]:
    return tiny_overrides(data, out, **{**RUNS[name][1], "clip": str(clip_dir), "train.max_steps": 3,
                                        "train.threads": 1})


def test_galip_and_lafite_two_processes_equal_one(tiny_data, clip_dir, tmp_path):
    # test_distributed's worker trains the listed [task, overrides] one after the other in one torchrun
    listing = [[task, overrides(n, tiny_data, clip_dir, tmp_path / f"{n}_two")] for n, (task, _) in RUNS.items()]
    (tmp_path / "runs.json").write_text(json.dumps(listing))
    torchrun(None, [], worker=tmp_path / "runs.json")
    for n, (task, _) in RUNS.items():
        summary = json.loads((tmp_path / f"{n}_two" / "train_summary.json").read_text())
        assert summary["processes"] == 2 and summary["step"] == 3, n
        init = initial_weights(task, overrides(n, tiny_data, clip_dir, tmp_path / f"{n}_init"))
        train_here(task, overrides(n, tiny_data, clip_dir, tmp_path / f"{n}_one"))
        one, two = weights(tmp_path / f"{n}_one"), weights(tmp_path / f"{n}_two")
        assert_same(one, two, init, tol=TOLERANCE.get(task, 5e-3))
        if task == "galip":  # G's copy of the CLIP layers: frozen, bit for bit, on every process
            frozen = [k for k in one if ".CLIP_ViT." in k]
            assert frozen and all(torch.equal(two[k], init[k]) and torch.equal(one[k], init[k]) for k in frozen)
        else:  # it trained, and w_avg followed the global batch's mean w
            assert one["G/mapping.w_avg"].abs().max() > 0


@pytest.mark.parametrize("key, value, match", [
    ("model.projection", "batch", "model.projection=batch"),
    ("model.mbstd_group_size", "8", "model.mbstd_group_size=8"),
])
def test_lafite_refuses_batch_mixing_choices_under_torchrun(tiny_data, clip_dir, tmp_path, key, value, match):
    from t2igan.families.lafite import check_processes

    cfg = load_config(None, overrides("lafite_captions", tiny_data, clip_dir, tmp_path / "r") + [f"{key}={value}"],
                      task="lafite")
    check_processes(cfg, 1)  # one process: the official choices stay
    with pytest.raises(T2IError, match=match):
        check_processes(cfg, 2)  # 8 images: 4 on each process, a group of 8 spans both
