"""Dataset formats: StackGAN / AttnGAN birds and flowers, COCO json, the emoji npm package,
the safe unpickler and `t2igan data check` on each. Every fixture is a tiny tree written
here in the exact on-disk layout of the original releases."""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.data.birds import detect_format, load_any, load_dataset, stackgan_crop
from t2igan.data.coco import load_coco
from t2igan.data.emoji import build_emoji_dataset
from t2igan.data.folder import load_folder
from t2igan.data.safe_pickle import load_pickle

BIRD_KEYS = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111",
             "002.Laysan_Albatross/Laysan_Albatross_0002_1027",
             "002.Laysan_Albatross/Laysan_Albatross_0003_1033"]
RED, GREEN = (200, 0, 0), (0, 200, 0)


def _dump(obj, path, protocol=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


# --- what Python 2 + numpy 1.x write (cPickle protocol 2): byte strings, not unicode --------------
def _py2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _py2_list_of_str(items: list[str]) -> bytes:
    return b"\x80\x02](" + b"".join(_py2_str(s.encode()) for s in items) + b"e."


def _py2_array(arr: np.ndarray) -> bytes:
    assert arr.dtype == np.float32 and arr.ndim == 3
    shape = b"".join(b"J" + struct.pack("<i", s) for s in arr.shape) + b"\x87"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(b"f4") + b"K\x00K\x01\x87R"
             b"(K\x03" + _py2_str(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
            b"(K\x01" + shape + dtype + b"\x89" + _py2_str(arr.tobytes()) + b"tb.")


def _jpeg(path, size=(80, 60), box=None):
    """Red image, green inside ``box`` (x1, y1, x2, y2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, RED)
    if box is not None:
        im.paste(GREEN, box)
    im.save(path, quality=95, subsampling=0)


def _birds(root, py2=False):
    """StackGAN birds: CUB_200_2011/, {train,test}/ pickles, text_c10/ captions."""
    cub = root / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    (cub / "images.txt").write_text("".join(f"{i} {k}.jpg\n" for i, k in enumerate(BIRD_KEYS, 1)))
    # x y w h as floats, like the CUB release; box 1: crop = (3, 6, 47, 50)
    (cub / "bounding_boxes.txt").write_text("1 10.0 20.0 30.0 16.0\n2 0.0 0.0 40.0 40.0\n3 5.0 5.0 20.0 20.0\n")
    for k in BIRD_KEYS:
        _jpeg(cub / "images" / f"{k}.jpg", box=(3, 6, 47, 50))
        t = root / "text_c10" / f"{k}.txt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("".join(f"this bird {k[-4:]} has a white belly, caption {j}\n" for j in range(10)))
    for split, keys, cls in (("train", BIRD_KEYS[:2], [1, 2]), ("test", BIRD_KEYS[2:], [2])):
        emb = np.arange(len(keys) * 10 * 8, dtype=np.float32).reshape(len(keys), 10, 8)
        d = root / split
        d.mkdir()
        if py2:
            (d / "filenames.pickle").write_bytes(_py2_list_of_str(keys))
            (d / "char-CNN-RNN-embeddings.pickle").write_bytes(_py2_array(emb))
        else:
            _dump(keys, d / "filenames.pickle")
            _dump(emb, d / "char-CNN-RNN-embeddings.pickle")
        _dump(cls, d / "class_info.pickle")
    return root


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------- safe pickle
def test_safe_pickle_roundtrip_and_py2(tmp_path):
    obj = [["a", "b"], {1: "x"}, np.ones((2, 3), np.float32), b"raw", 3.5, (1, 2), {"s"}, np.float32(2)]
    for proto in (2, 4, 5):
        _dump(obj, tmp_path / "p.pickle", proto)
        got = load_pickle(tmp_path / "p.pickle")
        assert got[0] == ["a", "b"] and got[1] == {1: "x"} and got[3] == b"raw" and got[6] == {"s"}
        assert np.array_equal(got[2], obj[2]) and got[7] == 2
    (tmp_path / "py2.pickle").write_bytes(_py2_list_of_str(["jpg/image_00001", "x"]))
    assert load_pickle(tmp_path / "py2.pickle") == ["jpg/image_00001", "x"]
    arr = np.random.default_rng(0).normal(size=(2, 10, 4)).astype(np.float32)
    (tmp_path / "py2a.pickle").write_bytes(_py2_array(arr))
    assert np.array_equal(load_pickle(tmp_path / "py2a.pickle"), arr)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    _dump(Evil(marker), tmp_path / "evil.pickle")
    with pytest.raises(T2IError, match=r"refusing to load .*evil.pickle: it references (posix|os|nt)\.system"):
        load_pickle(tmp_path / "evil.pickle")
    assert not marker.exists()
    (tmp_path / "bad.pickle").write_bytes(b"\x80\x02garbage")
    with pytest.raises(T2IError, match="bad.pickle is not a readable pickle"):
        load_pickle(tmp_path / "bad.pickle")
    with pytest.raises(T2IError, match="pickle file missing"):
        load_pickle(tmp_path / "nope.pickle")


# ----------------------------------------------------------------------------- StackGAN / AttnGAN
@pytest.mark.parametrize("py2", [False, True])
def test_stackgan_birds(tmp_path, py2):
    root = _birds(tmp_path / "birds", py2=py2)
    assert detect_format(root) == "stackgan"
    d = load_dataset(root, "train")
    assert d.ids == BIRD_KEYS[:2] and len(d.captions[1]) == 10
    assert d.captions[0][3] == "this bird 6111 has a white belly, caption 3"
    assert d.meta["embeddings"].shape == (2, 10, 8) and d.meta["embeddings"].dtype == np.float32
    assert d.meta["class_ids"].tolist() == [1, 2] and d.meta["dataset"] == "birds"
    assert d.meta["bboxes"][0] == [10, 20, 30, 16]
    assert stackgan_crop([10, 20, 30, 16], 80, 60) == (3, 6, 47, 50)  # 1.5 x 30 = 44 px square
    img = np.asarray(d.images_uint8(16, cache=False), dtype=np.int16)
    assert img.shape == (2, 16, 16, 3)
    assert np.abs(img[0, 1:-1, 1:-1] - np.array(GREEN)).max() < 40  # only the green box survived the crop
    t = load_any(root, "test")
    assert len(t) == 1 and t.meta["class_ids"].tolist() == [2]
    with pytest.raises(T2IError, match="split 'val' not found"):
        load_dataset(root, "val")


def test_stackgan_flowers(tmp_path):
    root = tmp_path / "flowers"
    keys = ["jpg/image_00001", "jpg/image_00002"]
    for k, c in zip(keys, (1, 77)):
        _jpeg(root / f"{k}.jpg", size=(50, 40))
        t = root / "text_c10" / f"class_{c:05d}" / f"{k[4:]}.txt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("this flower has pink petals\nthe petals are long\n")
    _dump(keys, root / "train" / "filenames.pickle")
    _dump([1, 77], root / "train" / "class_info.pickle")
    d = load_any(root, "train")
    assert d.meta["dataset"] == "flowers" and d.meta["embeddings"] is None
    assert d.image_paths[1] == root / "jpg" / "image_00002.jpg"
    assert d.captions[1] == ["this flower has pink petals", "the petals are long"]
    assert d.images_uint8(8, cache=False).shape == (2, 8, 8, 3)


def test_attngan_coco_layout(tmp_path):
    root = tmp_path / "coco"
    keys = ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    for k in keys:
        _jpeg(root / "images" / f"{k}.jpg", size=(30, 20))
    _dump(keys, root / "train" / "filenames.pickle")
    _dump(keys[:1], root / "test" / "filenames.pickle")
    ixtoword = {0: "<end>", 1: "a", 2: "giraffe", 3: "bus", 4: "red"}
    wordtoix = {w: i for i, w in ixtoword.items()}
    train = [[1, 2], [2], [1, 4, 3], [3]]  # 2 captions per image
    _dump([train, [[1, 3], [3]], ixtoword, wordtoix], root / "captions_DAMSM.pickle")
    assert detect_format(root) == "attngan"
    d = load_any(root, "train")
    assert d.captions == [["a giraffe", "giraffe"], ["a red bus", "bus"]]
    assert d.meta["caption_tokens"][1] == [[1, 4, 3], [3]] and d.meta["dataset"] == "coco"
    _dump([train[:3], [[1]], ixtoword, wordtoix], root / "captions_DAMSM.pickle")
    with pytest.raises(T2IError, match="3 train captions for 2 filenames"):
        load_any(root, "train")


def test_bird_errors(tmp_path, capsys):
    root = _birds(tmp_path / "birds")
    _dump(np.zeros((3, 10, 8), np.float32), root / "train" / "char-CNN-RNN-embeddings.pickle")
    with pytest.raises(T2IError, match=r"embeddings have shape \[3, 10, 8\], expected \[2, captions, dim\]"):
        load_dataset(root, "train")
    assert load_dataset(root, "train", embeddings=False).meta["embeddings"] is None
    _dump(np.zeros((2, 10, 8), np.float32), root / "train" / "char-CNN-RNN-embeddings.pickle")
    (root / "CUB_200_2011" / "images" / f"{BIRD_KEYS[1]}.jpg").unlink()
    with pytest.raises(T2IError, match="image file missing: .*Laysan_Albatross_0002_1027.jpg"):
        load_dataset(root, "train")
    _jpeg(root / "CUB_200_2011" / "images" / f"{BIRD_KEYS[1]}.jpg")
    (root / "text_c10" / f"{BIRD_KEYS[0]}.txt").write_bytes(b"a bird with a caf\xe9 colour\n")
    with pytest.raises(T2IError, match=r"Black_Footed_Albatross_0001_796111.txt is not UTF-8 \(byte 17\)"):
        load_dataset(root, "train")
    # data check: one line per problem; the malicious pickle is refused and never runs
    marker = tmp_path / "pwned"
    _dump(Evil(marker), root / "test" / "class_info.pickle")
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert "problem: train: caption file" in err and "is not UTF-8" in err
    assert "problem: test: refusing to load" in err and "class_info.pickle" in err
    assert "2 problem(s) found" in err and not marker.exists()


# ----------------------------------------------------------------------------- COCO
def _coco(root, year="2014"):
    (root / "annotations").mkdir(parents=True)
    for part, ids in (("train", [9, 25]), ("val", [42])):
        pre = f"COCO_{part}{year}_" if year == "2014" else ""
        images = [{"id": i, "file_name": f"{pre}{i:012d}.jpg", "width": 30, "height": 20} for i in ids]
        anns = [{"image_id": i, "id": 100 * i + j, "caption": f"A photo  of thing {i}, take {j}.\n"}
                for i in ids for j in (2, 1)]
        (root / "annotations" / f"captions_{part}{year}.json").write_text(json.dumps({"images": images, "annotations": anns}))
        for im in images:
            _jpeg(root / f"{part}{year}" / im["file_name"], size=(30, 20))
    return root


def test_coco(tmp_path, capsys):
    root = _coco(tmp_path / "coco")
    assert detect_format(root) == "coco"
    d = load_coco(root, "train")
    assert d.ids == ["9", "25"] and d.captions[0] == ["A photo of thing 9, take 1.", "A photo of thing 9, take 2."]
    assert d.image_paths[1].name == "COCO_train2014_000000000025.jpg"
    t = load_any(root, "test")
    assert t.ids == ["42"] and t.meta["year"] == 2014
    r17 = _coco(tmp_path / "c17", "2017")
    assert load_coco(r17, "val").image_paths[0] == r17 / "val2017" / "000000000042.jpg"
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "coco layout" in out and "train: 2 images, 4 captions" in out and "val: 1 images" in out
    (root / "train2014" / "COCO_train2014_000000000025.jpg").unlink()
    with pytest.raises(T2IError, match="image file missing: .*COCO_train2014_000000000025.jpg"):
        load_coco(root, "train")
    (root / "annotations" / "captions_val2014.json").write_text('{"images": [')
    with pytest.raises(T2IError, match="captions_val2014.json: not valid JSON"):
        load_coco(root, "val")


# ----------------------------------------------------------------------------- emoji
def _png(color, alpha=255) -> bytes:
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    im.paste((*color, alpha), (16, 16, 48, 48))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _fake_emoji_tgz(path, symlink=False, extra=0):
    """An emoji-datasource-google tarball in the npm layout: 3 emoji (+ ``extra`` more in 2 categories)."""
    entries = [
        {"name": "RED APPLE", "unified": "1F34E", "image": "1f34e.png", "short_names": ["apple"],
         "category": "Food & Drink", "subcategory": "food-fruit", "has_img_google": True},
        {"name": "THUMBS UP SIGN", "unified": "1F44D", "image": "1f44d.png", "short_names": ["+1", "thumbsup"],
         "category": "People & Body", "subcategory": "hand-fingers-closed", "has_img_google": True,
         "skin_variations": {"1F3FD": {"unified": "1F44D-1F3FD", "image": "1f44d-1f3fd.png", "has_img_google": True}}},
        {"name": "NO IMAGE", "unified": "1F000", "image": "1f000.png", "short_names": [],
         "category": "Symbols", "subcategory": "x", "has_img_google": False},
    ]
    members = {
        "package/package.json": json.dumps({"name": "emoji-datasource-google", "version": "16.0.0"}).encode(),
        "package/emoji.json": json.dumps(entries).encode(),
        "package/img/google/64/1f34e.png": _png((255, 0, 0)),
        "package/img/google/64/1f44d.png": _png((255, 200, 0), alpha=128),
        "package/img/google/64/1f44d-1f3fd.png": _png((150, 100, 50)),
        "package/img/google/32/1f34e.png": _png((0, 0, 255)),
        "../escape.txt": b"outside",
        "package/img/google/64/../../../../escape.png": _png((0, 0, 0)),
    }
    for i in range(extra):
        code = f"{0x1F900 + i:X}"
        entries.append({"name": f"TEST ANIMAL {i}", "unified": code, "image": f"{code.lower()}.png",
                        "short_names": [f"animal_{i}"], "category": ("Animals & Nature", "Objects")[i % 2],
                        "subcategory": ("animal-mammal", "animal-bird", "tool")[i % 3], "has_img_google": True})
        members[f"package/img/google/64/{code.lower()}.png"] = _png(((37 * i) % 256, (91 * i) % 256, (53 * i) % 256),
                                                                    alpha=255 - (i % 4) * 40)
    members["package/emoji.json"] = json.dumps(entries).encode()
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            link = tarfile.TarInfo("package/img/google/64/1f600.png")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(link)
    return path


def test_emoji_package(tmp_path, capsys):
    tgz = _fake_emoji_tgz(tmp_path / "emoji-datasource-google-16.0.0.tgz")
    out = tmp_path / "work" / "emoji"
    r = build_emoji_dataset(tgz, out)
    assert r["n"] == 3 and r["skipped"] == 1 and r["name"] == "emoji-google"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["1f34e.png", "1f44d-1f3fd.png", "1f44d.png"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "work" / "escape.png").exists()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["emoji"]  # no temp folders left
    d = load_folder(out, "all")
    caps = dict(zip(d.ids, d.captions))
    assert caps["1f34e"] == ["red apple", "apple", "red apple emoji"]
    assert caps["1f44d-1f3fd"][0] == "thumbs up sign: medium skin tone" and "+1" not in caps["1f44d"]
    assert d.attributes[d.ids.index("1f34e")] == {"category": "Food & Drink", "subcategory": "food-fruit"}
    assert d.named[0] == [[] for _ in d.captions[0]]
    with Image.open(out / "images" / "1f44d.png") as im:
        assert im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
        assert np.abs(np.subtract(im.getpixel((32, 32)), (255, 228, 128))).max() <= 1  # 50 % yellow on white
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "t2igan-folder" and meta["name"] == "emoji-google"
    split_ids = {s: (out / "splits" / f"{s}.txt").read_text().split() for s in ("train", "test")}
    assert sorted(split_ids["train"] + split_ids["test"]) == sorted(d.ids)
    assert ("1f44d" in split_ids["train"]) == ("1f44d-1f3fd" in split_ids["train"])  # tones follow the emoji
    with pytest.raises(T2IError, match="already exists and is not empty"):
        build_emoji_dataset(tgz, out)
    assert main(["data", "emoji", "--from", str(tgz), "--out", str(out), "--overwrite"]) == 0
    assert "3 images, 9 captions" in capsys.readouterr().out
    assert main(["data", "check", str(out)]) == 0
    (tmp_path / "broken.tgz").write_bytes(b"not a tarball")
    with pytest.raises(T2IError, match="not a readable .tgz package"):
        build_emoji_dataset(tmp_path / "broken.tgz", tmp_path / "e2")
    assert not (tmp_path / "e2").exists()
    bad = _fake_emoji_tgz(tmp_path / "emoji-datasource-google-1.0.0.tgz", symlink=True)
    with pytest.raises(T2IError, match="member package/img/google/64/1f600.png is not a regular file"):
        build_emoji_dataset(bad, tmp_path / "e3")
    assert not (tmp_path / "e3").exists()


def test_check_detects_and_reports(tmp_path, capsys):
    root = _birds(tmp_path / "birds", py2=True)
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "stackgan layout" in out and "train: 2 images, 20 captions, embeddings [2, 10, 8], 2 classes, bounding boxes" in out
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 2
    assert "no known dataset layout" in capsys.readouterr().err
