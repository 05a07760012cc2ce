import pytest
import torch
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.pipeline import Pipeline


def test_same_seed_same_images(tiny_dfgan):
    pipe = Pipeline.from_pretrained(tiny_dfgan)
    caps = ["this flower has red petals", "a small flower with a yellow center"]
    a = pipe.generate(caps, seed=1, n=2)
    assert a.shape == (4, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, pipe.generate(caps, seed=1, n=2))
    assert not torch.equal(a, pipe.generate(caps, seed=2, n=2))
    imgs = pipe(caps, seed=1, n=2)
    assert len(imgs) == 4 and isinstance(imgs[0], Image.Image) and imgs[0].size == (32, 32)


def test_save_load_identical_outputs(tiny_dfgan, tmp_path):
    pipe = Pipeline.from_pretrained(tiny_dfgan)
    pipe.save_pretrained(tmp_path / "copy")
    again = Pipeline.from_pretrained(tmp_path / "copy")
    caps = ["pink petals and a black center"]
    assert torch.equal(pipe.generate(caps, seed=5, n=3), again.generate(caps, seed=5, n=3))


def test_unknown_words_are_dropped_and_reported(tiny_dfgan):
    pipe = Pipeline.from_pretrained(tiny_dfgan)
    a = pipe.generate(["red petals xylophone"], seed=0)
    assert pipe.last_dropped_words == ["xylophone"]
    assert torch.equal(a, pipe.generate(["red petals"], seed=0))
    with pytest.raises(T2IError, match="no word known"):
        pipe.generate(["xylophone quartz"], seed=0)
    with pytest.raises(T2IError, match="caption 0 is empty"):
        pipe.generate([""], seed=0)


def test_corrupt_and_foreign_checkpoints(tiny_dfgan, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dfgan / "pipeline", bad)
    (bad / "generator" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(T2IError, match="not a readable safetensors file"):
        Pipeline.from_pretrained(bad)
    shutil.rmtree(bad)
    shutil.copytree(tiny_dfgan / "pipeline", bad)
    shutil.copy(bad / "text_encoder" / "model.safetensors", bad / "generator" / "model.safetensors")
    with pytest.raises(T2IError, match="weights do not match the model"):
        Pipeline.from_pretrained(bad)
    with pytest.raises(T2IError, match="not a t2igan pipeline or run folder"):
        Pipeline.from_pretrained(tmp_path)
    with pytest.raises(T2IError, match="model folder not found"):
        Pipeline.from_pretrained(tmp_path / "nope")


def test_damsm_run_is_not_a_generator(tiny_damsm):
    with pytest.raises(T2IError, match="not an image generator"):
        Pipeline.from_pretrained(tiny_damsm)


def test_fused_upsample_pipeline_same_images(tiny_dfgan, tmp_path):
    """Generation with the fused upsampling blocks: the same images to float rounding, from
    the API and the CLI."""
    ref = Pipeline.from_pretrained(tiny_dfgan)
    fused = Pipeline.from_pretrained(tiny_dfgan, fused_upsample=True)
    assert all(b.fused_upsample for b in fused.generator.GBlocks)
    assert not any(b.fused_upsample for b in ref.generator.GBlocks)
    caps = ["this flower has red petals", "a small flower with a yellow center"]
    torch.testing.assert_close(fused.generate(caps, seed=3, n=2), ref.generate(caps, seed=3, n=2), rtol=0, atol=1e-5)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["sample", str(tiny_dfgan), caps[0], "-o", str(a)]) == 0
    assert main(["sample", str(tiny_dfgan), caps[0], "-o", str(b), "--fused-upsample"]) == 0
    diff = (torch.tensor(list(Image.open(a).getdata())) - torch.tensor(list(Image.open(b).getdata()))).abs()
    assert diff.max() <= 1  # 8-bit images: at most one level of rounding apart


def test_sample_cli(tiny_dfgan, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main(["sample", str(tiny_dfgan), "this flower has red petals", "-n", "3", "-o", str(out)]) == 0
    im = Image.open(out)
    assert im.size[0] > im.size[1] > 30  # a row of 3 images
    assert main(["sample", str(tiny_dfgan), "   ", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: caption 0 is empty"
    assert main(["sample", str(tiny_dfgan), "red qqqq", "-o", str(tmp_path / "p.png")]) == 0
    assert "ignored: qqqq" in capsys.readouterr().err
