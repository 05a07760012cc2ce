"""Hostile and broken dataset input (hardening issue, parts 4 and 5).

Every case is written in the real on-disk format (captions.jsonl, <image>.txt folders,
t2igan-folder, StackGAN birds, COCO json, the .cache/*.npy image cache), loaded the way
training loads it (``load_any`` + ``images_uint8``) and checked for one T2IError line naming
the file and field/line, raised before anything is written; ``t2igan data check`` must report
the same problem (it runs the same loaders).
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from test_formats import BIRD_KEYS, _birds, _coco, _dump, _jpeg

from t2igan import T2IError
from t2igan.cli import main
from t2igan.data.birds import load_any
from t2igan.data.folder import load_folder
from t2igan.data.text import MAX_CAPTION_CHARS, Vocabulary


# ----------------------------------------------------------------------------- helpers
def _png(path, size=(12, 10), color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _jsonl(root, records, raw: bytes | None = None):
    root.mkdir(parents=True, exist_ok=True)
    data = raw if raw is not None else "".join(json.dumps(r) + "\n" for r in records).encode()
    (root / "captions.jsonl").write_bytes(data)
    return root


def _plain(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _png(root / f"im{i}.png", (40, 30), (i * 60, 10, 10))
        (root / f"im{i}.txt").write_text(f"a flower number {i}\nanother caption\n")
    return root


def _train_load(root, split="train"):
    """What `t2igan train` does with a dataset folder before the first step."""
    d = load_any(root, split)
    d.images_uint8(8)
    return d


def _refused(root, pattern, capsys, split="train"):
    """Training's load refuses ``root`` with one line matching ``pattern``, writes nothing, and
    `t2igan data check` reports the same line."""
    with pytest.raises(T2IError, match=pattern) as ei:
        _train_load(root, split)
    msg = str(ei.value)
    assert "\n" not in msg
    assert not (root / ".cache").exists(), "nothing may be written before the error"
    capsys.readouterr()
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert msg in err, err
    assert not (root / ".cache").exists()
    return msg


@pytest.fixture
def outside(tmp_path):
    """A perfectly good image outside the dataset folder."""
    return _png(tmp_path / "elsewhere" / "secret.png", (16, 16), (0, 0, 255))


# ----------------------------------------------------------------------------- 4: paths escape
def test_jsonl_dotdot_path_refused(tmp_path, outside, capsys):
    root = _jsonl(tmp_path / "ds", [{"image": "../elsewhere/secret.png", "caption": "a blue square"}])
    _refused(root, r"captions.jsonl:1: 'image' '../elsewhere/secret.png' is absolute or goes up with '..'", capsys)


@pytest.mark.parametrize("target", ["/etc/hostname", "OUTSIDE"])
def test_jsonl_absolute_path_refused(tmp_path, outside, capsys, target):
    target = str(outside) if target == "OUTSIDE" else target  # a real image other datasets would train on
    root = _jsonl(tmp_path / "ds", [{"image": target, "caption": "the host name"}])
    _refused(root, rf"captions.jsonl:1: 'image' '{re.escape(target)}' is absolute", capsys)


def test_jsonl_symlink_out_refused(tmp_path, outside, capsys, monkeypatch):
    root = _jsonl(tmp_path / "ds", [{"image": "img/a.png", "caption": "a blue square"}])
    _png(root / "img" / "a.png")
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)  # a symlinked or relative root is fine
    assert len(load_any(tmp_path / "alias")) == 1
    monkeypatch.chdir(tmp_path)
    assert len(load_any("alias")) == 1
    (root / "img" / "a.png").rename(root / "img" / "b.png")
    (root / "img" / "a.png").symlink_to("b.png")  # a symlink that stays inside is fine
    assert len(load_any(root)) == 1
    (root / "img" / "a.png").unlink()
    (root / "img" / "a.png").symlink_to(outside)
    _refused(root, r"captions.jsonl:1: .*img/a.png resolves to .*elsewhere/secret.png, outside the dataset folder",
             capsys)


def test_symlinked_folder_out_refused(tmp_path, outside, capsys):
    """A symlinked directory counts too: the path is resolved, not just its last part."""
    root = _jsonl(tmp_path / "ds", [{"image": "img/secret.png", "caption": "a blue square"}])
    (root / "img").symlink_to(outside.parent, target_is_directory=True)
    _refused(root, r"img/secret.png resolves to .*outside the dataset folder", capsys)


def test_t2igan_folder_image_symlink_out_refused(tmp_path, outside, capsys):
    root = tmp_path / "ds"
    (root / "captions").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "dataset.json").write_text(json.dumps({"format": "t2igan-folder"}))
    for i in ("a", "b"):
        (root / "captions" / f"{i}.txt").write_text("a small square\n")
    _png(root / "images" / "a.png")
    (root / "images" / "b.png").symlink_to(outside)
    _refused(root, r"images/b.png resolves to .*secret.png, outside the dataset folder", capsys)


def test_plain_folder_caption_symlink_out_refused(tmp_path, capsys):
    root = _plain(tmp_path / "ds")
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is swordfish\n")
    (root / "im1.txt").unlink()
    (root / "im1.txt").symlink_to(secret)
    _refused(root, r"im1.txt resolves to .*secret.txt, outside the dataset folder", capsys)


def test_birds_image_symlink_out_refused(tmp_path, outside, capsys):
    root = _birds(tmp_path / "birds")
    img = root / "CUB_200_2011" / "images" / f"{BIRD_KEYS[1]}.jpg"
    img.unlink()
    img.symlink_to(outside)
    _refused(root, r"Laysan_Albatross_0002_1027.jpg resolves to .*secret.png, outside the dataset folder", capsys)


def test_coco_image_folder_symlink_out_refused(tmp_path, capsys):
    root = _coco(tmp_path / "coco")
    shutil.move(root / "train2014", tmp_path / "train2014")
    (root / "train2014").symlink_to(tmp_path / "train2014", target_is_directory=True)
    _refused(root, r"captions_train2014.json: images\[0\]: .*COCO_train2014_000000000009.jpg resolves to "
                   r".*outside the dataset folder", capsys)


def test_allow_outside_root_opt_in(tmp_path, outside, capsys):
    """dataset.json "allow_outside_root": true admits absolute, ../ and symlinked-out paths."""
    root = _jsonl(tmp_path / "ds", [{"image": str(outside), "caption": "a blue square"},
                                    {"image": "../elsewhere/secret.png", "caption": "the same square"},
                                    {"image": "link.png", "caption": "it again"}])
    (root / "link.png").symlink_to(outside)
    with pytest.raises(T2IError, match="is absolute"):
        load_any(root)
    (root / "dataset.json").write_text(json.dumps({"allow_outside_root": True}))
    d = _train_load(root)
    assert len(d) == 3 and np.asarray(d.images_uint8(8))[:, 4, 4].tolist() == [[0, 0, 255]] * 3
    assert main(["data", "check", str(root)]) == 0
    (root / "dataset.json").write_text(json.dumps({"format": "jsonl", "allow_outside_root": True}))
    assert len(load_any(root)) == 3
    # a plain folder: a caption file symlinked to another disk
    plain = _plain(tmp_path / "plain")
    shutil.move(plain / "im1.txt", tmp_path / "im1.txt")
    (plain / "im1.txt").symlink_to(tmp_path / "im1.txt")
    with pytest.raises(T2IError, match="outside the dataset folder"):
        load_any(plain)
    (plain / "dataset.json").write_text(json.dumps({"allow_outside_root": True}))
    assert load_any(plain).captions[1] == ["a flower number 1", "another caption"]
    # the StackGAN layout reads the same setting from the same file
    birds = _birds(tmp_path / "birds")
    img = birds / "CUB_200_2011" / "images" / f"{BIRD_KEYS[1]}.jpg"
    shutil.move(img, tmp_path / "bird.jpg")
    img.symlink_to(tmp_path / "bird.jpg")
    with pytest.raises(T2IError, match="outside the dataset folder"):
        load_any(birds)
    (birds / "dataset.json").write_text(json.dumps({"allow_outside_root": True}))
    assert len(_train_load(birds)) == 2
    (birds / "dataset.json").write_text(json.dumps({"allow_outside_root": "yes"}))
    with pytest.raises(T2IError, match=r"dataset.json: 'allow_outside_root' must be true or false, got 'yes'"):
        load_any(birds)


# ----------------------------------------------------------------------------- 5: broken input
def test_jsonl_not_utf8(tmp_path, capsys):
    raw = (json.dumps({"image": "a.png", "caption": "a red square"}) + "\n").encode() + \
        b'{"image": "a.png", "caption": "caf\xe9 au lait"}\n'
    root = _jsonl(tmp_path / "ds", None, raw)
    _png(root / "a.png")
    _refused(root, r"captions.jsonl:2: not UTF-8 \(byte 34 of the line\)", capsys)


def test_jsonl_image_not_a_string(tmp_path, capsys):
    root = _jsonl(tmp_path / "ds", [{"image": 123, "caption": "a red square"}])
    _refused(root, r"captions.jsonl:1: 'image' must be a non-empty path string, got 123", capsys)


@pytest.mark.parametrize("rec, pattern", [
    ({"image": "a.png", "caption": "   "}, r"captions.jsonl:1: empty caption"),
    ({"image": "a.png", "caption": 5}, r"captions.jsonl:1: caption must be a string, got 5"),
    ({"image": "a.png", "captions": ["fine", None]}, r"captions.jsonl:1: caption must be a string, got None"),
    ({"image": "a.png", "caption": "!!! ???"}, r"captions.jsonl:1: caption '!!! \?\?\?' has no word"),
])
def test_jsonl_bad_captions(tmp_path, capsys, rec, pattern):
    root = _jsonl(tmp_path / "ds", [rec])
    _png(root / "a.png")
    _refused(root, pattern, capsys)


def test_jsonl_bad_record_in_another_split(tmp_path, capsys):
    """A broken test-split record is found by `data check` and by loading any split."""
    root = _jsonl(tmp_path / "ds", [{"image": "a.png", "caption": "a red square"},
                                    {"image": 7, "caption": "a test image", "split": "test"}])
    _png(root / "a.png")
    _refused(root, r"captions.jsonl:2: 'image' must be a non-empty path string, got 7", capsys)


def test_caption_file_symlink_loop(tmp_path, capsys):
    root = _plain(tmp_path / "ds")
    (root / "im1.txt").unlink()
    (root / "im1.txt").symlink_to("im1.txt")
    _refused(root, r"im1.txt: symlink loop", capsys)


def test_caption_file_symlink_loop_t2igan_folder(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "captions").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"format": "t2igan-folder"}))
    for i in ("a", "b"):
        _png(root / "images" / f"{i}.png")
    (root / "captions" / "a.txt").symlink_to("b.txt")
    (root / "captions" / "b.txt").symlink_to("a.txt")
    _refused(root, r"captions/a.txt: symlink loop", capsys)


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory):
    """A real 20000 x 20000 PNG (48 KB on disk, 400 megapixels decoded)."""
    p = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20000, 20000)).save(p)
    return p


def test_decompression_bomb(tmp_path, bomb_png, capsys):
    root = _plain(tmp_path / "ds")
    shutil.copy(bomb_png, root / "im1.png")
    msg = _refused(root, r"image .*im1.png has 400,000,000 pixels, over the limit of 89,478,485 "
                         r"\(PIL.Image.MAX_IMAGE_PIXELS", capsys)
    assert "decompression bomb" in msg
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # the limit is read, never changed


def test_image_over_limit_below_pil_error(tmp_path, monkeypatch, capsys):
    """Between the limit and twice it PIL only warns; t2igan refuses it all the same."""
    root = _plain(tmp_path / "ds")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # im*.png are 40x30 = 1200 pixels
    with pytest.raises(T2IError, match=r"im0.png has 40x30 = 1,200 pixels, over the limit of 1,000"):
        _train_load(root)
    assert not (root / ".cache").exists()
    assert main(["data", "check", str(root)]) == 2
    assert "im0.png has 40x30 = 1,200 pixels" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "other_array", "no_sidecar", "garbage_sidecar"])
def test_corrupt_image_cache_is_rebuilt(tmp_path, capsys, damage):
    from t2igan.data.folder import check_image_caches, verify_cache

    root = _plain(tmp_path / "ds")
    d = load_any(root)
    good = np.array(d.images_uint8(8))
    (cache,) = (root / ".cache").glob("*.npy")
    side = cache.with_name(cache.name + ".json")
    assert verify_cache(cache, good.shape)[1] is None and check_image_caches(root) == []
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:200])
        why = r"is 200 bytes, expected [\d,]+ \(truncated or overwritten\)"
    elif damage == "flip_byte":
        b = bytearray(cache.read_bytes())
        b[-1] ^= 0xFF
        cache.write_bytes(bytes(b))
        why = r"does not match its SHA-256"
    elif damage == "other_array":  # a valid .npy of the same byte size but another shape
        np.save(cache, np.zeros((good.shape[0] * 8, 2, 2, 3), np.uint8))
        json_info = json.loads(side.read_text())
        json_info["bytes"] = cache.stat().st_size
        side.write_text(json.dumps(json_info))
        why = r"holds uint8 \[24, 2, 2, 3\], expected uint8 \[3, 8, 8, 3\]"
    elif damage == "no_sidecar":
        side.unlink()
        why = r"has no checksum file"
    else:
        side.write_text("{not json")
        why = r"has an unreadable checksum file"
    capsys.readouterr()
    # data check reports it (a note: training recovers) and changes nothing
    before = cache.read_bytes()
    assert main(["data", "check", str(root)]) == 0
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if ln.startswith("note: image cache")]) == 1
    assert re.search(why, err), err
    assert cache.read_bytes() == before
    # training's load rebuilds it with a one-line note, and later runs are not blocked
    again = load_any(root).images_uint8(8)
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: image cache") and notes[0].endswith("rebuilding it")
    assert re.search(why, notes[0])
    assert np.array_equal(np.asarray(again), good)
    assert verify_cache(cache, good.shape)[1] is None and check_image_caches(root) == []
    assert np.array_equal(np.asarray(load_any(root).images_uint8(8)), good)
    assert capsys.readouterr().err == ""


def test_huge_caption_named_with_file_and_line(tmp_path, capsys):
    root = _plain(tmp_path / "ds")
    (root / "im1.txt").write_text("a short caption\n" + "petal " * 2_000_000 + "\n")  # 12 MB line
    _refused(root, r"im1.txt:2: caption is 11,999,999 characters long; the limit is 2,000", capsys)
    # jsonl too
    root2 = _jsonl(tmp_path / "ds2", [{"image": "a.png", "caption": "x" * 10_000_000}])
    _png(root2 / "a.png")
    _refused(root2, r"captions.jsonl:1: caption is 10,000,000 characters long", capsys)


def test_caption_limit_is_the_training_limit(tmp_path):
    """The loader accepts exactly what training's tokenizer accepts: the same limit, both sides."""
    root = _plain(tmp_path / "ds")
    at_limit = ("ab " * MAX_CAPTION_CHARS)[:MAX_CAPTION_CHARS]  # ends in "ab"
    assert len(at_limit) == MAX_CAPTION_CHARS
    (root / "im1.txt").write_text(at_limit + "\n")
    d = load_folder(root)
    Vocabulary.build(c for caps in d.captions for c in caps).batch(d.captions[1], 18)  # training accepts it
    (root / "im1.txt").write_text(at_limit + "y\n")
    with pytest.raises(T2IError, match=r"im1.txt:1: caption is 2,001 characters long"):
        load_folder(root)
    with pytest.raises(T2IError, match="characters long"):
        Vocabulary.build(["ab"]).batch([at_limit + "y"], 18)


def test_caption_file_not_utf8_names_line(tmp_path, capsys):
    root = _plain(tmp_path / "ds")
    (root / "im1.txt").write_bytes(b"a fine caption\nthe caf\xe9 flower\n")
    _refused(root, r"caption file .*im1.txt is not UTF-8 \(byte 22\) on line 2", capsys)


def test_birds_caption_symlink_loop_and_long_caption(tmp_path, capsys):
    root = _birds(tmp_path / "birds")
    t = root / "text_c10" / f"{BIRD_KEYS[0]}.txt"
    t.unlink()
    t.symlink_to(t.name)
    _refused(root, r"Black_Footed_Albatross_0001_796111.txt: symlink loop", capsys)
    t.unlink()
    t.write_text("a bird\n" + "wing " * 1000 + "\n")
    _refused(root, r"Black_Footed_Albatross_0001_796111.txt:2: caption is 4,999 characters long", capsys)


def test_attngan_pickle_empty_caption(tmp_path, capsys):
    """An AttnGAN captions.pickle caption with no token decodes to '' (training refused it unnamed)."""
    root = tmp_path / "coco"
    keys = ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    for k in keys:
        _jpeg(root / "images" / f"{k}.jpg", size=(30, 20))
    _dump(keys, root / "train" / "filenames.pickle")
    ixtoword = {0: "<end>", 1: "a", 2: "giraffe", 3: "bus"}
    wordtoix = {w: i for i, w in ixtoword.items()}
    _dump([[[1, 2], [2], [], [3]], [], ixtoword, wordtoix], root / "captions_DAMSM.pickle")
    _refused(root, r"captions_DAMSM.pickle: train caption 2 \(of 'COCO_train2014_000000000025'\): empty caption", capsys)


def test_coco_long_caption(tmp_path, capsys):
    root = _coco(tmp_path / "coco")
    ann = root / "annotations" / "captions_train2014.json"
    data = json.loads(ann.read_text())
    data["annotations"][3]["caption"] = "giraffe " * 500
    ann.write_text(json.dumps(data))
    _refused(root, r"captions_train2014.json: annotations\[3\]: caption is 3,999 characters long", capsys)


def test_data_check_uses_training_decoder(tmp_path, monkeypatch, capsys):
    """`data check` decodes through CaptionedImages.images_uint8, the function training uses."""
    from t2igan.data import folder

    root = _plain(tmp_path / "ds")
    calls = []
    real = folder.CaptionedImages.images_uint8
    monkeypatch.setattr(folder.CaptionedImages, "images_uint8",
                        lambda self, *a, **k: calls.append(self.split) or real(self, *a, **k))
    assert main(["data", "check", str(root)]) == 0
    assert calls == ["train"]
