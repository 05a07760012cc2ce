"""FSD / FSS: face semantic distance and similarity between each generated face and its ground truth.

FTGAN (Chen et al., 2019) and MAST score text-to-face models on pairs (generated image, the real
image whose caption produced it): with a face embedding e(.),

    FSD = (1/N) sum_i || e(gen_i) - e(real_i) ||_1        (L1 norm of the embedding difference)
    FSS = (1/N) sum_i cos(e(gen_i), e(real_i))

``FSD_L2`` (the Euclidean distance, the metric dlib's 0.6 same-person threshold is set on) is
reported beside them. Embedders: dlib's face ResNet (128-d; HOG frontal face detector + 5-point
shape predictor, model files from the ``face-recognition-models`` package, read from disk only),
or the attribute evaluator's penultimate features (the FID-SF feature space). ``auto`` uses dlib
for a pair when dlib finds a face in both images, else the evaluator features for that pair.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from t2igan import T2IError

FACE_PROTOCOL = ("pairs (generated image k, the real image whose caption produced it); FSD = mean over pairs of the "
                 "L1 norm of the embedding difference (FTGAN), FSD_L2 = mean Euclidean distance, FSS = mean cosine "
                 "similarity; embedder dlib: HOG frontal face detector (upsample 1), 5-point shape predictor, "
                 "dlib_face_recognition_resnet_model_v1 (128-d) on the largest detected face, images as uint8 RGB at "
                 "the generated size; evaluator: the attribute evaluator's penultimate features; auto: dlib where it "
                 "detects a face in both images of the pair, else the evaluator features")


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _as_u8_hwc(images: torch.Tensor):
    """float [B, 3, H, W] in [0, 1] or uint8 [B, 3, H, W] -> numpy uint8 [B, H, W, 3]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise T2IError(f"face embedder: images must be [B, 3, H, W], got {list(images.shape)}")
    if images.dtype != torch.uint8:
        images = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class DlibFaceEmbedder:
    """dlib face ResNet embeddings; ``embed`` returns (features [B, 128], detected [B] bool)."""

    name = "dlib_face_recognition_resnet_model_v1"

    def __init__(self, recognition_model=None, shape_predictor=None, upsample: int = 1):
        try:
            import dlib
        except ImportError as e:
            raise T2IError("dlib is not installed: pip install 't2igan[face]' (dlib-bin, face-recognition-models)") from e
        if recognition_model is None or shape_predictor is None:
            import importlib.util

            spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources
            if spec is None or not spec.submodule_search_locations:
                raise T2IError("face-recognition-models is not installed: pip install 't2igan[face]'")
            models = Path(list(spec.submodule_search_locations)[0]) / "models"
            recognition_model = recognition_model or models / "dlib_face_recognition_resnet_model_v1.dat"
            shape_predictor = shape_predictor or models / "shape_predictor_5_face_landmarks.dat"
        for p in (recognition_model, shape_predictor):
            if not Path(p).is_file():
                raise T2IError(f"dlib model file not found: {p}")
        self.model_path, self.predictor_path = str(recognition_model), str(shape_predictor)
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(self.predictor_path)
        self.model = dlib.face_recognition_model_v1(self.model_path)
        self.upsample = int(upsample)
        self.dlib_version = getattr(dlib, "__version__", "unknown")

    def describe(self) -> dict:
        return {"name": self.name, "model_file": self.model_path, "model_sha256": _sha256(self.model_path),
                "shape_predictor_file": self.predictor_path, "shape_predictor_sha256": _sha256(self.predictor_path),
                "detector": f"dlib.get_frontal_face_detector (upsample {self.upsample})",
                "dlib_version": self.dlib_version, "feature_dim": 128}

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        arr = _as_u8_hwc(images)
        feats = torch.zeros(len(arr), 128)
        found = torch.zeros(len(arr), dtype=torch.bool)
        for i, img in enumerate(arr):
            dets = self.detector(img, self.upsample)
            if len(dets) == 0:
                continue
            box = max(dets, key=lambda r: r.width() * r.height())
            shape = self.predictor(img, box)
            feats[i] = torch.tensor(list(self.model.compute_face_descriptor(img, shape)), dtype=torch.float32)
            found[i] = True
        return feats, found


class EvaluatorFaceEmbedder:
    """The attribute evaluator's penultimate features (``EvaluatorFeatures``, the FID-SF space)."""

    name = "attribute_evaluator_features"

    def __init__(self, evaluator):
        from t2igan.eval.metrics import EvaluatorFeatures

        self.evaluator = evaluator
        self.extractor = EvaluatorFeatures(evaluator)

    def describe(self) -> dict:
        from t2igan.eval.evaluator import weights_digest

        return {"name": self.name, "model_file": self.evaluator.source_dir,
                "model_sha256": weights_digest(self.evaluator), "feature_dim": int(self.evaluator.feature_dim)}

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dev = next(self.evaluator.parameters()).device
        f = self.extractor(_as_float(images).to(dev)).float().cpu()
        self.extractor.clear()
        return f, torch.ones(len(f), dtype=torch.bool)


class AutoFaceEmbedder:
    """dlib for a pair where it detects a face in both images, the evaluator features otherwise."""

    name = "auto"

    def __init__(self, evaluator=None, dlib_embedder: DlibFaceEmbedder | None = None):
        self.fallback = EvaluatorFaceEmbedder(evaluator) if evaluator is not None else None
        self.dlib = dlib_embedder
        self.dlib_error = None
        if self.dlib is None:
            try:
                self.dlib = DlibFaceEmbedder()
            except T2IError as e:
                self.dlib_error = str(e)
        if self.dlib is None and self.fallback is None:
            raise T2IError(f"face metrics: {self.dlib_error}, and no attribute evaluator to fall back on")

    def describe(self) -> dict:
        return {"name": self.name, "dlib": self.dlib.describe() if self.dlib is not None else self.dlib_error,
                "fallback": self.fallback.describe() if self.fallback is not None else None}


def _pair_scores(g: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g, r = g.double(), r.double()
    return ((g - r).abs().sum(1), (g - r).norm(dim=1),
            torch.nn.functional.cosine_similarity(g, r, dim=1, eps=1e-12))


def fsd_from_embeddings(gen: torch.Tensor, real: torch.Tensor) -> dict:
    """FSD (mean L1), FSD_L2 (mean L2), FSS (mean cosine) of paired embeddings [N, D]."""
    if gen.shape != real.shape or gen.dim() != 2 or len(gen) == 0:
        raise T2IError(f"face metrics: paired embeddings must be two equal non-empty [N, D], got "
                       f"{list(gen.shape)} and {list(real.shape)}")
    l1, l2, cos = _pair_scores(gen, real)
    return {"FSD": float(l1.mean()), "FSD_L2": float(l2.mean()), "FSS": float(cos.mean())}


def fsd_fss(generated: torch.Tensor, real: torch.Tensor, embedder, batch_size: int = 100) -> dict:
    """FSD / FSS of generated images [N, 3, H, W] against their ground-truth real images (same order).

    Images: float in [0, 1] or uint8. Returns FSD, FSD_L2, FSS, the embedder, its model file SHA-256
    and counts (pairs, faces detected, pairs per embedder).
    """
    if len(generated) != len(real) or len(generated) == 0:
        raise T2IError(f"face metrics: {len(generated)} generated images and {len(real)} real images; "
                       "need the same non-zero number (one ground truth per generated image)")
    gf, gd, rf, rd, ef, er = [], [], [], [], [], []
    primary = embedder.dlib if isinstance(embedder, AutoFaceEmbedder) else embedder
    fallback = embedder.fallback if isinstance(embedder, AutoFaceEmbedder) else None
    for s in range(0, len(generated), batch_size):
        g, r = generated[s:s + batch_size], real[s:s + batch_size]
        if primary is not None:
            a, da = primary.embed(g)
            b, db = primary.embed(r)
        else:
            a = b = None
            da = db = torch.zeros(len(g), dtype=torch.bool)
        gf.append(a)
        gd.append(da)
        rf.append(b)
        rd.append(db)
        if fallback is not None and not bool((da & db).all()):
            ef.append(fallback.embed(g)[0])
            er.append(fallback.embed(r)[0])
        else:
            ef.append(None)
            er.append(None)
    gdet, rdet = torch.cat(gd), torch.cat(rd)
    both = gdet & rdet
    n = len(generated)
    out = {"n_pairs": n, "generated_faces_detected": int(gdet.sum()), "real_faces_detected": int(rdet.sum())}
    if isinstance(embedder, AutoFaceEmbedder):
        parts_l1, parts_l2, parts_cos = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), \
            torch.zeros(n, dtype=torch.float64)
        pos = 0
        for a, b, c, d, m in zip(gf, rf, ef, er, both.split(batch_size)):
            k = len(m)
            sl = slice(pos, pos + k)
            if a is not None and bool(m.any()):
                l1, l2, cos = _pair_scores(a[m], b[m])
                idx = torch.arange(pos, pos + k)[m]
                parts_l1[idx], parts_l2[idx], parts_cos[idx] = l1, l2, cos
            if not bool(m.all()):
                if c is None:
                    raise T2IError(f"face metrics: dlib found no face in {int((~m).sum())} pair(s) and there is no "
                                   "attribute evaluator to fall back on (--evaluator)")
                l1, l2, cos = _pair_scores(c[~m], d[~m])
                idx = torch.arange(pos, pos + k)[~m]
                parts_l1[idx], parts_l2[idx], parts_cos[idx] = l1, l2, cos
            del sl
            pos += k
        out.update({"FSD": float(parts_l1.mean()), "FSD_L2": float(parts_l2.mean()), "FSS": float(parts_cos.mean()),
                    "embedder": "auto", "pairs_by_embedder": {
                        DlibFaceEmbedder.name: int(both.sum()), EvaluatorFaceEmbedder.name: int((~both).sum())}})
        desc = embedder.describe()
        out["model_sha256"] = {k: v["model_sha256"] for k, v in (("dlib", desc["dlib"]), ("evaluator", desc["fallback"]))
                               if isinstance(v, dict)}
        out["embedder_details"] = desc
        if embedder.dlib is None:
            out["note"] = f"dlib unavailable ({embedder.dlib_error}): every pair used the evaluator features"
        return out
    if isinstance(embedder, DlibFaceEmbedder) and not bool(both.all()):
        raise T2IError(f"face metrics (dlib): no face detected in {int((~both).sum())} of {n} pairs; use "
                       "--face-metrics auto to score those pairs with the attribute evaluator features")
    out.update(fsd_from_embeddings(torch.cat(gf), torch.cat(rf)))
    desc = embedder.describe()
    out.update({"embedder": embedder.name, "model_sha256": desc["model_sha256"],
                "pairs_by_embedder": {embedder.name: n}, "embedder_details": desc})
    return out


def make_face_embedder(kind: str, evaluator=None):
    """'dlib' | 'evaluator' | 'auto' -> an embedder for ``fsd_fss``."""
    if kind == "dlib":
        return DlibFaceEmbedder()
    if kind == "evaluator":
        if evaluator is None:
            raise T2IError("--face-metrics evaluator needs an attribute evaluator (--evaluator DIR)")
        return EvaluatorFaceEmbedder(evaluator)
    if kind == "auto":
        return AutoFaceEmbedder(evaluator)
    raise T2IError(f"--face-metrics must be dlib, evaluator or auto, got {kind!r}")
