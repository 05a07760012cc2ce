"""Read TensorFlow checkpoints without TensorFlow (pure Python + numpy).

Two on-disk formats exist, both built on TensorFlow's SSTable (``tensorflow/core/lib/io``:
``table_builder.cc``, ``block_builder.cc``, ``format.cc``, the LevelDB table layout):

* **V1** (``tf.train.Saver`` before TF 0.12's default switch, and ``write_version=V1``): one
  file ``NAME.ckpt`` (or ``NAME.ckpt-00000-of-0000N`` shards). The table's record with the
  empty key holds a ``SavedTensorSlices`` proto whose ``meta`` lists every tensor (name,
  ``TensorShapeProto``, ``DataType``, its slices); every other record (key: an OrderedCode of
  name + slice) holds a ``SavedTensorSlices`` with ``data`` = ``SavedSlice`` (name, slice,
  ``TensorProto`` with the values in ``float_val`` / ``int_val`` / ... or ``tensor_content``).
  (``tensorflow/core/util/saved_tensor_slice.proto``, ``tensor_slice_writer.h``.)
* **V2** (``tensorflow/core/util/tensor_bundle``): ``NAME.index`` (the table: key "" ->
  ``BundleHeaderProto``, key = tensor name -> ``BundleEntryProto`` {dtype, shape, shard_id,
  offset, size, crc32c, slices}) and ``NAME.data-00000-of-00001`` (raw little-endian bytes).

The StackGAN TensorFlow release (``birds_model_164000.ckpt``, ``flowers_model_130000.ckpt``,
``birds_skip_thought_model_164000.ckpt``) is one file per model, i.e. **V1**; both are read,
whichever is given (the file, its ``.index``, or the prefix).

Blocks may be Snappy-compressed (the table default; decoded here in pure Python) and carry a
masked CRC32C that is checked (pure Python, or the ``crc32c`` package when installed, which is
much faster on large files). Protos are decoded from the wire format directly (only the few
fields above). Nothing is executed: a checkpoint is data.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2igan import T2IError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER = 5  # compression type + masked crc32c
MAX_ELEMENTS = 1 << 31  # a larger tensor is taken for a damaged shape (TensorFlow's own slice limit is 2 GB)

# DataType enum (tensorflow/core/framework/types.proto) -> numpy dtype
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 9: "int64",
               10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}


class CheckpointError(ValueError):
    """A malformed checkpoint (the caller names the file)."""


# ----------------------------------------------------------------------------- CRC32C
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc`` (the ``crc32c`` package when installed,
    else numpy lanes for large inputs, else the byte-table loop)."""
    try:
        import crc32c as fast  # optional: pip install crc32c
        return fast.crc32c(bytes(data), crc)
    except ImportError:
        pass
    data = memoryview(data).cast("B")
    reg = crc ^ 0xFFFFFFFF
    if len(data) >= 1 << 16:
        reg, data = _crc_lanes(reg, data)
    t = _CRC_TABLE
    for b in bytes(data):
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def _crc_lanes(reg: int, data: memoryview) -> tuple[int, memoryview]:
    """Advance the CRC register over most of ``data`` with numpy: K equal lanes run side by side from
    a zero register (the update is linear over GF(2), so a lane's effect is independent of what came
    before), 32 extra all-zero lanes started from the unit registers give the linear map "advance by
    one lane of zeros", and the lanes are chained with it. Returns (register, the unprocessed tail)."""
    k = min(8192, len(data) // 4096)
    m = len(data) // k
    lanes = np.zeros((m, k + 32), dtype=np.uint8)  # (m, K + 32): byte i of every lane, then the 32 zero lanes
    lanes[:, :k] = np.frombuffer(data[:k * m], dtype=np.uint8).reshape(k, m).T
    table = np.asarray(_CRC_TABLE, dtype=np.uint32)
    c = np.zeros(k + 32, dtype=np.uint32)
    c[k:] = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    for row in lanes:
        c = table[(c ^ row) & 0xFF] ^ (c >> 8)
    cols = [int(x) for x in c[k:]]  # the image of each register bit after m zero bytes
    byte_maps = []
    for j in range(4):
        tb = [0] * 256
        for v in range(1, 256):
            low = v & -v
            tb[v] = tb[v ^ low] ^ cols[8 * j + low.bit_length() - 1]
        byte_maps.append(tb)
    t0, t1, t2, t3 = byte_maps
    for g in c[:k].tolist():
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ g
    return reg, data[k * m:]


def mask_crc(crc: int) -> int:
    """LevelDB's stored form of a CRC (``crc32c::Mask``)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- varints, protos
def read_varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    n = len(buf)
    while True:
        if pos >= n or shift > 63:
            raise CheckpointError("truncated or bad varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def parse_proto(buf) -> dict[int, list]:
    """Wire-format message -> {field number: [values]}; varints as int, fixed32/64 as bytes,
    length-delimited as memoryview."""
    buf = memoryview(buf)
    out: dict[int, list] = {}
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = read_varint(buf, pos)
        elif wire == 1:
            val, pos = bytes(buf[pos:pos + 8]), pos + 8
        elif wire == 2:
            ln, pos = read_varint(buf, pos)
            val, pos = buf[pos:pos + ln], pos + ln
        elif wire == 5:
            val, pos = bytes(buf[pos:pos + 4]), pos + 4
        else:
            raise CheckpointError(f"bad protobuf wire type {wire}")
        if pos > n or field == 0:
            raise CheckpointError("truncated protobuf message")
        out.setdefault(field, []).append(val)
    return out


def _one(msg: dict, field: int, default=None):
    v = msg.get(field)
    return v[-1] if v else default


def _shape(buf) -> tuple[int, ...]:
    """TensorShapeProto: dim = 2 (Dim: size = 1), unknown_rank = 3."""
    msg = parse_proto(buf if buf is not None else b"")
    if _one(msg, 3, 0):
        raise CheckpointError("a tensor of unknown rank")
    dims = []
    for d in msg.get(2, []):
        size = _one(parse_proto(d), 1, 0)
        dims.append(size - (1 << 64) if size >= 1 << 63 else size)
    if any(d < 0 for d in dims):
        raise CheckpointError(f"a tensor of partly unknown shape {dims}")
    if int(np.prod(dims, dtype=object)) > MAX_ELEMENTS:
        raise CheckpointError(f"a tensor of shape {dims} (more than {MAX_ELEMENTS} values)")
    return tuple(dims)


def _slice(buf, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """TensorSliceProto (extent = 1: start = 1, length = 2; no length = the whole dimension)."""
    exts = parse_proto(buf if buf is not None else b"").get(1, [])
    if not exts:
        return tuple(slice(None) for _ in shape)
    if len(exts) != len(shape):
        raise CheckpointError(f"a slice of {len(exts)} dimensions for a tensor of shape {list(shape)}")
    out = []
    for e, dim in zip(exts, shape):
        m = parse_proto(e)
        start, length = _one(m, 1, 0), _one(m, 2)
        out.append(slice(None) if length is None else slice(start, start + length))
        if length is not None and not 0 <= start <= start + length <= dim:
            raise CheckpointError(f"slice {start}:{start + length} out of a dimension of {dim}")
    return tuple(out)


def _packed(vals: list, fmt: str, size: int) -> list:
    """A repeated scalar field, packed (length-delimited) or not."""
    out: list = []
    for v in vals:
        if isinstance(v, memoryview):
            if fmt == "varint":
                pos = 0
                while pos < len(v):
                    x, pos = read_varint(v, pos)
                    out.append(x)
            else:
                if len(v) % size:
                    raise CheckpointError("truncated packed field")
                out.extend(struct.unpack(f"<{len(v) // size}{fmt}", v))
        elif fmt == "varint":
            out.append(v)
        else:
            out.extend(struct.unpack(f"<{fmt}", v))
    return out


def _signed(vals: list, bits: int) -> list:
    return [v - (1 << 64) if v >= 1 << 63 else v for v in vals] if bits else vals


def tensor_proto_values(buf, dtype: int, count: int) -> np.ndarray:
    """The values of a TensorProto (V1 slices: float_val = 5, double_val = 6, int_val = 7,
    int64_val = 10, bool_val = 11, half_val = 13, or tensor_content = 4)."""
    msg = parse_proto(buf)
    if dtype not in DTYPES:
        raise CheckpointError(f"tensors of type {DTYPE_NAMES.get(dtype, dtype)} are not supported")
    np_t = np.dtype(DTYPES[dtype]).newbyteorder("<")
    content = _one(msg, 4)
    if content is not None and len(content):
        arr = np.frombuffer(bytes(content), dtype=np_t)
    elif dtype == 1:
        arr = np.asarray(_packed(msg.get(5, []), "f", 4), dtype=np.float32)
    elif dtype == 2:
        arr = np.asarray(_packed(msg.get(6, []), "d", 8), dtype=np.float64)
    elif dtype == 19:
        arr = np.asarray(_packed(msg.get(13, []), "varint", 0), dtype=np.uint16).view(np.float16)
    elif dtype == 10:
        arr = np.asarray(_packed(msg.get(11, []), "varint", 0), dtype=np.bool_)
    elif dtype in (9, 23):
        arr = np.asarray(_signed(_packed(msg.get(10, []), "varint", 0), dtype == 9), dtype=np.int64).astype(np_t)
    else:
        arr = np.asarray(_signed(_packed(msg.get(7, []), "varint", 0), 1), dtype=np.int64).astype(np_t)
    if arr.size != count:
        raise CheckpointError(f"a slice holds {arr.size} values, its shape needs {count}")
    return arr


# ----------------------------------------------------------------------------- Snappy
def snappy_decompress(src) -> bytes:
    """Decode a raw Snappy block (the format of ``port::Snappy_Compress``)."""
    src = memoryview(src)
    n, pos = read_varint(src, 0)
    out = bytearray()
    end = len(src)
    while pos < end:
        tag = src[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            ln = tag >> 2
            if ln >= 60:
                nb = ln - 59
                ln = int.from_bytes(src[pos:pos + nb], "little")
                pos += nb
            ln += 1
            if pos + ln > end:
                raise CheckpointError("truncated snappy literal")
            out += src[pos:pos + ln]
            pos += ln
            continue
        if kind == 1:
            ln = ((tag >> 2) & 7) + 4
            off = ((tag >> 5) << 8) | src[pos]
            pos += 1
        elif kind == 2:
            ln, off = (tag >> 2) + 1, int.from_bytes(src[pos:pos + 2], "little")
            pos += 2
        else:
            ln, off = (tag >> 2) + 1, int.from_bytes(src[pos:pos + 4], "little")
            pos += 4
        if off == 0 or off > len(out) or pos > end:
            raise CheckpointError("bad snappy copy")
        start = len(out) - off
        if off >= ln:
            out += out[start:start + ln]
        else:  # overlapping copy: repeat the pattern
            for i in range(ln):
                out.append(out[start + i])
    if len(out) != n:
        raise CheckpointError(f"snappy block decodes to {len(out)} bytes, its header says {n}")
    return bytes(out)


# ----------------------------------------------------------------------------- the table
class Table:
    """A TensorFlow/LevelDB SSTable in memory (``data``: the whole file)."""

    def __init__(self, data):
        self.data = data
        if len(data) < FOOTER_SIZE:
            raise CheckpointError(f"too short for a TensorFlow table ({len(data)} bytes)")
        footer = memoryview(data)[len(data) - FOOTER_SIZE:]
        magic = struct.unpack("<Q", footer[40:48])[0]
        if magic != TABLE_MAGIC:
            raise CheckpointError("not a TensorFlow table (bad magic number; truncated or another format)")
        pos = 0
        _meta_off, pos = read_varint(footer, pos)
        _meta_size, pos = read_varint(footer, pos)
        self.index_off, pos = read_varint(footer, pos)
        self.index_size, pos = read_varint(footer, pos)

    def block(self, offset: int, size: int) -> bytes:
        if offset + size + BLOCK_TRAILER > len(self.data) - FOOTER_SIZE:
            raise CheckpointError("a block lies past the end of the file (truncated)")
        raw = memoryview(self.data)[offset:offset + size + BLOCK_TRAILER]
        kind = raw[size]
        stored = struct.unpack("<I", raw[size + 1:size + 5])[0]
        if mask_crc(crc32c(raw[:size + 1])) != stored:
            raise CheckpointError(f"block checksum mismatch at byte {offset} (damaged file)")
        if kind == 0:
            return bytes(raw[:size])
        if kind == 1:
            return snappy_decompress(raw[:size])
        raise CheckpointError(f"unknown block compression {kind}")

    @staticmethod
    def entries(block: bytes):
        """(key, value) of every record in a block (prefix-compressed keys, restart array at the end)."""
        if len(block) < 4:
            raise CheckpointError("block too short")
        num_restarts = struct.unpack("<I", block[-4:])[0]
        limit = len(block) - 4 - 4 * num_restarts
        if limit < 0:
            raise CheckpointError("bad block restart array")
        mv = memoryview(block)
        pos, key = 0, b""
        while pos < limit:
            shared, pos = read_varint(mv, pos)
            non_shared, pos = read_varint(mv, pos)
            vlen, pos = read_varint(mv, pos)
            if shared > len(key) or pos + non_shared + vlen > limit:
                raise CheckpointError("corrupt block entry")
            key = key[:shared] + bytes(mv[pos:pos + non_shared])
            pos += non_shared
            yield key, mv[pos:pos + vlen]
            pos += vlen

    def items(self):
        """Every (key, value) of the table, in key order."""
        for _, handle in self.entries(self.block(self.index_off, self.index_size)):
            off, p = read_varint(handle, 0)
            size, _ = read_varint(handle, p)
            yield from self.entries(self.block(off, size))


# ----------------------------------------------------------------------------- checkpoints
@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy-style name ("float32") or "string" / "bfloat16" (listed, not readable)


def _map(path: Path):
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class TFCheckpoint:
    """``TFCheckpoint(path)``: ``path`` is a V1 file, a V2 ``.index`` file or a V2 prefix.
    ``tensors`` lists what it holds; ``read(name) -> np.ndarray``; ``read_all()``."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        self.source = str(p)
        if p.is_file() and p.suffix != ".index":
            self.format, table_path = "V1", p
        elif p.suffix == ".index" and p.is_file():
            self.format, table_path = "V2", p
        elif p.with_name(p.name + ".index").is_file():
            self.format, table_path = "V2", p.with_name(p.name + ".index")
        else:
            raise T2IError(f"TensorFlow checkpoint not found: {p} (give the .ckpt file, or a V2 prefix with "
                           f"{p.name}.index beside it)")
        self.prefix = table_path.with_suffix("") if self.format == "V2" else table_path
        try:
            self.table = Table(_map(table_path))
            self._load_v1() if self.format == "V1" else self._load_v2()
        except (CheckpointError, struct.error, OSError, TypeError, ValueError, IndexError) as e:
            raise T2IError(f"{table_path}: not a readable TensorFlow {self.format} checkpoint ({e})") from None

    # ---------------------------------------------------------------- V1
    def _load_v1(self) -> None:
        self.tensors: dict[str, TensorInfo] = {}
        self._dtype: dict[str, int] = {}
        self._slices: dict[str, list] = {}
        for key, value in self.table.items():
            msg = parse_proto(value)
            if key == b"":
                meta = parse_proto(_one(msg, 1, b""))
                for t in meta.get(1, []):
                    tm = parse_proto(t)
                    name = bytes(_one(tm, 1, b"")).decode("utf-8", "replace")
                    dt = _one(tm, 3, 0)
                    self.tensors[name] = TensorInfo(name, _shape(_one(tm, 2)), DTYPE_NAMES.get(dt, str(dt)))
                    self._dtype[name] = dt
                continue
            data = _one(msg, 2)
            if data is None:
                raise CheckpointError("a record without slice data")
            ss = parse_proto(data)
            name = bytes(_one(ss, 1, b"")).decode("utf-8", "replace")
            self._slices.setdefault(name, []).append((_one(ss, 2), _one(ss, 3, b"")))
        if not self.tensors:
            raise CheckpointError("no tensor table (the record with the empty key is missing)")
        missing = sorted(set(self.tensors) - set(self._slices))
        if missing:
            raise CheckpointError(f"no data for {missing[:3]}")

    # ---------------------------------------------------------------- V2
    def _load_v2(self) -> None:
        self.tensors, self._dtype, self._entries = {}, {}, {}
        header = None
        for key, value in self.table.items():
            msg = parse_proto(value)
            if key == b"":
                header = msg
                continue
            name = key.decode("utf-8", "replace")
            dt = _one(msg, 1, 0)
            self.tensors[name] = TensorInfo(name, _shape(_one(msg, 2)), DTYPE_NAMES.get(dt, str(dt)))
            self._dtype[name] = dt
            self._entries[name] = msg
        if header is None:
            raise CheckpointError("no bundle header (the record with the empty key is missing)")
        if _one(header, 2, 0) != 0:
            raise CheckpointError("a big-endian bundle")
        self.num_shards = _one(header, 1, 1)
        self._shards: dict[int, object] = {}

    def _shard(self, k: int):
        if k not in self._shards:
            f = self.prefix.with_name(f"{self.prefix.name}.data-{k:05d}-of-{self.num_shards:05d}")
            if not f.is_file():
                raise T2IError(f"{f}: data file of the checkpoint {self.prefix}.index is missing")
            self._shards[k] = _map(f)
        return self._shards[k]

    # ---------------------------------------------------------------- reading
    def read(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise T2IError(f"{self.source}: no tensor {name!r}")
        info, dt = self.tensors[name], self._dtype[name]
        try:
            if self.format == "V1":
                return self._read_v1(name, info.shape, dt)
            return self._read_v2(name, info.shape, dt)
        except (CheckpointError, struct.error, ValueError, TypeError, IndexError, MemoryError) as e:
            raise T2IError(f"{self.source}: tensor {name!r} is not readable ({e.__class__.__name__}: {e})") from None

    def _read_v1(self, name, shape, dt) -> np.ndarray:
        if dt not in DTYPES:
            raise CheckpointError(f"type {DTYPE_NAMES.get(dt, dt)} is not supported")
        out = np.zeros(shape, dtype=DTYPES[dt])
        filled = np.zeros(shape, dtype=bool)
        for sl_buf, data in self._slices[name]:
            sl = _slice(sl_buf, shape)
            part_shape = out[sl].shape
            out[sl] = tensor_proto_values(data, dt, int(np.prod(part_shape, dtype=np.int64))).reshape(part_shape)
            filled[sl] = True
        if not filled.all():
            raise CheckpointError("its slices do not cover the whole tensor")
        return out

    def _read_v2(self, name, shape, dt) -> np.ndarray:
        e = self._entries[name]
        if e.get(7):
            raise CheckpointError("partitioned (sliced) V2 tensors are not supported")
        if dt not in DTYPES:
            raise CheckpointError(f"type {DTYPE_NAMES.get(dt, dt)} is not supported")
        np_t = np.dtype(DTYPES[dt]).newbyteorder("<")
        off, size = _one(e, 4, 0), _one(e, 5, 0)
        count = int(np.prod(shape, dtype=np.int64))
        if size != count * np_t.itemsize:
            raise CheckpointError(f"{size} bytes for {count} values of {np_t.name}")
        data = self._shard(_one(e, 3, 0))
        if off + size > len(data):
            raise CheckpointError("its bytes lie past the end of the data file (truncated)")
        raw = memoryview(data)[off:off + size]
        crc = _one(e, 6)
        if crc is not None and mask_crc(crc32c(raw)) != struct.unpack("<I", crc)[0]:
            raise CheckpointError("data checksum mismatch (damaged file)")
        return np.frombuffer(bytes(raw), dtype=np_t).astype(DTYPES[dt]).reshape(shape)

    def read_all(self, names=None) -> dict[str, np.ndarray]:
        return {n: self.read(n) for n in (names if names is not None else self.tensors)}
