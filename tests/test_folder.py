import json

import numpy as np
import pytest
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.data.folder import load_folder


def _plain(tmp_path, n=3):
    for i in range(n):
        Image.new("RGB", (40, 30), (i * 60, 10, 10)).save(tmp_path / f"im{i}.png")
        (tmp_path / f"im{i}.txt").write_text(f"a flower number {i}\nanother caption\n")
    return tmp_path


def test_synth_folder(tiny_data):
    d = load_folder(tiny_data, "train")
    assert len(d) > 0 and len(d.captions[0]) == 10
    assert set(d.attributes[0]) == set(d.attribute_values)
    assert len(d.named[0]) == 10
    a = d.images_uint8(16)
    b = d.images_uint8(16)  # second call: from the cache
    assert a.shape == (len(d), 16, 16, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert list((tiny_data / ".cache").glob("train_16_*.npy"))
    with pytest.raises(T2IError, match="split 'val' not found"):
        load_folder(tiny_data, "val")


def test_plain_folder_and_crop(tmp_path):
    d = load_folder(_plain(tmp_path), "train")
    assert d.ids == ["im0", "im1", "im2"] and d.captions[1] == ["a flower number 1", "another caption"]
    assert d.images_uint8(8, cache=False).shape == (3, 8, 8, 3)


def test_jsonl(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    recs = [{"image": "a.png", "caption": "a black square", "split": "train"},
            {"image": "a.png", "captions": ["also black"], "split": "test"}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    assert load_folder(tmp_path, "test").captions == [["also black"]]
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "missing.png", "caption": "x"}))
    with pytest.raises(T2IError, match="image file missing"):
        load_folder(tmp_path, "train")


def test_caption_without_image(tmp_path):
    _plain(tmp_path)
    (tmp_path / "orphan.txt").write_text("a caption with no picture\n")
    with pytest.raises(T2IError, match=r"orphan.txt: no image 'orphan.\*' beside it"):
        load_folder(tmp_path)


def test_empty_caption_file(tmp_path):
    _plain(tmp_path)
    (tmp_path / "im1.txt").write_text("\n  \n")
    with pytest.raises(T2IError, match="im1.txt has no caption"):
        load_folder(tmp_path)


def test_non_utf8_caption_file(tmp_path):
    _plain(tmp_path)
    (tmp_path / "im1.txt").write_bytes(b"caf\xe9 flower\n")
    with pytest.raises(T2IError, match="not UTF-8"):
        load_folder(tmp_path)


def test_unreadable_image(tmp_path):
    _plain(tmp_path)
    (tmp_path / "im2.png").write_bytes(b"not a png at all")
    d = load_folder(tmp_path)
    with pytest.raises(T2IError, match="cannot read image .*im2.png"):
        d.images_uint8(8)


def test_data_check_cli(tmp_path, capsys):
    _plain(tmp_path)
    assert main(["data", "check", str(tmp_path)]) == 0
    (tmp_path / "im2.png").write_bytes(b"garbage")
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "cannot read image" in capsys.readouterr().err
