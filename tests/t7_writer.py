"""A minimal Torch7 binary serialiser for tests (torchfile only reads), and an nngraph
builder that lays out Reed's HybridCNNLong + FixedGRU/FixedRNN text encoder the way
``torch.save`` writes an ``nn.gModule``: forward nodes whose ``data.mapindex`` lists the
parents' data and whose ``children`` are their consumers, module-less input/split nodes,
and step modules that share one weight storage."""
from __future__ import annotations

import struct

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5


class Obj:
    """A Torch class instance: ``typename`` and its field table."""

    def __init__(self, typename: str, fields: dict | None = None):
        self.typename, self.fields = typename, fields if fields is not None else {}


class Table:
    """A Lua table with arbitrary (also table) keys, as ordered (key, value) pairs."""

    def __init__(self, pairs=None):
        self.pairs = list(pairs or [])


class Tensor:
    """A FloatTensor view (its own object) of a float32 storage array (shared when reused)."""

    def __init__(self, storage: np.ndarray, shape=None):
        self.storage = storage
        self.shape = tuple(shape if shape is not None else storage.shape)


class Writer:
    def __init__(self, f):
        self.f, self.memo = f, {}

    def i32(self, v):
        self.f.write(struct.pack("<i", v))

    def i64(self, v):
        self.f.write(struct.pack("<q", v))

    def string(self, s):
        b = s.encode() if isinstance(s, str) else s
        self.i32(len(b))
        self.f.write(b)

    def _ref(self, typeidx, obj) -> bool:
        """Write type and reference index; True if the object was written before."""
        self.i32(typeidx)
        key = id(obj)
        if key in self.memo:
            self.i32(self.memo[key][0])
            return True
        self.memo[key] = (len(self.memo) + 1, obj)  # keep obj alive so ids stay unique
        self.i32(self.memo[key][0])
        return False

    def write(self, x):
        if x is None:
            self.i32(NIL)
        elif isinstance(x, bool):
            self.i32(BOOLEAN)
            self.i32(1 if x else 0)
        elif isinstance(x, (int, float)):
            self.i32(NUMBER)
            self.f.write(struct.pack("<d", float(x)))
        elif isinstance(x, (str, bytes)):
            self.i32(STRING)
            self.string(x)
        elif isinstance(x, Tensor):
            if self._ref(TORCH, x):
                return
            self.string("V 1")
            self.string("torch.FloatTensor")
            shape = x.shape
            self.i32(len(shape))
            for n in shape:
                self.i64(n)
            stride, acc = [], 1
            for n in reversed(shape):
                stride.insert(0, acc)
                acc *= n
            for s in stride:
                self.i64(s)
            self.i64(1)  # storage offset, 1-based
            st = x.storage
            if self._ref(TORCH, st):
                return
            self.string("V 1")
            self.string("torch.FloatStorage")
            self.i64(st.size)
            self.f.write(np.ascontiguousarray(st, dtype="<f4").tobytes())
        elif isinstance(x, Obj):
            if self._ref(TORCH, x):
                return
            self.string("V 1")
            self.string(x.typename)
            self.write(x.fields)
        elif isinstance(x, (dict, list, Table)):
            if self._ref(TABLE, x):
                return
            pairs = x.pairs if isinstance(x, Table) else list(enumerate(x, 1)) if isinstance(x, list) else list(x.items())
            self.i32(len(pairs))
            for k, v in pairs:
                self.write(k)
                self.write(v)
        else:
            raise TypeError(type(x))


def save_t7(obj, path) -> None:
    with open(path, "wb") as f:
        Writer(f).write(obj)


# ----------------------------------------------------------------------------- nngraph
class Graph:
    """Builds nngraph forward nodes: ``node(module, parents)`` like ``module(parents)``."""

    def __init__(self):
        self.nodes: list[Obj] = []

    def node(self, module, parents=()):
        data = {"module": module} if module is not None else {}
        data["mapindex"] = Table([(i, p.fields["data"]) for i, p in enumerate(parents, 1)]
                                 + [(p.fields["data"], i) for i, p in enumerate(parents, 1)])
        data["annotations"] = {}
        n = Obj("nngraph.Node", {"data": data, "children": [], "id": len(self.nodes) + 1,
                                 "visited": False, "marked": False})
        for p in parents:
            p.fields["children"].append(n)
        self.nodes.append(n)
        return n

    def inputs(self, k):
        innode = self.node(None)
        if k == 1:
            return [self.node(Obj("nn.Identity"), [innode])]
        m = self.node(None, [innode])
        m.fields["data"]["nSplitOutputs"] = k
        sel = [self.node(None, [m]) for _ in range(k)]
        return [self.node(Obj("nn.Identity"), [s]) for s in sel]

    def gmodule(self, outputs, n_inputs):
        outnode = Obj("nngraph.Node", {"data": {"mapindex": Table([(i, o.fields["data"]) for i, o in enumerate(outputs, 1)]),
                                                "input": {}}, "children": list(outputs)})
        modules = [n.fields["data"]["module"] for n in self.nodes if "module" in n.fields["data"]]
        return Obj("nn.gModule", {"forwardnodes": self.nodes, "modules": modules, "outnode": outnode,
                                  "nInputs": n_inputs, "verbose": False})


def linear(w: np.ndarray, b: np.ndarray):
    return Obj("nn.Linear", {"weight": Tensor(w), "bias": Tensor(b), "gradWeight": Tensor(np.zeros_like(w)),
                             "gradBias": Tensor(np.zeros_like(b))})


def seq_linear(w, b):
    return Obj("nn.Sequential", {"modules": [linear(w, b)]})


def fixed_gru(W: dict, nstep: int, avg: bool):
    """modules/FixedGRU.lua; W[role] = (weight, bias) shared by every step."""
    g = Graph()
    x = g.inputs(nstep)
    hids = []
    for i in range(nstep):
        if i == 0:
            hids.append(g.node(Obj("nn.Tanh"), [g.node(seq_linear(*W["i2h"]), [x[0]])]))
            continue
        def lin(role, inp):
            return g.node(seq_linear(*W[role]), [inp])
        update = g.node(Obj("nn.Sigmoid"), [g.node(Obj("nn.CAddTable"), [lin("i2h_update", x[i]), lin("h2h_update", hids[-1])])])
        reset = g.node(Obj("nn.Sigmoid"), [g.node(Obj("nn.CAddTable"), [lin("i2h_reset", x[i]), lin("h2h_reset", hids[-1])])])
        gated = g.node(Obj("nn.CMulTable"), [reset, hids[-1]])
        cand = g.node(Obj("nn.Tanh"), [g.node(Obj("nn.CAddTable"), [lin("i2h", x[i]), lin("h2h", gated)])])
        zh = g.node(Obj("nn.CMulTable"), [update, cand])
        one_minus = g.node(Obj("nn.AddConstant", {"constant_scalar": 1}), [g.node(Obj("nn.MulConstant", {"constant_scalar": -1}), [update])])
        zhm1 = g.node(Obj("nn.CMulTable"), [one_minus, hids[-1]])
        hids.append(g.node(Obj("nn.CAddTable"), [zh, zhm1]))
    if avg:
        s = hids[0]
        for h in hids[1:]:
            s = g.node(Obj("nn.CAddTable"), [s, h])
        out = g.node(Obj("nn.MulConstant", {"constant_scalar": 1.0 / nstep}), [s])
    else:
        out = hids[-1]
    return g.gmodule([out], nstep)


def temporal_conv(w_torch: np.ndarray, b: np.ndarray, cin: int, cout: int, kw: int = 4):
    return Obj("nn.TemporalConvolution", {"weight": Tensor(w_torch), "bias": Tensor(b), "kW": kw, "dW": 1,
                                          "inputFrameSize": cin, "outputFrameSize": cout})


def hybrid_cnn_long(convs, rnn_gmodule, out_w, out_b):
    """modules/HybridCNNLong.lua around a recurrent gModule; convs = [(w_torch, b, cin, cout)] * 3."""
    net = Obj("nn.Sequential", {"modules": [
        temporal_conv(*convs[0]), Obj("nn.Threshold", {"threshold": 1e-6, "val": 0}), Obj("nn.TemporalMaxPooling", {"kW": 3, "dW": 3}),
        temporal_conv(*convs[1]), Obj("nn.Threshold", {"threshold": 1e-6, "val": 0}), Obj("nn.TemporalMaxPooling", {"kW": 3, "dW": 3}),
        temporal_conv(*convs[2]), Obj("nn.Threshold", {"threshold": 1e-6, "val": 0})]})
    g = Graph()
    (inp,) = g.inputs(1)
    h = g.node(Obj("nn.SplitTable", {"dimension": 2}), [g.node(net, [inp])])
    r = g.node(rnn_gmodule, [h])
    out = g.node(linear(out_w, out_b), [g.node(Obj("nn.Dropout", {"p": 0.0}), [r])])
    return g.gmodule([out], 1)
