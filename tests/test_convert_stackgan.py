"""`t2igan convert stackgan | stackganpp | hdgan` and the TensorFlow checkpoint reader.

Parity fixtures ``tests/data/convert_stackgan_official.safetensors`` (reduced widths) and
``convert_stackgan_official_full.safetensors`` (the official widths; its tests run with
``T2IGAN_SLOW=1``), tensors and, in their metadata, key lists only. They were written once by
running the official model definitions on CPU under a current PyTorch:
hanzhanggit/StackGAN-Pytorch ``code/model.py`` (STAGE1_G, STAGE2_G),
hanzhanggit/StackGAN-v2 ``code/model.py`` (G_NET, ``B_CONDITION: True``, 3 branches from 64 px)
and ypxie/HDGan ``HDGan/models/hd_networks.py`` (Generator, Discriminator). Their official
configurations were kept (``TEXT.DIMENSION 1024, Z_DIM 100, CONDITION_DIM / EMBEDDING_DIM 128``,
StackGAN-Pytorch ``R_NUM 2`` as coco_s2.yml, StackGAN-v2 ``R_NUM 2``, HDGAN ``emb_dim 128,
num_resblock 1``, sides 64/128/256); the first fixture reduces the widths so the default suite
runs in seconds: ``GF_DIM 8`` (StackGAN-Pytorch and StackGAN-v2; official COCO 192 and birds 64)
and HDGAN ``hid_dim 4`` (official 128; its discriminator's image encoders keep their fixed
official widths), the second keeps the official ones. Shims: an
attribute dict for ``easydict``, no torchvision, and the conditioning-augmentation noise of
``torch.(cuda.)FloatTensor(...).normal_()`` / HDGAN's ``sample_encoded_context`` replaced by given
``eps``. Weights: :func:`official_state` over the official ``state_dict()`` keys (the
``num_batches_tracked`` buffers left out, as in the PyTorch 0.2/0.3 files these projects
released). Inputs: ``z`` and ``eps`` drawn exactly as ``Pipeline.latents`` draws them for seeds
11 (stage I), 12 (stage II), 13 (StackGAN-v2), 14 (HDGAN) and two captions; ``sent`` N(0, 1)
sentence embeddings. Outputs: every stage's image subsampled to 8x8 (32x32 for the 256 px
stage-II image), HDGAN's discriminator pair and local logits on its three images.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from t2igan import T2IError
from t2igan.cli import main
from t2igan.convert import convert
from t2igan.pipeline import Pipeline

FIXTURE = Path(__file__).parent / "data" / "convert_stackgan_official.safetensors"
SEEDS = {"stage1": 11, "stage2": 12, "v2": 13, "hdgan": 14}
CAPS = ["this bird is red with a short beak", "a small blue bird with white wings"]


FIXTURE_FULL = FIXTURE.with_name("convert_stackgan_official_full.safetensors")
WIDTHS = {"small": (8, 8, 4), "full": (192, 64, 128)}  # StackGAN-Pytorch GF_DIM, StackGAN-v2 GF_DIM, HDGAN hid_dim
SCALES = ["small", pytest.param("full", marks=pytest.mark.slow)]
_CACHE: dict = {}


def load_ref(scale: str):
    """(tensors, key lists) of the fixture at ``scale``: small widths, or the official ones (slow)."""
    if scale not in _CACHE:
        path = FIXTURE if scale == "small" else FIXTURE_FULL
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        _CACHE[scale] = load_file(str(path)), {k: json.loads(v) for k, v in meta.items()}
    return _CACHE[scale]


@pytest.fixture(scope="module")
def ref():
    return load_ref("small")


def official_state(keys: list, gain: float = 1.0) -> dict[str, torch.Tensor]:
    """Deterministic weights in the official key order: one generator (seed 0) over the sorted keys;
    matrices and kernels N(0, (gain / sqrt(fan_in))^2), BN scales 1 + N(0, 0.2^2), running variances
    0.5 + |N(0, 0.2^2)|, other vectors N(0, 0.2^2)."""
    g = torch.Generator().manual_seed(0)
    shapes = {k: s for k, s in keys}
    out = {}
    for k in sorted(shapes):
        v = torch.randn(shapes[k], generator=g)
        if v.dim() >= 2:
            v = v * (gain / v[0].numel() ** 0.5)
        elif k.endswith("running_var"):
            v = v.abs() * 0.2 + 0.5
        elif k.endswith("weight"):
            v = 1 + 0.2 * v
        else:
            v = 0.2 * v
        out[k] = v
    return {k: out[k] for k, _ in keys}


def save_legacy(state: dict, path: Path) -> Path:
    """torch.save as PyTorch 0.2-1.5 wrote it (the pre-zip format of the released files)."""
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def write_embeddings_dataset(root: Path, sent: torch.Tensor) -> Path:
    """A StackGAN-layout dataset whose two captions have the sentence embeddings ``sent`` [2, D]."""
    (root / "train").mkdir(parents=True)
    (root / "text_c10" / "c").mkdir(parents=True)
    (root / "images" / "c").mkdir(parents=True)
    with open(root / "train" / "filenames.pickle", "wb") as f:
        pickle.dump(["c/img1", "c/img2"], f)
    emb = root / "train" / "char-CNN-RNN-embeddings.pickle"
    with open(emb, "wb") as f:
        pickle.dump(sent.numpy()[:, None, :].astype(np.float32), f)
    for i, c in enumerate(CAPS, 1):
        (root / "text_c10" / "c" / f"img{i}.txt").write_text(c + "\n")
        Image.new("RGB", (8, 8)).save(root / "images" / "c" / f"img{i}.jpg")
    return emb


def check_latents(pipe: Pipeline, t: dict, name: str) -> None:
    """The fixture's noise is what the pipeline draws for the name's seed (so generate() is the official run)."""
    z, eps = pipe.latents(2, SEEDS[name])
    assert torch.equal(z, t[f"{name}/z"]) and torch.equal(eps, t[f"{name}/eps"])


def compare(images: list[torch.Tensor], t: dict, name: str, steps: tuple[int, ...], unit: bool = True) -> float:
    """Max abs difference of every stage's image (``unit``: pipeline images in [0, 1]) from the official ones."""
    assert len(images) == len(steps)
    worst = 0.0
    for k, (img, s) in enumerate(zip(images, steps)):
        official = t[f"{name}/out{k}"]  # [-1, 1]
        assert (official.abs() < 0.99).float().mean() > 0.5  # not saturated: the comparison means something
        expect = official.add(1).div(2) if unit else official
        d = (img[:, :, ::s, ::s] - expect).abs().max().item()
        assert d <= 1e-5, f"{name} stage {k}: max abs difference {d}"
        worst = max(worst, d)
    print(f"parity {name}: every stage's image within {worst:.1e} of the official code")  # shown with pytest -s
    return worst


# ----------------------------------------------------------------------------- StackGAN-Pytorch
@pytest.mark.parametrize("scale", SCALES)
def test_stackgan_stage1_with_the_dataset_embeddings(scale, tmp_path):
    t, meta = load_ref(scale)
    src = save_legacy(official_state(meta["stage1/keys"]), tmp_path / "netG_epoch_120.pth")
    emb = write_embeddings_dataset(tmp_path / "coco", t["stage1/sent"])
    rep = convert("stackgan", [src, emb], tmp_path / "out", echo=None)
    assert rep.config == dict(t_dim=1024, c_dim=128, nz=100, gf_dim=WIDTHS[scale][0], imsize=64)
    assert any("num_batches_tracked" in n for n in rep.notes)  # pre-0.4 file: buffers filled and said so
    pipe = Pipeline.from_pretrained(tmp_path / "out")
    assert pipe.family == "stackgan_stage1" and pipe.title == "StackGAN stage I"
    check_latents(pipe, t, "stage1")
    compare(pipe.generate(CAPS, seed=SEEDS["stage1"], return_all_stages=True), t, "stage1", (8,))


@pytest.mark.parametrize("scale", SCALES)
def test_stackgan_stage2_with_a_reed_t7(scale, tmp_path):
    from test_char_cnn_rnn import _write_reed_t7

    t, meta = load_ref(scale)
    src = save_legacy(official_state(meta["stage2/keys"]), tmp_path / "netG_epoch_90.pth")
    _write_reed_t7(tmp_path / "lm_sje_coco.t7", cnn_dim=6, emb_dim=1024, doc_length=60)
    lines = []
    rep = convert("stackgan", [tmp_path / "lm_sje_coco.t7", src], tmp_path / "out", echo=lines.append,
                  doc_length="60")
    assert rep.config["stage1"]["imsize"] == 64 and rep.config["imsize"] == 256 and rep.config["r_num"] == 2
    assert rep.config["gf_dim"] == rep.config["stage1"]["gf_dim"] == WIDTHS[scale][0]
    assert any(line.startswith("config (from shapes)") for line in lines)
    pipe = Pipeline.from_pretrained(tmp_path / "out")
    assert pipe.family == "stackgan_stage2" and pipe.stage_sizes == [64, 256]
    check_latents(pipe, t, "stage2")
    # the text path: the folder's encoder is the .t7's, and the generator is the official one
    t7_sent = _reed_sentences(tmp_path / "lm_sje_coco.t7", 60)
    torch.testing.assert_close(pipe.encode(CAPS)[1], t7_sent, rtol=0, atol=0)
    z, eps = pipe.latents(2, SEEDS["stage2"])
    out = pipe.synthesize(z, t["stage2/sent"], torch.zeros(2, 0, 0), torch.zeros(2, 0, dtype=torch.bool), eps)
    compare(out.images, t, "stage2", (8, 8), unit=False)


def _reed_sentences(path, doc_length):
    from t2igan.convert.reed_t7 import convert_char_cnn_rnn
    from t2igan.text.char_cnn_rnn import CharCNNRNNCaptionEncoder

    return CharCNNRNNCaptionEncoder(convert_char_cnn_rnn(path, doc_length)).encode(CAPS).sentence


# ----------------------------------------------------------------------------- StackGAN-v2
@pytest.mark.parametrize("scale", SCALES)
def test_stackganpp_dataparallel_file(scale, tmp_path):
    t, meta = load_ref(scale)
    keys = meta["v2/keys"]
    assert all(k.startswith("module.") for k, _ in keys)  # trainer.py saves the DataParallel wrapper's dict
    src = save_legacy(official_state(keys), tmp_path / "netG_210000.pth")
    emb = write_embeddings_dataset(tmp_path / "birds", t["v2/sent"])
    lines = []
    rep = convert("stackganpp", [src, emb], tmp_path / "out", echo=lines.append)
    assert rep.config == dict(t_dim=1024, c_dim=128, nz=100, gf_dim=WIDTHS[scale][1], r_num=2, branch_num=3,
                              base_size=64)
    assert any("DataParallel" in line for line in lines)
    pipe = Pipeline.from_pretrained(tmp_path / "out")
    check_latents(pipe, t, "v2")
    compare(pipe.generate(CAPS, seed=SEEDS["v2"], return_all_stages=True), t, "v2", (8, 16, 32))


# ----------------------------------------------------------------------------- the command line
def test_cli_check_writes_nothing_then_convert_and_sample(ref, tmp_path, capsys):
    t, meta = ref
    src = save_legacy(official_state(meta["stage1/keys"]), tmp_path / "netG_epoch_120.pth")
    emb = write_embeddings_dataset(tmp_path / "coco", t["stage1/sent"])
    assert main(["convert", "stackgan", str(src), str(emb), "--check"]) == 0
    out = capsys.readouterr().out
    assert "StackGAN stage-I generator (64x64)" in out and "gf_dim=8" in out and "precomputed" in out
    assert not (tmp_path / "out").exists()
    assert main(["convert", "stackgan", str(src), str(emb), "--out", str(tmp_path / "out")]) == 0
    assert main(["sample", str(tmp_path / "out"), CAPS[0], "-o", str(tmp_path / "s.png"), "--seed", "3"]) == 0
    assert Image.open(tmp_path / "s.png").size[0] >= 64


# ----------------------------------------------------------------------------- bad input
def _one_line_nothing_written(tmp_path, family, sources, match, **options):
    out = tmp_path / "out"
    with pytest.raises(T2IError, match=match) as e:
        convert(family, sources, out, echo=None, **options)
    assert "\n" not in str(e.value)
    assert not out.exists() and not out.with_name("out.tmp").exists()
    return str(e.value)


def test_a_file_of_another_family_is_refused(ref, tmp_path):
    t, meta = ref
    v2 = save_legacy(official_state(meta["v2/keys"]), tmp_path / "netG_210000.pth")
    s1 = save_legacy(official_state(meta["stage1/keys"]), tmp_path / "netG_epoch_120.pth")
    emb = write_embeddings_dataset(tmp_path / "d", t["stage1/sent"])
    msg = _one_line_nothing_written(tmp_path, "stackgan", [v2, emb], "not one of the files a StackGAN conversion")
    assert str(v2) in msg
    _one_line_nothing_written(tmp_path, "stackganpp", [s1, emb], "not one of the files a StackGAN-v2 conversion")
    _one_line_nothing_written(tmp_path, "hdgan", [v2, emb], "not one of the files a HDGAN conversion")
    hd = save_legacy(official_state(meta["hdgan/keys"]), tmp_path / "G_epoch500.pth")
    _one_line_nothing_written(tmp_path, "stackganpp", [hd, emb], "not one of the files a StackGAN-v2 conversion")
    _one_line_nothing_written(tmp_path, "dfgan", [v2, emb], "not one of the files a DF-GAN conversion")
    _one_line_nothing_written(tmp_path, "stackgan", [s1], "no text file among the sources")
    d = save_legacy({"netD.conv.weight": torch.zeros(1)}, tmp_path / "netD.pth")
    _one_line_nothing_written(tmp_path, "stackgan", [d, emb], f"{d}: not one of the files")


def test_wrong_shapes_and_missing_weights_name_the_key(ref, tmp_path):
    t, meta = ref
    emb = write_embeddings_dataset(tmp_path / "d", t["stage1/sent"])
    state = official_state(meta["stage1/keys"])
    state["upsample2.1.weight"] = state["upsample2.1.weight"][:, :-1]
    bad = save_legacy(state, tmp_path / "shape.pth")
    _one_line_nothing_written(tmp_path, "stackgan", [bad, emb],
                              r"shape\.pth: 'upsample2\.1\.weight' has shape \(16, 31, 3, 3\)"
                              r".* expects \(16, 32, 3, 3\)")
    state = official_state(meta["stage1/keys"])
    del state["upsample3.2.running_mean"]
    gone = save_legacy(state, tmp_path / "missing.pth")
    _one_line_nothing_written(tmp_path, "stackgan", [gone, emb],
                              r"1 of the .* weights are missing .*upsample3\.2\.running_mean")
    state = official_state(meta["stage1/keys"])
    state["extra.weight"] = torch.zeros(3)
    extra = save_legacy(state, tmp_path / "extra.pth")
    _one_line_nothing_written(tmp_path, "stackgan", [extra, emb], r"1 of its .* keys fit nothing .*'extra\.weight'")
    small = write_embeddings_dataset(tmp_path / "d16", torch.randn(2, 16))
    ok = save_legacy(official_state(meta["stage1/keys"]), tmp_path / "ok.pth")
    _one_line_nothing_written(tmp_path, "stackgan", [ok, small], "reads 1024-d sentence embeddings but .* gives 16-d")


def test_unconditional_stackgan_v2_and_truncated_or_malicious_files(ref, tmp_path):
    t, meta = ref
    emb = write_embeddings_dataset(tmp_path / "d", t["v2/sent"])
    state = {k: v for k, v in official_state(meta["v2/keys"]).items() if not k.startswith("module.ca_net.")}
    unc = save_legacy(state, tmp_path / "netG_dog.pth")
    _one_line_nothing_written(tmp_path, "stackganpp", [unc, emb], "unconditional StackGAN-v2 generator")
    good = save_legacy(official_state(meta["v2/keys"]), tmp_path / "netG.pth")
    data = good.read_bytes()
    cut = tmp_path / "netG_cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    msg = _one_line_nothing_written(tmp_path, "stackganpp", [cut, emb], "not a readable PyTorch checkpoint")
    assert str(cut) in msg

    class Boom:
        def __reduce__(self):
            return (print, ("this ran",))

    evil = tmp_path / "netG_evil.pth"
    torch.save({"ca_net.fc.weight": torch.zeros(1), "x": Boom()}, evil)
    _one_line_nothing_written(tmp_path, "stackganpp", [evil, emb], "pickle that would run code")


# ----------------------------------------------------------------------------- TensorFlow checkpoints
# A writer of both formats, following TensorFlow's sources: lib/io/block_builder.cc (prefix-shared
# keys, a restart every 16 entries, 1 in the index block), table_builder.cc (Snappy when it saves
# >= 1/8, 5-byte trailer: type + masked CRC32C of contents + type; empty metaindex block; index
# entries -> varint BlockHandles; 48-byte footer with the magic 0xdb4775248b80fb57),
# util/tensor_slice_writer.h (V1: key "" -> SavedTensorSlices.meta, one record per slice keyed by
# OrderedCode(0, name, dims, start/length per dim) holding SavedSlice{name, slice, TensorProto}),
# util/tensor_bundle (V2: .index table with BundleHeaderProto / BundleEntryProto, raw .data-00000-of-00001).
def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    return _varint(num << 3 | 2) + _varint(len(value)) + bytes(value)


def _snappy(raw: bytes) -> bytes:
    """A greedy Snappy compressor: literals and 2-byte-offset copies (overlapping ones too)."""
    out, lit, i, seen = bytearray(_varint(len(raw))), bytearray(), 0, {}

    def flush():
        if lit:
            n = len(lit) - 1
            out.extend(bytes([n << 2]) if n < 60 else bytes([61 << 2]) + n.to_bytes(2, "little"))
            out.extend(lit)
            lit.clear()

    while i < len(raw):
        j = seen.get(raw[i:i + 4]) if i + 4 <= len(raw) else None
        if j is not None and i - j < 65536:
            n = 4
            while i + n < len(raw) and n < 64 and raw[j + n] == raw[i + n]:
                n += 1
            flush()
            out.extend(bytes([((n - 1) << 2) | 2]) + (i - j).to_bytes(2, "little"))
            for k in range(i, i + n):
                seen[raw[k:k + 4]] = k
            i += n
        else:
            seen[raw[i:i + 4]] = i
            lit.append(raw[i])
            i += 1
    flush()
    return bytes(out)


def _block(entries, restart_interval: int) -> bytes:
    buf, restarts, last, counter = bytearray(), [0], b"", 0
    for k, v in entries:
        if counter >= restart_interval:
            restarts.append(len(buf))
            counter, last = 0, b""
        shared = 0
        while shared < min(len(last), len(k)) and last[shared] == k[shared]:
            shared += 1
        buf += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
        last, counter = k, counter + 1
    return bytes(buf) + b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")


def write_table(path: Path, records: dict[bytes, bytes], compress: bool, block_size: int = 256) -> None:
    from t2igan.convert.tf_checkpoint import crc32c, mask_crc

    data, index, pending = bytearray(), [], []

    def write_block(raw: bytes, allow: bool = True) -> bytes:
        kind, body = 0, raw
        if compress and allow:
            c = _snappy(raw)
            if len(c) < len(raw) - len(raw) // 8:
                kind, body = 1, c
        handle = _varint(len(data)) + _varint(len(body))
        data.extend(body + bytes([kind]) + mask_crc(crc32c(body + bytes([kind]))).to_bytes(4, "little"))
        return handle

    items = sorted(records.items())
    for n, (k, v) in enumerate(items):
        pending.append((k, v))
        if sum(len(a) + len(b) for a, b in pending) >= block_size or n == len(items) - 1:
            index.append((pending[-1][0], write_block(_block(pending, 16))))
            pending = []
    meta = write_block(_block([], 16))
    idx = write_block(_block(index, 1))
    footer = (meta + idx).ljust(40, b"\0") + (0xDB4775248B80FB57).to_bytes(8, "little")
    path.write_bytes(bytes(data) + footer)


def _ordered_key(name: str, ndim: int) -> bytes:
    """OrderedCode of (0, name, ndim, (start 0, length -1) per dim) for a full slice (small numbers only)."""
    esc = name.encode().replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff")
    return b"\x00" + esc + b"\x00\x01" + bytes([1, ndim]) if ndim else b"\x00" + esc + b"\x00\x01\x00"


DT = {np.dtype(np.float32): 1, np.dtype(np.int64): 9, np.dtype(np.int32): 3}


def _shape_proto(shape) -> bytes:
    return b"".join(_field(2, _field(1, d) if d else b"") for d in shape)


def _values(arr: np.ndarray) -> bytes:
    if arr.dtype == np.float32:
        return _field(5, arr.astype("<f4").tobytes())  # float_val, packed
    return _field(10 if arr.dtype == np.int64 else 7, b"".join(_varint(int(x)) for x in arr.ravel()))


def write_v1(path: Path, tensors: dict[str, np.ndarray], split: dict[str, int] | None = None, compress=True) -> Path:
    """``split``: name -> row where that tensor is saved as two slices (rows :r and r:)."""
    split = split or {}
    metas, records = [], {}
    for name, arr in tensors.items():
        full_slice = b"".join(_field(1, b"") for _ in arr.shape)
        parts = [(full_slice, arr, _ordered_key(name, arr.ndim))]
        if name in split:
            r = split[name]
            parts = []
            for start, piece in ((0, arr[:r]), (r, arr[r:])):
                ext = _field(1, (_field(1, start) if start else b"") + _field(2, len(piece)))
                ext += b"".join(_field(1, b"") for _ in arr.shape[1:])
                parts.append((ext, piece, _ordered_key(name, arr.ndim) + bytes([start])))
        metas.append(_field(1, _field(1, name.encode()) + _field(2, _shape_proto(arr.shape)) + _field(3, DT[arr.dtype])
                            + b"".join(_field(4, s) for s, _, _ in parts)))
        for sl, piece, key in parts:
            saved = _field(1, name.encode()) + _field(2, sl) + _field(3, _values(piece))
            records[key] = _field(2, saved)
    records[b""] = _field(1, b"".join(metas) + _field(2, _field(1, 21)))
    write_table(path, records, compress)
    return path


def write_v2(prefix: Path, tensors: dict[str, np.ndarray]) -> Path:
    from t2igan.convert.tf_checkpoint import crc32c, mask_crc

    data, records = bytearray(), {b"": _field(1, 1) + _field(3, _field(1, 1))}
    for name, arr in sorted(tensors.items()):
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        entry = _field(1, DT[arr.dtype]) + _field(2, _shape_proto(arr.shape)) + (_field(4, len(data)) if data else b"")
        entry += _field(5, len(raw)) + _varint(6 << 3 | 5) + mask_crc(crc32c(raw)).to_bytes(4, "little")
        records[name.encode()] = entry
        data += raw
    write_table(prefix.with_name(prefix.name + ".index"), records, compress=False)
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(bytes(data))
    return prefix


def _tf_tensors():
    rng = np.random.default_rng(0)
    return {"g_net/conv2d/w": rng.standard_normal((3, 3, 4, 8)).astype(np.float32),  # HWIO kernel
            "g_net/Linear/Matrix": rng.standard_normal((12, 40)).astype(np.float32),
            "g_net/batch_norm/mean": np.zeros(64, np.float32),  # compressible: Snappy blocks
            "hr_g_net/batch_norm/gamma": np.ones(64, np.float32),
            "global_step": np.array(164000, dtype=np.int64),
            "counts": np.array([-3, 0, 7], dtype=np.int32)}


def test_crc32c_and_snappy_match_their_definitions():
    from t2igan.convert.tf_checkpoint import crc32c, mask_crc, snappy_decompress

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
    assert crc32c(b"") == 0 and crc32c(b"56789", crc32c(b"1234")) == 0xE3069283
    assert mask_crc(0) == 0xA282EAD8
    blob = np.random.default_rng(1).integers(0, 256, 70001, dtype=np.uint8).tobytes()  # >= 64 KiB: numpy lanes
    c = 0xFFFFFFFF
    for b in blob:  # the bitwise definition (reflected polynomial 0x82F63B78)
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    assert crc32c(blob) == c ^ 0xFFFFFFFF
    for raw in (b"", b"abc", b"ab" * 300 + bytes(range(256)) * 3, np.zeros(1000, np.float32).tobytes()):
        packed = _snappy(raw)
        assert snappy_decompress(packed) == raw
    assert len(_snappy(b"ab" * 300)) < 40  # overlapping copies were written (and decoded above)


@pytest.mark.parametrize("compress", [True, False])
def test_v1_checkpoint_is_read_without_tensorflow(tmp_path, compress):
    from t2igan.convert.tf_checkpoint import TFCheckpoint

    tensors = _tf_tensors()
    path = write_v1(tmp_path / "birds_model_164000.ckpt", tensors, split={"g_net/Linear/Matrix": 5}, compress=compress)
    raw = path.read_bytes()
    if compress:  # at least one block went through Snappy, as TensorFlow's default table options do
        assert b"\x00" * 256 not in raw
    ck = TFCheckpoint(path)
    assert ck.format == "V1" and set(ck.tensors) == set(tensors)
    assert ck.tensors["g_net/conv2d/w"].shape == (3, 3, 4, 8) and ck.tensors["global_step"].dtype == "int64"
    for name, arr in tensors.items():
        got = ck.read(name)
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr), name


def test_v2_checkpoint_is_read_by_prefix_or_index(tmp_path):
    from t2igan.convert.tf_checkpoint import TFCheckpoint

    tensors = _tf_tensors()
    prefix = write_v2(tmp_path / "model.ckpt-164000", tensors)
    for given in (prefix, prefix.with_name(prefix.name + ".index")):
        ck = TFCheckpoint(given)
        assert ck.format == "V2" and set(ck.tensors) == set(tensors)
        for name, arr in tensors.items():
            assert np.array_equal(ck.read(name), arr), name


def test_damaged_tensorflow_checkpoints_are_one_line(tmp_path):
    from t2igan.convert.tf_checkpoint import TFCheckpoint

    path = write_v1(tmp_path / "m.ckpt", _tf_tensors())
    raw = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(raw[: len(raw) - 30])
    flip = tmp_path / "flip.ckpt"
    flip.write_bytes(raw[:20] + bytes([raw[20] ^ 1]) + raw[21:])
    pth = save_legacy({"a": torch.zeros(2)}, tmp_path / "netG.ckpt")
    for bad, what in ((cut, "bad magic number"), (flip, "checksum mismatch"), (pth, "bad magic number")):
        with pytest.raises(T2IError, match=what) as e:
            TFCheckpoint(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    prefix = write_v2(tmp_path / "v2", _tf_tensors())
    data = prefix.with_name("v2.data-00000-of-00001")
    b = bytearray(data.read_bytes())
    b[5] ^= 0xFF
    data.write_bytes(bytes(b))
    with pytest.raises(T2IError, match="checksum mismatch"):
        TFCheckpoint(prefix).read("counts")  # the first tensor in the data file: bytes 0-11
    data.unlink()
    with pytest.raises(T2IError, match="data file .* is missing"):
        TFCheckpoint(prefix).read("counts")
    with pytest.raises(T2IError, match="TensorFlow checkpoint not found"):
        TFCheckpoint(tmp_path / "nothing")


# ----------------------------------------------------------------------------- HDGAN
@pytest.mark.parametrize("scale", SCALES)
def test_hdgan_generator_and_discriminator(scale, tmp_path):
    from t2igan.core import weights as ckpt
    from t2igan.models.hdgan import Discriminator

    t, meta = load_ref(scale)
    g_src = save_legacy(official_state(meta["hdgan/keys"], gain=0.5), tmp_path / "G_epoch500.pth")
    d_src = save_legacy(official_state(meta["hdgan/d_keys"]), tmp_path / "D_epoch500.pth")
    emb = write_embeddings_dataset(tmp_path / "birds", t["hdgan/sent"])
    rep = convert("hdgan", [d_src, emb, g_src], tmp_path / "out", echo=None)
    assert rep.config == dict(sent_dim=1024, noise_dim=100, emb_dim=128, hid_dim=WIDTHS[scale][2], num_resblock=1,
                              side_output_at=[64, 128, 256])
    pipe = Pipeline.from_pretrained(tmp_path / "out")
    assert pipe.family == "hdgan" and pipe.title == "HDGAN" and pipe.stage_sizes == [64, 128, 256]
    check_latents(pipe, t, "hdgan")
    stages = pipe.generate(CAPS, seed=SEEDS["hdgan"], return_all_stages=True)
    compare(stages, t, "hdgan", (8, 16, 32))
    cfg, state = ckpt.read_component(tmp_path / "out" / "discriminator", "hdgan_discriminator")
    D = Discriminator(**cfg)
    ckpt.load_state_strict(D, state, "discriminator")
    D.eval()
    with torch.no_grad():
        out = pipe.synthesize(*pipe.latents(2, SEEDS["hdgan"])[:1], t["hdgan/sent"], torch.zeros(2, 0, 0),
                              torch.zeros(2, 0, dtype=torch.bool), pipe.latents(2, SEEDS["hdgan"])[1])
        for k, img in enumerate(out.images):
            pair, local = D(img, t["hdgan/sent"])
            torch.testing.assert_close(pair, t[f"hdgan/d_pair{k}"], rtol=0, atol=1e-5)
            torch.testing.assert_close(local, t[f"hdgan/d_local{k}"], rtol=0, atol=1e-5)


def test_hdgan_512_and_foreign_discriminator_are_refused(ref, tmp_path):
    t, meta = ref
    emb = write_embeddings_dataset(tmp_path / "d", t["hdgan/sent"])
    g = official_state(meta["hdgan/keys"], gain=0.5)
    big = {f"generator_256.{k}": v for k, v in g.items()} | {"scale_512.0.res_block.0.1.weight": torch.zeros(8)}
    big = save_legacy(big, tmp_path / "G_512.pth")
    _one_line_nothing_written(tmp_path, "hdgan", [big, emb], "512 px generator")
    ok = save_legacy(g, tmp_path / "G.pth")
    d = official_state(meta["hdgan/d_keys"])
    d["pair_disc_64.node.1.weight"] = torch.zeros(3)
    bad_d = save_legacy(d, tmp_path / "D.pth")
    _one_line_nothing_written(tmp_path, "hdgan", [ok, bad_d, emb], r"D\.pth: 'pair_disc_64\.node\.1\.weight' has shape")


def test_hdgan_family_trains_exports_and_samples(tiny_data, tiny_damsm, tmp_path):
    """The hdgan family (its own networks, HDGAN's least-squares pair + local losses) at CPU size:
    sides 16 and 32, a small D width; one step, then the exported folder samples every side."""
    from conftest import tiny_overrides

    from t2igan.config import load_config
    from t2igan.train.run import build_training

    small = {"model.hid_dim": 2, "model.emb_dim": 8, "model.nz": 8, "model.d_base_dim": 4, "data.num_scales": 2,
             "text_encoder": str(tiny_damsm), "train.max_steps": 1}
    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "run", **small), task="hdgan")
    tr = build_training(cfg, resume=False)
    assert tr.task.loss_kind == "lsgan" and tr.task.netG.stage_sizes == [16, 32]
    before = {k: v.clone() for k, v in tr.task.netD.state_dict().items()}
    s = tr.fit()
    assert s["step"] == 1 and s["task"] == "hdgan"
    assert any(not torch.equal(before[k], v) for k, v in tr.task.netD.state_dict().items())  # D was trained
    pipe = Pipeline.from_pretrained(tmp_path / "run")
    assert pipe.family == "hdgan" and pipe.stage_sizes == [16, 32]
    caps = [tr.dataset.data.captions[0][0], tr.dataset.data.captions[1][0]]
    a = pipe.generate(caps, seed=1, n=2, return_all_stages=True)
    assert [x.shape for x in a] == [(4, 3, 16, 16), (4, 3, 32, 32)]
    assert torch.equal(a[-1], pipe.generate(caps, seed=1, n=2))
    assert not torch.equal(a[-1], pipe.generate(caps, seed=2, n=2))
    with pytest.raises(T2IError, match="every side must be a power of two from 16"):
        build_training(load_config(None, tiny_overrides(tiny_data, tmp_path / "bad", **{**small, "data.num_scales": 3}),
                                   task="hdgan"), resume=False)


def test_a_tensorflow_stackgan_checkpoint_is_named_not_converted(ref, tmp_path):
    t, _ = ref
    emb = write_embeddings_dataset(tmp_path / "d", t["stage1/sent"])
    ckpt = write_v1(tmp_path / "birds_model_164000.ckpt", _tf_tensors())
    msg = _one_line_nothing_written(tmp_path, "stackgan", [ckpt, emb],
                                    r"a TensorFlow V1 checkpoint \(6 tensors, e\.g\. ")
    assert str(ckpt) in msg and "t2igan convert stackgan-tf" in msg
    prefix = write_v2(tmp_path / "model.ckpt-5", _tf_tensors())
    index = prefix.with_name("model.ckpt-5.index")
    _one_line_nothing_written(tmp_path, "stackgan", [index, emb], "a TensorFlow V2 checkpoint")
