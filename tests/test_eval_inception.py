"""FID/KID/IS with the FID Inception-v3 from a local file: parity with torch-fidelity and pytorch-fid.

The real weights cannot be downloaded here, so the tests save a randomly initialised network
of the same architecture (pytorch-fid's FID Inception, BatchNorm statistics calibrated on
one random batch so activations have unit scale) in the real file's format, and check that
t2igan's features and metrics equal what torch-fidelity and pytorch-fid compute from it.

Tolerances (measured on this CPU): features are bitwise equal to torch-fidelity's and
within 1e-4 relative of pytorch-fid's network run on the same preprocessed input; FID and
IS within 1e-6 relative of torch-fidelity's and pytorch-fid's (float64 statistics in all;
torchmetrics returns FID as float32); KID within 1e-6 absolute (it is a small difference
of float32 kernel sums in both libraries, ~1e-4 relative).
"""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from t2igan import T2IError

pytest.importorskip("torch_fidelity")
pfi = pytest.importorskip("pytorch_fid.inception")


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    for name, cls, args in [("Mixed_5b", pfi.FIDInceptionA, (192, 32)), ("Mixed_5c", pfi.FIDInceptionA, (256, 64)),
                            ("Mixed_5d", pfi.FIDInceptionA, (288, 64)), ("Mixed_6b", pfi.FIDInceptionC, (768, 128)),
                            ("Mixed_6c", pfi.FIDInceptionC, (768, 160)), ("Mixed_6d", pfi.FIDInceptionC, (768, 160)),
                            ("Mixed_6e", pfi.FIDInceptionC, (768, 192)), ("Mixed_7b", pfi.FIDInceptionE_1, (1280,)),
                            ("Mixed_7c", pfi.FIDInceptionE_2, (2048,))]:
        setattr(net, name, cls(*args))  # as pytorch_fid.inception.fid_inception_v3 builds it
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 299, 299) * 2 - 1)
        for m in net.Mixed_7c.modules():  # pool features of order 1 (not ~100): well-scaled KID / IS
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(0.01)
                m.bias.mul_(0.01)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.eval().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ours(inception_file):
    from t2igan.eval.inception import InceptionFeatures

    return InceptionFeatures.from_file(inception_file)


def _images(n, seed, size=32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8).float()
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return (x + torch.randint(-20, 21, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def feats(ours):
    return ours.features(_images(20, 0))


@pytest.mark.slow
def test_features_equal_torch_fidelity_and_pytorch_fid(inception_file, ours, feats, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = _images(20, 0)
    f = feats
    assert f["2048"].shape == (20, 2048) and f["logits_unbiased"].shape == (20, 1008)
    assert f["2048"].std(0).mean() > 0.01 * f["2048"].abs().mean()  # the random network separates images
    tf = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                     feature_extractor_weights_path=str(inception_file))
    with torch.no_grad():
        tf_pool, tf_logits = tf(x)
    assert torch.equal(f["2048"], tf_pool) and torch.equal(f["logits_unbiased"], tf_logits)
    # pytorch-fid's network (loaded from the same file) on the same preprocessed input
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: torch.load(inception_file, weights_only=True))
    pf = pfi.InceptionV3([3], resize_input=False, normalize_input=False, use_fid_inception=True).eval()
    inp = (interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False) - 128) / 128
    with torch.no_grad():
        pf_pool = pf(inp)[0].squeeze(-1).squeeze(-1)
    assert torch.allclose(f["2048"], pf_pool, rtol=1e-4, atol=1e-4 * float(pf_pool.abs().max()))
    # float input in [0, 1] is rounded to uint8 first: the same 4 images as uint8 and as float, in one
    # setting (the 20-image features above may come from another batch size / thread count, whose
    # float reductions differ in the last bits)
    with torch.no_grad():
        as_float, as_uint8 = ours.features(x[:4].float() / 255)["2048"], ours.features(x[:4])["2048"]
    assert torch.equal(as_float, as_uint8)
    torch.testing.assert_close(as_uint8, f["2048"][:4], rtol=1e-4, atol=1e-4 * float(as_uint8.abs().max()))


@pytest.mark.slow
def test_inception_score_matches_torch_fidelity_formula(feats):
    from torch_fidelity.metric_isc import isc_features_to_metric

    from t2igan.eval.metrics import inception_score

    logits = feats["logits_unbiased"]
    res = inception_score(logits, splits=10, seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        idx = torch.randperm(20)  # the shuffle torchmetrics draws
    ref = isc_features_to_metric(logits[idx], splits=10, shuffle=False)
    assert math.isclose(res["mean"], ref["inception_score_mean"], rel_tol=1e-6)
    # torchmetrics' std is unbiased (ddof=1), torch-fidelity's is ddof=0
    assert math.isclose(res["std"], ref["inception_score_std"] * math.sqrt(10 / 9), rel_tol=1e-5)


def _write_folder(d, imgs):
    d.mkdir()
    for i, a in enumerate(imgs.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(a).save(d / f"{i:03d}.png")
    return d


@pytest.mark.slow
def test_folder_scores_match_torch_fidelity(tmp_path, inception_file):
    import torch_fidelity

    from t2igan.eval.images import score_folders

    gen = _write_folder(tmp_path / "gen", _images(12, 2))
    ref = _write_folder(tmp_path / "ref", _images(12, 3))
    kw = dict(kid_subset_size=12, kid_subsets=1, is_splits=1)
    res = score_folders(gen, ref, inception_file, cache_dir=tmp_path / "cache", progress=False, **kw)
    tf = torch_fidelity.calculate_metrics(input1=str(gen), input2=str(ref), cuda=False, fid=True, kid=True, isc=True,
                                          kid_subset_size=12, kid_subsets=1, isc_splits=1, cache=False, verbose=False,
                                          feature_extractor_weights_path=str(inception_file), samples_find_ext="png")
    assert res["fid"] > 1.0
    assert math.isclose(res["fid"], tf["frechet_inception_distance"], rel_tol=1e-5)
    # KID of 12 vs 12 images is ~3e-4 here; the two feature passes agree to float rounding, which moves
    # it by ~1e-6 (thread count / batch size), while a formula error would move it by its own size
    assert math.isclose(res["kid"]["mean"], tf["kernel_inception_distance_mean"], abs_tol=1e-5)
    assert math.isclose(res["is"]["mean"], tf["inception_score_mean"], rel_tol=1e-5) and res["is"]["mean"] > 1.0001
    assert res["feature_extractor"]["weights_sha256"] and res["reference_cache"]["hit"] is False
    assert "note" in res  # fewer than 2048 samples is flagged
    again = score_folders(gen, ref, inception_file, cache_dir=tmp_path / "cache", progress=False, **kw)
    assert again["reference_cache"]["hit"] is True and again["fid"] == res["fid"]
    assert not list((tmp_path / "cache" / "ref_features").glob(".*tmp*"))  # written atomically, nothing left over


def test_fid_statistics_match_torch_fidelity_and_pytorch_fid():
    """The FID / KID torchmetrics computes from features equals torch-fidelity's and pytorch-fid's
    (full-rank features: 256-d, 600 samples, so it runs in seconds; the formulas do not depend on d)."""
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    from t2igan.eval.metrics import FeatureStats

    g = torch.Generator().manual_seed(0)
    A = torch.randn(256, 256, generator=g) / 16
    real = torch.randn(600, 256, generator=g) @ A + 0.3
    fake = (torch.randn(600, 256, generator=g) @ A) * 1.1 + 0.32
    st = FeatureStats(256, kid_subset_size=600, kid_subsets=1)
    st.update(real, real=True)
    st.update(fake, real=False)
    res = st.compute(seed=0)
    s_r, s_f = fid_features_to_statistics(real), fid_features_to_statistics(fake)
    tf_fid = fid_statistics_to_metric(s_f, s_r, False)["frechet_inception_distance"]
    pf_fid = calculate_frechet_distance(s_f["mu"], s_f["sigma"], s_r["mu"], s_r["sigma"])
    assert res["fid"] > 10
    assert math.isclose(res["fid"], tf_fid, rel_tol=1e-6) and math.isclose(res["fid"], pf_fid, rel_tol=1e-6)
    tf_kid = kid_features_to_metric(fake, real, kid_subsets=1, kid_subset_size=600, verbose=False, rng_seed=0,
                                    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                    kid_kernel_poly_coef0=1)
    # KID is a small difference of kernel sums computed in float32 by both: equal to 1e-6 absolute
    # (measured: 1.99e-3 vs 1.99e-3, difference 2.4e-7)
    assert res["kid_mean"] > 1e-4
    assert math.isclose(res["kid_mean"], tf_kid["kernel_inception_distance_mean"], abs_tol=1e-6)


def test_weights_errors(tmp_path, monkeypatch):
    from t2igan.eval.inception import ENV_VAR, InceptionFeatures

    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(T2IError, match="--inception-weights PATH or set T2IGAN_INCEPTION_WEIGHTS"):
        InceptionFeatures.from_file(None)
    with pytest.raises(T2IError, match=r"not found: .*nope\.pth.*pt_inception-2015-12-05-6726825d\.pth"):
        InceptionFeatures.from_file(tmp_path / "nope.pth")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env.pth"))
    with pytest.raises(T2IError, match=f"env.pth \\(from {ENV_VAR}\\)"):
        InceptionFeatures.from_file(None)
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"\x00not a torch file" * 4)
    with pytest.raises(T2IError, match="not a readable PyTorch weights file"):
        InceptionFeatures.from_file(bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "fc.weight": torch.zeros(10, 2048)}, wrong)
    with pytest.raises(T2IError, match=r"no 'Mixed_7c.branch_pool.conv.weight'"):
        InceptionFeatures.from_file(wrong)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "fc.bias": torch.zeros(1008),
                "Mixed_7c.branch_pool.conv.weight": torch.zeros(192, 2048, 1, 1), "fc.weight": torch.zeros(1000, 2048)}, wrong)
    with pytest.raises(T2IError, match=r"'fc.weight' has shape \(1000, 2048\), expected \(1008, 2048\)"):
        InceptionFeatures.from_file(wrong)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "fc.bias": torch.zeros(1008),
                "Mixed_7c.branch_pool.conv.weight": torch.zeros(192, 2048, 1, 1), "fc.weight": torch.zeros(1008, 2048)}, wrong)
    with pytest.raises(T2IError, match="weights do not fit the FID Inception-v3"):
        InceptionFeatures.from_file(wrong)  # right shapes for the checked keys, the rest missing


def test_folder_errors(tmp_path):
    from t2igan.eval.images import list_images, load_images

    (tmp_path / "empty").mkdir()
    with pytest.raises(T2IError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(T2IError, match="image folder not found"):
        list_images(tmp_path / "missing")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 32)).save(mixed / "a.png")
    Image.new("RGB", (48, 32)).save(mixed / "b.png")
    with pytest.raises(T2IError, match=r"mixed sizes: .*b\.png is 48x32 but .*a\.png is 32x32"):
        load_images(list_images(mixed))
    (mixed / "b.png").unlink()
    (mixed / "c.png").write_bytes(b"not a png")
    with pytest.raises(T2IError, match="cannot read image"):
        load_images(list_images(mixed))
