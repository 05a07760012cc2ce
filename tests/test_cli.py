"""The README's main job (t2igan demo) and the data command, at tiny sizes."""
from PIL import Image

from t2igan.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "120", "--clip-minutes", "0.02", "--minutes", "0.02"]) == 0
    text = capsys.readouterr().out
    assert f"written to {out / 'samples.png'}" in text
    im = Image.open(out / "samples.png")
    assert im.size == (4 * 64 + 5 * 2, 4 * 64 + 5 * 2)  # 4 captions x 4 images, 64 px, 2 px padding
    # a second call reuses the data and both trained runs
    assert main(["demo", "--out", str(out), "--n", "120"]) == 0
    again = capsys.readouterr().out
    assert "using SynthFlowers" in again and "clip: using the trained run" in again and "lafite: using the trained run" in again


def test_data_synth_refuses_to_overwrite(tmp_path, capsys):
    d = tmp_path / "sf"
    assert main(["data", "synth", "--out", str(d), "--n", "20", "--size", "32", "--quiet"]) == 0
    before = sorted(p.name for p in (d / "images").iterdir())
    assert main(["data", "synth", "--out", str(d), "--n", "10", "--size", "32", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in (d / "images").iterdir()) == before
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--n", "10", "--size", "20", "--quiet"]) == 2
    assert "size" in capsys.readouterr().err
