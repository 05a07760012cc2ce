"""Face data loaders (CelebA, Multi-Modal-CelebA-HQ, Face2Text) on tiny files in the released layouts."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2igan import T2IError
from t2igan.cli import main
from t2igan.data.birds import detect_format, list_splits, load_any
from t2igan.data.faces import (
    ATTRIBUTE_PHRASES,
    CELEBA_ATTRIBUTES,
    load_celeba,
    load_celeba_hq,
    load_face2text,
    pseudo_captions,
)

NAMES = [f"{i:06d}.jpg" for i in range(1, 7)]
PARTS = [0, 0, 0, 1, 2, 2]


def _jpg(path: Path, seed: int, size=(22, 27)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=80)


def _attr_values(i: int) -> list[int]:
    rng = np.random.default_rng(100 + i)
    v = rng.choice([-1, 1], size=len(CELEBA_ATTRIBUTES)).tolist()
    v[CELEBA_ATTRIBUTES.index("Male")] = 1 if i % 2 else -1
    return v


def write_celeba(root: Path, bbox=True, landmarks=True) -> Path:
    for i, n in enumerate(NAMES):
        _jpg(root / "img_align_celeba" / n, i)
    rows = [f"{n} " + " ".join(f"{v:2d}" for v in _attr_values(i)) for i, n in enumerate(NAMES)]
    (root / "list_attr_celeba.txt").write_text(f"{len(NAMES)}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n"
                                               + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(NAMES, PARTS)))
    if bbox:
        (root / "list_bbox_celeba.txt").write_text(
            f"{len(NAMES)}\nimage_id x_1 y_1 width height\n"
            + "".join(f"{n}    95  71 226 313\n" for n in NAMES))
    if landmarks:
        (root / "list_landmarks_align_celeba.txt").write_text(
            f"{len(NAMES)}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
            "rightmouth_x rightmouth_y\n" + "".join(f"{n} 69 109 106 113 77 142 73 152 108 154\n" for n in NAMES))
    return root


def write_celeba_hq(root: Path, n=5, pickles=True) -> Path:
    for i in range(n):
        _jpg(root / "image" / "images" / f"{i}.jpg", i, (16, 16))
        (root / "text" / "celeba-caption").mkdir(parents=True, exist_ok=True)
        (root / "text" / "celeba-caption" / f"{i}.txt").write_text(
            "".join(f"the person {i} has caption {j}.\n" for j in range(10)))
    train, test = [str(i) for i in range(n - 2)], [str(i) for i in range(n - 2, n)]
    if pickles:
        for s, ids in (("train", train), ("test", test)):
            (root / s).mkdir()
            (root / s / "filenames.pickle").write_bytes(pickle.dumps(ids, protocol=2))
    else:
        (root / "train.txt").write_text("\n".join(train) + "\n")
        (root / "test.txt").write_text("\n".join(f"{i}.jpg" for i in test) + "\n")
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx         orig_idx  orig_file\n" + "".join(f"{i} {1000 + i} {1001 + i:06d}.jpg\n" for i in range(n)))
    return root


def write_face2text(root: Path) -> Path:
    for i, n in enumerate(NAMES[:4]):
        _jpg(root / "img_align_celeba" / n, i)
    recs = {
        "train": [("000001.jpg", "A young woman with long brown hair."), ("000002.jpg", "An old man, bald."),
                  ("000001.jpg", "  She has  a round face\nand a smile. ")],
        "dev": [("000003.jpg", "A man with a beard.")],
        "test": [("000004.jpg", "A woman wearing glasses.")],
    }
    for s, rs in recs.items():
        data = [{"response_id": str(k), "filename": f, "user_id": "7", "description": d} for k, (f, d) in enumerate(rs)]
        (root / f"clean_{s}_2.1.json").write_text(json.dumps(data, indent=2))
    return root


# ----------------------------------------------------------------------------- CelebA
def test_celeba_splits_attributes_and_extras(tmp_path):
    root = write_celeba(tmp_path / "celeba")
    assert detect_format(root) == "celeba"
    assert list_splits(root) == ["train", "val", "test"]
    tr, va, te = (load_any(root, s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (3, 1, 2)
    assert tr.ids == ["000001", "000002", "000003"] and te.ids == ["000005", "000006"]
    assert all(len(c) == 10 for c in tr.captions)
    assert tr.attributes[1] == {a: str(v) for a, v in zip(CELEBA_ATTRIBUTES, _attr_values(1))}
    assert tr.attribute_values["Smiling"] == ["-1", "1"] and len(tr.attribute_values) == 40
    from t2igan.eval.evaluator import attribute_targets  # what the attribute evaluator trains on

    t = attribute_targets(tr.attributes, tr.attribute_values, "celeba")
    assert t.shape == (3, 40) and t[1].tolist() == [(v + 1) // 2 for v in _attr_values(1)]
    assert tr.meta["bboxes"].shape == (3, 4) and tr.meta["bboxes"][0].tolist() == [95, 71, 226, 313]
    assert tr.meta["landmarks"].shape == (3, 10)
    arr = tr.images_uint8(8, cache=False)
    assert arr.shape == (3, 8, 8, 3) and arr.std() > 0
    small = load_celeba(root, "train", captions_per_image=3, max_images=2)
    assert len(small) == 2 and all(len(c) == 3 for c in small.captions)
    assert small.captions[0] == tr.captions[0][:3]  # the first k of n captions are the k captions


def test_celeba_captions_per_image_from_dataset_json(tmp_path):
    root = write_celeba(tmp_path / "celeba", bbox=False, landmarks=False)
    (root / "dataset.json").write_text('{"captions_per_image": 4}')
    d = load_any(root, "train")
    assert all(len(c) == 4 for c in d.captions) and "bboxes" not in d.meta
    assert detect_format(root) == "celeba"


def test_pseudo_captions_deterministic_and_name_only_positive_attributes(tmp_path):
    root = write_celeba(tmp_path / "celeba")
    d = load_celeba(root, "train")
    code = ("from t2igan.data.faces import load_celeba; import json, sys; "
            "print(json.dumps(load_celeba(sys.argv[1], 'train').captions))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == d.captions  # another process, another str hash seed: same captions
    templates_seen = set()
    for attrs, caps, named in zip(d.attributes, d.captions, d.named):
        assert len(named) == len(caps)
        noun = "man" if attrs["Male"] == "1" else "woman"
        for cap, nm in zip(caps, named):
            assert f" {noun} " in f" {cap} " and ("woman" not in cap if noun == "man" else " man " not in f" {cap} ")
            assert "Male" in nm and 2 <= len(nm) <= 5
            for a in nm:
                assert attrs[a] == "1" or a == "Male", (cap, a)
                if a != "Male":
                    w, c = ATTRIBUTE_PHRASES[a]
                    assert w in cap or c.split(" ", 1)[1] in cap
            for a, v in attrs.items():  # a negative attribute's phrase never appears
                if v == "-1" and a != "Male":
                    w, c = ATTRIBUTE_PHRASES[a]
                    assert w not in cap and f" {c.split(' ', 1)[1]}" not in cap, (cap, a)
            templates_seen.add(cap.split(noun)[0])
    assert len(templates_seen) >= 3
    assert len({c for caps in d.captions for c in caps}) > 15  # captions differ between images and indices


def test_pseudo_caption_examples():
    caps, named = pseudo_captions("x.jpg", {"Male": -1, "Blond_Hair": 1, "Smiling": 1, "Goatee": -1}, 30)
    assert all(set(n) <= {"Male", "Blond_Hair", "Smiling"} for n in named)
    assert "the woman has blond hair and is smiling" in caps
    caps, _ = pseudo_captions("z.jpg", {"Male": 1, "Goatee": 1, "Eyeglasses": 1, "Bangs": 1, "Young": 1}, 60)
    assert any(c.startswith("a man with ") and ", " in c and " and " in c for c in caps)  # "a man with A, B and C"
    assert any("has bangs and a goatee" in c for c in caps)  # clauses grouped by verb
    assert not any("has bangs, has" in c or "has bangs and has" in c for c in caps)
    caps, named = pseudo_captions("y.jpg", {"Male": 1, "Smiling": -1}, 2)
    assert caps == ["a photo of the face of a man"] * 2 and named == [["Male"], ["Male"]]
    assert pseudo_captions("x.jpg", {"Eyeglasses": 1}, 3)[0][0].count("person") == 1
    assert len(ATTRIBUTE_PHRASES) == 40


CELEBA_BAD = [
    ("list_attr_celeba.txt", lambda t: t.replace("6\n", "7\n", 1), "list_attr_celeba.txt:1: says 7 images but"),
    ("list_attr_celeba.txt", lambda t: t.replace("Smiling", "Grinning"), "list_attr_celeba.txt:2: unknown attribute"),
    ("list_attr_celeba.txt", lambda t: t.replace("000002.jpg -1", "000002.jpg  0", 1).replace("000002.jpg  1",
                                                                                              "000002.jpg  0", 1),
     "list_attr_celeba.txt:4: attribute 5_o_Clock_Shadow must be 1 or -1, got '0'"),
    ("list_attr_celeba.txt", lambda t: t.replace("000003.jpg", "../000003.jpg"), "list_attr_celeba.txt:5: image name"),
    ("list_attr_celeba.txt", lambda t: "\n".join(x if not x.startswith("000004") else x.rsplit(" ", 1)[0]
                                                 for x in t.splitlines()),
     "list_attr_celeba.txt:6: expected an image name and 40 values, got 40 fields"),
    ("list_eval_partition.txt", lambda t: t.replace("000002.jpg 0", "000002.jpg 3"),
     "list_eval_partition.txt:2: partition must be 0 (train), 1 (val) or 2 (test), got '3'"),
    ("list_eval_partition.txt", lambda t: t + "000009.jpg 0\n",
     "list_eval_partition.txt:7: image 000009.jpg is not in list_attr_celeba.txt"),
    ("list_eval_partition.txt", lambda t: t.replace("000002.jpg 0", "000002.jpg"),
     "list_eval_partition.txt:2: expected 'image_name partition', got 1 fields"),
    ("list_bbox_celeba.txt", lambda t: t.replace("000003.jpg    95", "000003.jpg    9x"),
     "list_bbox_celeba.txt:5: values must be integers"),
    ("list_landmarks_align_celeba.txt", lambda t: t.replace("nose_x", "nosex"),
     "list_landmarks_align_celeba.txt:2: expected the column names"),
]


@pytest.mark.parametrize("fname,edit,msg", CELEBA_BAD, ids=[m.split(":")[1] + m.split(":")[0][-12:] + str(i)
                                                            for i, (_, _, m) in enumerate(CELEBA_BAD)])
def test_celeba_malformed_gives_one_line(tmp_path, fname, edit, msg):
    root = write_celeba(tmp_path / "celeba")
    (root / fname).write_text(edit((root / fname).read_text()))
    with pytest.raises(T2IError) as e:
        load_celeba(root, "train")
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_celeba_missing_and_escaping_images(tmp_path):
    root = write_celeba(tmp_path / "celeba")
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(T2IError, match=r"image file missing: .*000002.jpg \(listed at .*list_eval_partition.txt:2\)"):
        load_celeba(root, "train")
    outside = tmp_path / "elsewhere.jpg"
    _jpg(outside, 9)
    (root / "img_align_celeba" / "000002.jpg").symlink_to(outside)
    with pytest.raises(T2IError, match="outside the dataset folder"):
        load_celeba(root, "train")
    with pytest.raises(T2IError, match="captions_per_image must be an integer"):
        load_celeba(root, "test", captions_per_image=0)


# ----------------------------------------------------------------------------- CelebA-HQ
@pytest.mark.parametrize("pickles", [True, False])
def test_celeba_hq_layout(tmp_path, pickles):
    root = write_celeba_hq(tmp_path / "mmhq", pickles=pickles)
    assert detect_format(root) == "celeba-hq"  # not 'stackgan', although train/filenames.pickle exists
    assert list_splits(root) == ["train", "test"]
    tr, te = load_any(root, "train"), load_any(root, "test")
    assert tr.ids == ["0", "1", "2"] and te.ids == ["3", "4"]
    assert all(len(c) == 10 for c in tr.captions) and tr.captions[1][3] == "the person 1 has caption 3."
    assert te.meta["celeba_files"] == ["001004.jpg", "001005.jpg"]
    assert tr.images_uint8(8, cache=False).shape == (3, 8, 8, 3)
    assert len(load_celeba_hq(root, "train", max_images=1)) == 1
    with pytest.raises(T2IError, match="split 'val' not found"):
        load_celeba_hq(root, "val")


def test_celeba_hq_flat_layout_without_splits(tmp_path):
    root = tmp_path / "hq"
    for i in (10, 2):
        _jpg(root / "CelebA-HQ-img" / f"{i}.jpg", i)
        (root / "celeba-caption").mkdir(parents=True, exist_ok=True)
        (root / "celeba-caption" / f"{i}.txt").write_text("a woman with bangs\nshe is smiling\n")
    assert detect_format(root) == "celeba-hq" and list_splits(root) == ["train"]
    d = load_any(root, "train")
    assert d.ids == ["2", "10"] and d.captions[0] == ["a woman with bangs", "she is smiling"]


def test_celeba_hq_malformed(tmp_path):
    root = write_celeba_hq(tmp_path / "mmhq", pickles=False)
    cap = root / "text" / "celeba-caption" / "1.txt"
    cap.write_text("good caption\n   \n!!!\n")
    with pytest.raises(T2IError, match=r"1.txt:3: caption '!!!' has no word"):
        load_celeba_hq(root, "train")
    cap.write_text("")
    with pytest.raises(T2IError, match=r"caption file .*1.txt has no caption \(empty\)"):
        load_celeba_hq(root, "train")
    cap.write_text("fine\n")
    (root / "image" / "images" / "2.jpg").unlink()
    with pytest.raises(T2IError, match=r"image file missing: .*2.jpg \(id '2' at .*train.txt:3\)"):
        load_celeba_hq(root, "train")
    (root / "train.txt").write_text("0\n../1\n")
    with pytest.raises(T2IError, match=r"train.txt:2: expected one image id"):
        load_celeba_hq(root, "train")
    (root / "train.txt").write_text("0\n1.jpg\n1\n")
    with pytest.raises(T2IError, match=r"train.txt:3: id '1' is listed twice"):
        load_celeba_hq(root, "train")
    (root / "train.txt").write_text("0\n7\n")
    with pytest.raises(T2IError, match=r"train.txt:2: id '7' has no caption file"):
        load_celeba_hq(root, "train")
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("idx orig_idx orig_file\n0 x 1.jpg\n")
    with pytest.raises(T2IError, match=r"mapping.txt:2: expected 'idx orig_idx orig_file'"):
        load_celeba_hq(root, "test")


# ----------------------------------------------------------------------------- Face2Text
def test_face2text_layout(tmp_path):
    root = write_face2text(tmp_path / "f2t")
    assert detect_format(root) == "face2text"
    assert list_splits(root) == ["train", "val", "test"]
    tr = load_any(root, "train")
    assert tr.ids == ["000001", "000002"]
    assert tr.captions[0] == ["A young woman with long brown hair.", "She has a round face and a smile."]
    assert [len(load_any(root, s)) for s in ("val", "test")] == [1, 1]
    assert load_face2text(root, "train", max_images=1).captions == [tr.captions[0]]


def test_face2text_raw_and_csv(tmp_path):
    root = write_face2text(tmp_path / "f2t")
    for s in ("train", "dev", "test"):
        (root / f"clean_{s}_2.1.json").unlink()
    (root / "face2text_v1.0.csv").write_text('filename,description\n000001.jpg,"a man, smiling"\n'
                                             '000003.jpg,a woman\n')
    assert detect_format(root) == "face2text" and list_splits(root) == ["train"]
    assert load_any(root, "train").captions == [["a man, smiling"], ["a woman"]]
    (root / "face2text_v1.0.csv").write_text("file,text\n000001.jpg,a man\n")
    with pytest.raises(T2IError, match=r"csv:1: expected a header with 'filename' and 'description'"):
        load_face2text(root)
    (root / "face2text_v1.0.csv").write_text("filename,description\n000001.jpg,a man\n000002.jpg,   \n")
    with pytest.raises(T2IError, match=r"csv:3: empty caption"):
        load_face2text(root)


@pytest.mark.parametrize("recs,msg", [
    ('[{"filename": "000001.jpg"}]', "record 0: expected an object with string 'filename' and 'description'"),
    ('[{"filename": "000001.jpg", "description": "x"}, {"filename": "000002.jpg", "description": "  "}]',
     "record 1: empty caption"),
    ('[{"filename": "../../etc/a.jpg", "description": "a face"}]', "record 0: image name"),
    ('[{"filename": "000009.jpg", "description": "a face"}]', "image file missing"),
    ('{"filename": "000001.jpg"}', "expected a JSON list"),
    ('[{"filename": "000001.jpg",', "json:1: not valid JSON"),
])
def test_face2text_malformed(tmp_path, recs, msg):
    root = write_face2text(tmp_path / "f2t")
    (root / "clean_train_2.1.json").write_text(recs)
    with pytest.raises(T2IError) as e:
        load_face2text(root, "train")
    assert msg in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- t2igan data check
@pytest.mark.parametrize("writer,fmt,counts", [
    (write_celeba, "celeba", ["train: 3 images, 30 captions, attributes", "val: 1 images", "test: 2 images"]),
    (write_celeba_hq, "celeba-hq", ["train: 3 images, 30 captions", "test: 2 images, 20 captions"]),
    (write_face2text, "face2text", ["train: 2 images, 3 captions", "val: 1 images, 1 captions"]),
])
def test_data_check_on_face_layouts(tmp_path, capsys, writer, fmt, counts):
    root = writer(tmp_path / fmt)
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{fmt} layout" in out and f"{root}: OK" in out and "train: sample caption: " in out
    for c in counts:
        assert c in out
    assert not (root / ".cache").exists()  # check writes nothing


def test_data_check_reports_bad_face_folder(tmp_path, capsys):
    root = write_celeba(tmp_path / "celeba")
    (root / "img_align_celeba" / "000005.jpg").write_bytes(b"not a jpeg")
    assert main(["data", "check", str(root)]) != 0
    err = capsys.readouterr().err
    assert "problem: test: cannot read image" in err and "000005.jpg" in err
