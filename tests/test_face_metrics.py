import math

import pytest
import torch

from t2igan import T2IError
from t2igan.eval.face import AutoFaceEmbedder, fsd_fss, fsd_from_embeddings


def test_fsd_fss_hand_computation():
    g = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    r = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    m = fsd_from_embeddings(g, r)
    assert m["FSD"] == pytest.approx((2.0 + 0.0) / 2)
    assert m["FSD_L2"] == pytest.approx((math.sqrt(2) + 0.0) / 2)
    assert m["FSS"] == pytest.approx((0.0 + 1.0) / 2)


def test_fsd_shape_mismatch_is_one_clear_error():
    with pytest.raises(T2IError):
        fsd_from_embeddings(torch.zeros(2, 3), torch.zeros(3, 3))


class _MeanColour:
    """Stands in for the evaluator features: the per-channel mean colour."""
    name = "attribute_evaluator_features"

    def embed(self, images):
        return images.float().mean((2, 3)) + 1.0, torch.ones(len(images), dtype=torch.bool)

    def describe(self):
        return {"name": self.name, "model_sha256": "x" * 64}


def test_identical_images_no_face_falls_back_to_evaluator():
    pytest.importorskip("dlib")
    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # noise: dlib finds no face
    emb = AutoFaceEmbedder(None)
    emb.fallback = _MeanColour()
    out = fsd_fss(imgs, imgs.clone(), emb)
    assert out["FSD"] == pytest.approx(0.0, abs=1e-9)
    assert out["FSS"] == pytest.approx(1.0)
    assert out["generated_faces_detected"] == 0
    assert out["pairs_by_embedder"] == {"dlib_face_recognition_resnet_model_v1": 0, "attribute_evaluator_features": 3}
    assert len(out["model_sha256"]["dlib"]) == 64


def test_eval_pairs_each_sample_with_its_own_real_image(tiny_data):
    """evaluate_pipeline(face=...): the oracle (each caption's own real image) scores FSD 0 / FSS 1 with
    the evaluator's features; noise does not; the counts and embedder are in the result and the table."""
    import torch
    from test_eval import NoisePipe, OraclePipe

    from t2igan.data.folder import load_folder
    from t2igan.eval.evaluator import AttributeEvaluator
    from t2igan.eval.face import make_face_embedder
    from t2igan.eval.run import evaluate_pipeline, format_table

    torch.manual_seed(0)
    ev = AttributeEvaluator(load_folder(tiny_data, "test").attribute_values, width=8, feature_dim=16, image_size=32)
    face = make_face_embedder("evaluator", ev)
    n = 24
    oracle = evaluate_pipeline(OraclePipe(tiny_data, "test", 32), tiny_data, None, splits=("test",), n_samples=n,
                               batch_size=10, face=face, progress=False)["splits"]["test"]["face"]
    assert oracle["n_pairs"] == n and oracle["pairs_by_embedder"] == {"attribute_evaluator_features": n}
    assert oracle["FSD"] == pytest.approx(0.0, abs=1e-4) and oracle["FSS"] == pytest.approx(1.0, abs=1e-5)
    res = evaluate_pipeline(NoisePipe(), tiny_data, None, splits=("test",), n_samples=n, batch_size=10, face=face,
                            progress=False)
    noise = res["splits"]["test"]["face"]
    assert noise["FSD"] > 100 * max(oracle["FSD"], 1e-7) and noise["FSS"] < oracle["FSS"] - 1e-3
    table = format_table(res)
    assert "FSD" in table and "FSS" in table and f"over {n} (generated, ground-truth) pairs" in table
