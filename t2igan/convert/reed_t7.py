"""Convert Reed et al.'s Torch7 char-CNN-RNN checkpoints (``.t7``) into :class:`CharCNNRNN`.

The ``.t7`` files of ``reedscot/icml2016`` / ``cvpr2016`` (e.g.
``lm_sje_nc4_cub_hybrid_gru18_a1_c512_0.00070_1_10_trainvalids.txt_iter30000.t7``) hold a
table ``{protos = {enc_doc = nn.gModule, enc_image = ...}, opt = ...}`` or the text
``nn.gModule`` itself. They are read with the ``torchfile`` package (``pip install
"t2igan[t7]"``), which parses Torch7's binary serialisation without running Lua code.

Mapping (the nngraph built by ``HybridCNNLong.cnn`` / ``HybridCNN.cnn``):

* the three ``nn.TemporalConvolution`` (in ``nn.Sequential`` order): weight
  ``[out, kW * in]`` (frames of ``in`` values, ``kW`` of them concatenated) ->
  ``conv{1,2,3}.weight = w.view(out, kW, in).permute(0, 2, 1)``; bias as is;
* the nested recurrent ``nn.gModule`` (FixedGRU / FixedRNN): every step has its own
  ``nn.Linear`` sharing one weight storage; each Linear's role is read from the graph
  (``node.data.mapindex`` lists a node's parents, ``node.children`` its consumers):
  input-to-hidden if its input is one of the graph's input nodes, hidden-to-hidden
  otherwise; through ``CAddTable`` into ``Sigmoid`` it is a gate — the *update* gate when
  that Sigmoid also feeds ``MulConstant`` (``1 - z``), else the *reset* gate; into ``Tanh``
  (GRU) or ``ReLU`` (RNN) it is the candidate. All copies of a role must hold equal values;
* the output ``nn.Linear(cnn_dim, emb_dim)`` of the outer graph.

Every target parameter must be filled and every source weight used, or the conversion
fails naming what is missing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from t2igan import T2IError
from t2igan.text.char_cnn_rnn import DOC_LENGTH, CharCNNRNN, num_steps

NOT_REED = "not Reed's char-CNN-RNN text encoder"


def _s(x) -> str:
    return x.decode("latin1") if isinstance(x, bytes) else str(x)


def _typename(obj) -> str | None:
    f = getattr(obj, "torch_typename", None)
    return _s(f()) if callable(f) else None


def _get(obj, key):
    """Field of a TorchObject or table, whatever the key's str/bytes spelling."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key, obj.get(key.encode()))
    try:
        return obj[key]
    except (KeyError, TypeError):
        return None


def _items(x) -> list:
    if x is None:
        return []
    if isinstance(x, list):
        return x
    if isinstance(x, dict):  # a Lua array that torchfile kept as a table
        return [x[k] for k in sorted(k for k in x if isinstance(k, int))]
    return []


def _arr(t, what: str) -> np.ndarray:
    if not isinstance(t, np.ndarray):
        raise T2IError(f"{NOT_REED}: {what} is not a tensor")
    return np.ascontiguousarray(t, dtype=np.float32)


def read_t7(path: str | os.PathLike):
    try:
        import torchfile
    except ImportError:
        raise T2IError('reading .t7 files needs the torchfile package: pip install "t2igan[t7]"') from None
    p = Path(path)
    if not p.is_file():
        raise T2IError(f".t7 file not found: {p}")
    try:
        return torchfile.load(str(p))
    except Exception as e:  # truncated or foreign files raise struct/Value/Memory errors and more
        raise T2IError(f"{p}: not a readable Torch7 file ({e.__class__.__name__}: {str(e)[:80]})") from None


def text_graph(obj, source: str):
    """The text encoder gModule inside a checkpoint object."""
    protos = _get(obj, "protos") if isinstance(obj, dict) else None
    if protos is not None:
        obj = _get(protos, "enc_doc")
    if _typename(obj) != "nn.gModule":
        got = _typename(obj) or type(obj).__name__
        raise T2IError(f"{source}: {NOT_REED} (expected an nn.gModule or a checkpoint with protos.enc_doc, found {got})")
    return obj


def _walk(module, out: list) -> None:
    """Modules in order; nested nn.Sequential/nn.gModule are entered (gModules kept as themselves too)."""
    t = _typename(module)
    if t == "nn.Sequential":
        for m in _items(_get(module, "modules")):
            _walk(m, out)
        return
    out.append(module)


def _linear_of(module):
    t = _typename(module)
    if t == "nn.Linear":
        return module
    if t == "nn.Sequential":
        inner = _items(_get(module, "modules"))
        if len(inner) == 1 and _typename(inner[0]) == "nn.Linear":
            return inner[0]
    return None


def _rnn_roles(g, source: str) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]], bool, int]:
    """(rnn_type, {role: (weight, bias)}, avg, nsteps) of the recurrent gModule."""
    nodes = _items(_get(g, "forwardnodes"))
    if not nodes:
        raise T2IError(f"{source}: {NOT_REED} (recurrent gModule without forwardnodes)")
    data_to_node = {id(_get(n, "data")): n for n in nodes}

    def mod(n):
        return _get(_get(n, "data"), "module")

    def parents(n):
        mi = _get(_get(n, "data"), "mapindex")
        return [data_to_node.get(id(d)) for d in _items(mi)]

    def children(n):
        return _items(_get(n, "children"))

    def tname(n):
        return _typename(mod(n)) if mod(n) is not None else None

    # the graph's inputs: nn.Identity nodes fed only by nngraph's module-less input/split nodes
    input_nodes = {id(n) for n in nodes if tname(n) == "nn.Identity"
                   and all(p is None or mod(p) is None for p in parents(n))}
    kinds = {tname(n) for n in nodes}
    rnn_type = "gru" if "nn.Sigmoid" in kinds else "rnn"
    roles: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for n in nodes:
        lin = _linear_of(mod(n)) if mod(n) is not None else None
        if lin is None:
            continue
        ps = parents(n)
        side = "i2h" if ps and all(p is not None and id(p) in input_nodes for p in ps) else "h2h"
        nxt = children(n)
        if len(nxt) == 1 and tname(nxt[0]) == "nn.CAddTable":
            nxt = children(nxt[0])
        nxt_types = {tname(c) for c in nxt}
        if nxt_types == {"nn.Sigmoid"}:
            after = {tname(c) for s in nxt for c in children(s)}
            role = f"{side}_update" if "nn.MulConstant" in after else f"{side}_reset"
        elif nxt_types <= {"nn.Tanh", "nn.ReLU"} and nxt_types:
            role = side
        else:
            raise T2IError(f"{source}: {NOT_REED} (a recurrent Linear feeds {sorted(t or '?' for t in nxt_types)})")
        w, b = _arr(_get(lin, "weight"), f"{role}.weight"), _arr(_get(lin, "bias"), f"{role}.bias")
        roles.setdefault(role, []).append((w, b))
    merged = {}
    for role, copies in roles.items():
        w0, b0 = copies[0]
        for w, b in copies[1:]:
            if w.shape != w0.shape or not (np.array_equal(w, w0) and np.array_equal(b, b0)):
                raise T2IError(f"{source}: {NOT_REED} (the step copies of {role} do not share weights)")
        merged[role] = (w0, b0)
    out_node = _get(g, "outnode")
    out_parents = parents(out_node) if out_node is not None else []
    avg = any(tname(p) == "nn.MulConstant" for p in out_parents if p is not None) or rnn_type == "rnn"
    nsteps = len(input_nodes)
    return rnn_type, merged, avg, nsteps


def convert_char_cnn_rnn(path: str | os.PathLike, doc_length: int = DOC_LENGTH) -> CharCNNRNN:
    """Read a Reed char-CNN-RNN ``.t7`` and return the equivalent :class:`CharCNNRNN` (eval mode)."""
    source = str(path)
    g = text_graph(read_t7(path), source)
    flat: list = []
    for m in _items(_get(g, "modules")):
        _walk(m, flat)
    types = [_typename(m) for m in flat]
    convs = [m for m, t in zip(flat, types) if t == "nn.TemporalConvolution"]
    pools = types.count("nn.TemporalMaxPooling")
    inner = [m for m, t in zip(flat, types) if t == "nn.gModule"]
    linears = [m for m, t in zip(flat, types) if t == "nn.Linear"]
    if len(convs) != 3 or len(inner) != 1 or len(linears) != 1 or pools not in (2, 3):
        raise T2IError(f"{source}: {NOT_REED} (expected 3 TemporalConvolution, 2 or 3 TemporalMaxPooling, a recurrent "
                       f"gModule and one output Linear; found {len(convs)}, {pools}, {len(inner)}, {len(linears)})")
    variant = "long" if pools == 2 else "short"
    conv_w = []
    for k, c in enumerate(convs, 1):
        w, b = _arr(_get(c, "weight"), f"conv{k}.weight"), _arr(_get(c, "bias"), f"conv{k}.bias")
        kw, cin, cout = int(_get(c, "kW")), int(_get(c, "inputFrameSize")), int(_get(c, "outputFrameSize"))
        if w.shape != (cout, kw * cin) or b.shape != (cout,) or kw != 4:
            raise T2IError(f"{source}: {NOT_REED} (TemporalConvolution {k} weight {list(w.shape)}, kW={kw})")
        conv_w.append((torch.from_numpy(w.reshape(cout, kw, cin).transpose(0, 2, 1).copy()), torch.from_numpy(b.copy())))
    rnn_type, roles, avg, nsteps = _rnn_roles(inner[0], source)
    if num_steps(doc_length, variant) != nsteps:
        raise T2IError(f"{source}: the recurrent net has {nsteps} steps but doc_length={doc_length} gives "
                       f"{num_steps(doc_length, variant)}; pass the doc_length the model was trained with")
    lw, lb = _arr(_get(linears[0], "weight"), "linear.weight"), _arr(_get(linears[0], "bias"), "linear.bias")
    model = CharCNNRNN(alphasize=conv_w[0][0].shape[1], emb_dim=lw.shape[0], cnn_dim=conv_w[2][0].shape[0],
                       rnn_type=rnn_type, avg=avg, dropout=0.0, doc_length=doc_length, variant=variant)
    state = {}
    for k, (w, b) in enumerate(conv_w, 1):
        state[f"conv{k}.weight"], state[f"conv{k}.bias"] = w, b
    for role, (w, b) in roles.items():
        state[f"rnn.{role}.weight"], state[f"rnn.{role}.bias"] = torch.from_numpy(w.copy()), torch.from_numpy(b.copy())
    state["linear.weight"], state["linear.bias"] = torch.from_numpy(lw.copy()), torch.from_numpy(lb.copy())
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise T2IError(f"{source}: {NOT_REED} (no weights found for {', '.join(missing[:4])})")
    unused = sorted(set(state) - set(own))
    if unused:
        raise T2IError(f"{source}: {NOT_REED} (weights with no place in the model: {', '.join(unused[:4])})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise T2IError(f"{source}: '{k}' has shape {list(v.shape)}, the model expects {list(own[k].shape)}")
    model.load_state_dict(state, strict=True)
    return model.eval()
