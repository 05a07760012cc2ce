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
