"""Bad values that used to end in a traceback or load without a word: NaN and other-dtype
weights, a seed outside the generator's range, a full disk."""
from __future__ import annotations

import errno

import pytest
import torch
from torch import nn

from t2igan import T2IError
from t2igan.cli import main
from t2igan.core import weights


def test_nan_and_other_dtype_weights_are_refused_naming_the_key():
    m = nn.Linear(3, 2)
    good = {k: v.clone() for k, v in m.state_dict().items()}
    weights.load_state_strict(m, good, "x")
    nan = {**good, "weight": good["weight"].clone().fill_(float("nan"))}
    with pytest.raises(T2IError, match=r"x: 'weight' holds NaN or infinite values"):
        weights.load_state_strict(m, nan, "x")
    half = {**good, "bias": good["bias"].half()}
    with pytest.raises(T2IError, match=r"x: 'bias' is float16, the model expects float32"):
        weights.load_state_strict(m, half, "x")
    assert torch.equal(m.weight, good["weight"])  # nothing was loaded


def test_a_nan_checkpoint_is_refused_by_the_pipeline(tiny_dfgan, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from t2igan.pipeline import Pipeline

    d = tmp_path / "run"
    shutil.copytree(tiny_dfgan / "pipeline", d)
    f = d / "generator" / "model.safetensors"
    state = load_file(str(f))
    k = next(k for k, v in state.items() if v.is_floating_point())
    state[k] = state[k].clone().fill_(float("inf"))
    save_file(state, str(f))
    with pytest.raises(T2IError, match=f"'{k}' holds NaN or infinite values"):
        Pipeline.from_pretrained(d)


@pytest.mark.parametrize("seed", ["100000000000000000000000", "-1"])
def test_a_seed_outside_the_generators_range_is_one_line(tiny_dfgan, tmp_path, capsys, seed):
    out = tmp_path / "s.png"
    assert main(["sample", str(tiny_dfgan), "a red flower", f"--seed={seed}", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: seed must be a whole number from 0 to")
    assert not out.exists()


def test_a_full_disk_is_one_line_and_keeps_the_old_files(tiny_dfgan, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.png"
    out.write_bytes(b"old")
    import torchvision.utils

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(torchvision.utils, "save_image", full)
    assert main(["sample", str(tiny_dfgan), "a red flower", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]
    assert out.read_bytes() == b"old"
