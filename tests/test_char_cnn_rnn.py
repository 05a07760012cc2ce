"""Reed's char-CNN-RNN: alphabet, shapes, SJE training, and the .t7 converter checked
against a NumPy re-implementation of the Lua forward pass on a .t7 file written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from t2igan import T2IError
from t2igan.families.sje import sje_loss
from t2igan.text.char_cnn_rnn import ALPHABET, CharCNNRNN, CharCNNRNNCaptionEncoder, encode_chars, num_steps

from conftest import tiny_overrides
from t7_writer import Obj, fixed_gru, hybrid_cnn_long, save_t7

pytest.importorskip("torchfile")


def test_alphabet_and_onehot():
    assert len(ALPHABET) == 70 and ALPHABET.count("-") == 2
    x = encode_chars(["Ab-é", "z" * 300], doc_length=201)
    assert x.shape == (2, 201, 70)
    assert x[0, 0, 0] == 1 and x[0, 1, 1] == 1  # lowercased
    assert x[0, 2, 59] == 1 and x[0, 2, 36] == 0  # '-' maps to its later position, as Reed's Lua dict
    assert x[0, 3].sum() == 0 and x[0, 4:].sum() == 0  # unknown character / padding: zero rows
    assert x[1].sum() == 201  # cut at doc_length


def test_shapes_and_steps():
    assert num_steps(201, "long") == 18 and num_steps(201, "short") == 8
    for rnn in ("gru", "rnn"):
        m = CharCNNRNN(emb_dim=24, cnn_dim=16, rnn_type=rnn).eval()
        emb, states = m(encode_chars(["a red flower", "a blue one"]))
        assert emb.shape == (2, 24) and states.shape == (2, 18, 16)
    enc = CharCNNRNNCaptionEncoder(CharCNNRNN(emb_dim=24, cnn_dim=16, variant="short"))
    f = enc.encode(["a red flower"])
    assert f.sentence.shape == (1, 24) and f.words.shape == (1, 8, 16) and f.mask.all()


def test_sje_loss_matches_reed_loop():
    torch.manual_seed(0)
    img, txt = torch.randn(5, 7), torch.randn(5, 7)
    loss, acc = sje_loss(img, txt, symmetric=True)

    def joint(fa, fb):  # JointEmbeddingLoss(fea_txt=fb, fea_img=fa, labels=1..B)
        B, tot = fa.shape[0], 0.0
        for i in range(B):
            for j in range(B):
                if j != i:
                    tot += max(0.0, float(fa[i] @ fb[j] - fa[i] @ fb[i] + 1))
        return tot / (B * B)

    assert abs(float(loss) - (joint(img, txt) + joint(txt, img))) < 1e-5


def test_sje_training_and_saved_encoder(tiny_data, tmp_path):
    from t2igan.train.run import build_training
    from t2igan.config import load_config
    from t2igan.text.spec import load_caption_encoder

    out = tmp_path / "sje"
    cfg = load_config(None, tiny_overrides(tiny_data, out, **{
        "model.emb_dim": 16, "model.cnn_dim": 8, "model.doc_length": 60, "image.width": 4, "image.image_size": 32}), task="sje")
    s = build_training(cfg, resume=False).fit()
    assert s["step"] == 2
    enc = load_caption_encoder(f"char-cnn-rnn:{out}")
    assert enc.sentence_dim == 16 and enc.model.doc_length == 60
    assert enc.encode(["red petals"]).sentence.shape == (1, 16)


# ----------------------------------------------------------------------------- .t7 conversion
def _reference_forward(onehot: np.ndarray, convs, W, avg: bool, out_w, out_b) -> np.ndarray:
    """Reed's Lua forward in NumPy, from Torch-layout weights."""
    x = onehot.astype(np.float64)  # (L, A)

    def tconv(x, w, b, kw=4):  # nn.TemporalConvolution: frame t sees x[t:t+kw] concatenated
        L = x.shape[0] - kw + 1
        return np.stack([w @ x[t:t + kw].reshape(-1) + b for t in range(L)])

    def thr(x):
        return np.where(x > 1e-6, x, 0.0)

    def pool(x, k=3, d=3):
        n = (x.shape[0] - k) // d + 1
        return np.stack([x[t * d:t * d + k].max(0) for t in range(n)])

    h = pool(thr(tconv(x, convs[0][0], convs[0][1])))
    h = pool(thr(tconv(h, convs[1][0], convs[1][1])))
    h = thr(tconv(h, convs[2][0], convs[2][1]))  # (S, cnn_dim)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    lin = lambda r, v: W[r][0] @ v + W[r][1]  # noqa: E731
    hid = np.tanh(lin("i2h", h[0]))
    hs = [hid]
    for t in range(1, h.shape[0]):
        z = sig(lin("i2h_update", h[t]) + lin("h2h_update", hid))
        r = sig(lin("i2h_reset", h[t]) + lin("h2h_reset", hid))
        c = np.tanh(lin("i2h", h[t]) + lin("h2h", r * hid))
        hid = z * c + (1 - z) * hid
        hs.append(hid)
    hid = np.mean(hs, 0) if avg else hid
    return out_w @ hid + out_b


def _write_reed_t7(path, avg=True, wrap=True, seed=0, cnn_dim=6, emb_dim=5, doc_length=60):
    rng = np.random.default_rng(seed)
    dims = [(70, 384), (384, 512), (512, cnn_dim)]
    convs = [((rng.standard_normal((co, 4 * ci)) * 0.1).astype(np.float32), (rng.standard_normal(co) * 0.1).astype(np.float32), ci, co)
             for ci, co in dims]
    W = {r: ((rng.standard_normal((cnn_dim, cnn_dim)) * 0.5).astype(np.float32), (rng.standard_normal(cnn_dim) * 0.1).astype(np.float32))
         for r in ("i2h_update", "h2h_update", "i2h_reset", "h2h_reset", "i2h", "h2h")}
    out_w = rng.standard_normal((emb_dim, cnn_dim)).astype(np.float32)
    out_b = rng.standard_normal(emb_dim).astype(np.float32)
    g = hybrid_cnn_long(convs, fixed_gru(W, num_steps(doc_length, "long"), avg), out_w, out_b)
    obj = {"protos": {"enc_doc": g, "enc_image": Obj("nn.gModule", {})}, "opt": {"doc_length": doc_length}} if wrap else g
    save_t7(obj, path)
    return convs, W, out_w, out_b


@pytest.mark.parametrize("avg,wrap", [(True, True), (False, False)])
def test_t7_converter_matches_lua_forward(tmp_path, avg, wrap):
    from t2igan.convert.reed_t7 import convert_char_cnn_rnn

    p = tmp_path / "lm_sje_hybrid_gru.t7"
    convs, W, out_w, out_b = _write_reed_t7(p, avg=avg, wrap=wrap)
    model = convert_char_cnn_rnn(p, doc_length=60)
    assert (model.rnn_type, model.avg, model.cnn_dim, model.emb_dim, model.nstep) == ("gru", avg, 6, 5, 2)
    caps = ["this bird has a red crown, white belly!", "a small yellow bird"]
    x = encode_chars(caps, 60)
    with torch.no_grad():
        got = model(x)[0].double().numpy()
    ref = np.stack([_reference_forward(x[i].numpy(), [(c[0], c[1]) for c in convs], W, avg, out_w, out_b) for i in range(2)])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_t7_cli_convert_and_wrong_files(tmp_path, capsys):
    from t2igan.cli import main
    from t2igan.convert.reed_t7 import convert_char_cnn_rnn
    from t2igan.text.spec import load_caption_encoder

    p = tmp_path / "reed.t7"
    _write_reed_t7(p)
    assert main(["convert", "t7", str(p), "--out", str(tmp_path / "conv"), "--doc-length", "60"]) == 0
    enc = load_caption_encoder(f"char-cnn-rnn:{tmp_path / 'conv'}")
    ref = convert_char_cnn_rnn(p, doc_length=60)
    assert torch.allclose(enc.encode(["a bird"]).sentence, ref(encode_chars(["a bird"], 60))[0])
    # a .t7 that is not Reed's model, a file that is not Torch7, a missing file, a wrong doc_length
    save_t7({"protos": {"enc_doc": Obj("nn.Sequential", {"modules": []})}}, tmp_path / "other.t7")
    (tmp_path / "junk.t7").write_bytes(b"\x07\x00\x00\x00garbage")
    for name, msg in [("other.t7", "not Reed's char-CNN-RNN"), ("junk.t7", "not a readable Torch7 file"),
                      ("missing.t7", "not found")]:
        assert main(["convert", "t7", str(tmp_path / name), "--out", str(tmp_path / "x")]) == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(T2IError, match="doc_length=201 gives 18"):
        convert_char_cnn_rnn(p)
