"""The server (t2igan.serve): every endpoint, every limit, bad input, dynamic batching."""
import base64
import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from t2igan.cli import main  # noqa: E402
from t2igan.pipeline import Pipeline  # noqa: E402
from t2igan.serve.app import Settings, create_app, parse_model_args  # noqa: E402
from t2igan.serve.batcher import Job, ModelWorker  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP = "this flower has red petals and a yellow center"


@pytest.fixture(scope="module")
def pipe(tiny_dfgan):
    return Pipeline.from_pretrained(tiny_dfgan)


def make(pipe, **kw):
    """App serving the tiny model as 'tiny' (default) and 'other'; returns (client, app)."""
    app = create_app({"tiny": pipe, "other": pipe}, Settings(**{"token": TOKEN, **kw}))
    return TestClient(app), app


@pytest.fixture(scope="module")
def served(pipe):
    client, app = make(pipe)
    yield client, app
    app.state.close()


def test_fused_upsample_setting_reaches_served_generator(tiny_dfgan):
    client, app = make(Pipeline.from_pretrained(tiny_dfgan), fused_upsample=True)
    try:
        assert all(b.fused_upsample for b in app.state.workers["tiny"].pipe.generator.GBlocks)
        r = client.post("/v1/generate", json={"captions": [CAP]}, headers=AUTH)
        assert r.status_code == 200, r.text
    finally:
        app.state.close()


def png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def reference(pipe, captions, seed, n):
    """Unbatched library call: uint8 [N, S, S, 3]."""
    return np.stack([np.asarray(im) for im in pipe(captions, seed=seed, n=n)])


def post(client, body, path="/v1/generate", **kw):
    return client.post(path, json=body, headers={**AUTH, **kw.pop("headers", {})}, **kw)


def assert_error(r, status, *words):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for w in words:
        assert w in body["error"], body["error"]


def still_serving(client):
    r = post(client, {"captions": [CAP]})
    assert r.status_code == 200 and len(r.json()["images"]) == 1


# ----------------------------------------------------------------------------- endpoints
def test_healthz_is_open_and_models_lists_both(served):
    client, _ = served
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["models"] == ["tiny", "other"]
    assert_error(client.get("/v1/models"), 401, "bearer token")
    m = client.get("/v1/models", headers=AUTH).json()
    assert m["default"] == "tiny" and [x["name"] for x in m["models"]] == ["tiny", "other"]
    assert m["models"][0]["family"] == "dfgan" and m["models"][0]["image_size"] == 32
    assert m["limits"]["max_n"] == 16 and m["limits"]["batching"] is True


def test_page_and_openapi(served, pipe):
    client, _ = served
    assert_error(client.get("/"), 401)  # with a token the page needs it too (browsers get a Basic prompt)
    r = client.get("/", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for needle in ['id="captions"', 'id="generate"', 'id="model"', 'id="interpolate"', "/v1/generate", "download"]:
        assert needle in r.text
    assert client.get("/openapi.json", headers=AUTH).status_code == 404  # the docs are opt-in (--docs)
    docs_client, app = make(pipe, docs=True)
    try:
        spec = docs_client.get("/openapi.json", headers=AUTH).json()
        assert {"/v1/generate", "/v1/interpolate", "/v1/models", "/healthz"} <= set(spec["paths"])
        assert "image/png" in spec["paths"]["/v1/generate"]["post"]["responses"]["200"]["content"]
    finally:
        app.state.close()


def test_generate_json_matches_the_library(served, pipe):
    client, _ = served
    caps = [CAP, "a flower with thin blue petals xylophone"]
    r = post(client, {"captions": caps, "n": 3, "seed": 7, "return_stages": True, "return_attention": True})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == "tiny" and j["n"] == 3 and j["seed"] == 7 and j["captions"] == caps
    assert [(im["caption_index"], im["index"]) for im in j["images"]] == [(c, i) for c in range(2) for i in range(3)]
    got = np.stack([png(im["png_base64"]) for im in j["images"]])
    assert got.shape == (6, 32, 32, 3)
    # a request that is alone in its batch runs exactly the library's forward pass
    np.testing.assert_array_equal(got, reference(pipe, caps, 7, 3))
    assert j["dropped_words"] == ["xylophone"]
    assert j["stages"] == [] and j["attention"] == [] and any("no word attention" in n for n in j["notes"])
    # other model, other seed -> other images
    j2 = post(client, {"captions": caps, "n": 3, "seed": 8, "model": "other"}).json()
    assert j2["model"] == "other" and not np.array_equal(np.stack([png(i["png_base64"]) for i in j2["images"]]), got)


def test_generate_png_bytes(served, pipe):
    client, _ = served
    want = reference(pipe, [CAP], 3, 1)[0]
    for kw in ({"params": {"format": "png"}}, {"headers": {"Accept": "image/png"}}):
        r = post(client, {"captions": [CAP], "seed": 3}, **kw)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "3"
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")), want)
    assert_error(post(client, {"captions": [CAP], "n": 2}, params={"format": "png"}), 406, "exactly one image")
    assert_error(post(client, {"captions": [CAP]}, params={"format": "gif"}), 422, "format")
    # Accept listing JSON too gets JSON
    r = post(client, {"captions": [CAP]}, headers={"Accept": "application/json, image/png"})
    assert r.headers["content-type"].startswith("application/json")


def test_interpolate(pipe):
    client, app = make(pipe, exact=True)  # exact: every forward pass padded, so rows compare bitwise
    try:
        r = post(client, {"caption_a": CAP, "caption_b": "a flower with thin blue petals", "steps": 5, "seed": 4},
                 path="/v1/interpolate")
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0] and len(j["images"]) == 5
        imgs = [png(im["png_base64"]) for im in j["images"]]
        ends = [post(client, {"captions": [c], "seed": 4}).json()["images"][0]["png_base64"]
                for c in (CAP, "a flower with thin blue petals")]
        np.testing.assert_array_equal(imgs[0], png(ends[0]))  # alpha 0 = caption A with the same noise
        np.testing.assert_array_equal(imgs[-1], png(ends[1]))  # alpha 1 = caption B
        job = Job("interpolate", torch.zeros(2, 3, dtype=torch.long), torch.ones(2, dtype=torch.long), 0, steps=5)
        sent = torch.randn(2, 6)
        cond = job.conditions(sent)  # linear in the sentence vectors, ends exact
        assert torch.equal(cond[0], sent[0]) and torch.equal(cond[-1], sent[1])
        assert torch.allclose(cond[2], (sent[0] + sent[1]) / 2)
        assert_error(post(client, {"caption_a": CAP, "caption_b": "b", "steps": 1}, path="/v1/interpolate"), 422, "steps")
        assert_error(post(client, {"caption_a": "", "caption_b": CAP}, path="/v1/interpolate"), 422)
    finally:
        app.state.close()


# ----------------------------------------------------------------------------- bad input and limits
@pytest.mark.parametrize("body,status,words", [
    ({"captions": [""]}, 422, ["caption"]),
    ({"captions": ["   "]}, 422, ["caption 0 is empty"]),
    ({"captions": []}, 422, ["captions"]),
    ({"captions": ["x" * 301]}, 422, ["captions.0", "300"]),
    ({"captions": [CAP] * 17}, 422, ["captions"]),
    ({"captions": [CAP], "n": 0}, 422, ["n:", "greater than or equal to 1"]),
    ({"captions": [CAP], "n": 1000}, 422, ["n:", "less than or equal to 16"]),
    ({"captions": [CAP] * 5, "n": 16}, 422, ["80 images", "limit is 64"]),
    ({"captions": [CAP], "model": "nope"}, 404, ["unknown model 'nope'", "tiny"]),
    ({"captions": ["qwerty zxcvb"]}, 422, ["no word known"]),
    ({"captions": [CAP], "seed": -1}, 422, ["seed"]),
    ({"captions": [CAP], "seed": False}, 422, ["seed", "valid integer"]),
    ({"captions": [CAP], "n": "2"}, 422, ["n:", "valid integer"]),
    ({"captions": [CAP], "truncation": 0}, 422, ["truncation"]),
    ({"captions": [CAP], "bogus": 1}, 422, ["bogus", "Extra inputs"]),
    ({"captions": "not a list"}, 422, ["captions"]),
    ({"caption": CAP}, 422, ["captions", "required"]),
])
def test_bad_generate_input(served, body, status, words):
    client, _ = served
    assert_error(post(client, body), status, *words)
    still_serving(client)


def test_bad_bodies(served):
    client, _ = served
    big = {"captions": ["a" * (1 << 20)]}  # 1 MB caption: refused by size before parsing
    assert_error(post(client, big), 413, "larger than 65536 bytes")
    raw = {**AUTH, "Content-Type": "application/json"}
    assert_error(client.post("/v1/generate", content=b'{"captions": ["\xff\xfe red"]}', headers=raw), 400, "UTF-8")
    assert_error(client.post("/v1/generate", content=b"{not json", headers=raw), 422, "not valid JSON")
    assert_error(client.post("/v1/generate", content=b"", headers=raw), 422, "missing")

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(100):
            yield b" " * 1024
    assert_error(client.post("/v1/generate", content=chunks(), headers=raw), 413)
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.get("/v1/generate"), 405)
    still_serving(client)


def test_token(served, pipe, monkeypatch):
    client, _ = served
    body = {"captions": [CAP]}
    assert_error(client.post("/v1/generate", json=body), 401, "bearer token")
    r = client.post("/v1/generate", json=body, headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401) and r.headers["www-authenticate"] == "Bearer"
    assert_error(client.post("/v1/interpolate", json={"caption_a": CAP, "caption_b": CAP},
                             headers={"Authorization": "Basic eDp5"}), 401)
    still_serving(client)
    # no token configured: open
    open_client, app = make(pipe, token=None)
    try:
        assert open_client.post("/v1/generate", json=body).status_code == 200
    finally:
        app.state.close()
    # T2IGAN_TOKEN is used when --token is not given
    from t2igan.serve.app import token_from_env
    monkeypatch.setenv("T2IGAN_TOKEN", "from-env")
    assert token_from_env(None) == "from-env" and token_from_env("cli") == "cli"


def _gate(worker):
    """Make the worker block inside its forward pass until the returned event is set."""
    gate, entered, run = threading.Event(), threading.Event(), worker.run

    def blocked(jobs):
        entered.set()
        gate.wait(10)
        return run(jobs)
    worker.run = blocked
    return gate, entered


def test_queue_full_gives_503_then_recovers(pipe):
    client, app = make(pipe, max_queue=1, batching=False)
    w = app.state.workers["tiny"]
    gate, entered = _gate(w)
    results = []
    try:
        t1 = threading.Thread(target=lambda: results.append(post(client, {"captions": [CAP]}).status_code))
        t1.start()
        assert entered.wait(10)  # request 1 is in the forward pass, the queue is empty
        t2 = threading.Thread(target=lambda: results.append(post(client, {"captions": [CAP]}).status_code))
        t2.start()
        for _ in range(200):  # request 2 waits in the queue
            if w.queued() == 1:
                break
            time.sleep(0.01)
        r = post(client, {"captions": [CAP]})
        assert_error(r, 503, "retry")
        assert r.headers["retry-after"] == "1"
        assert post(client, {"captions": [CAP], "model": "other"}).status_code == 200  # other model unaffected
    finally:
        gate.set()
        t1.join(10)
        t2.join(10)
    assert results == [200, 200]
    still_serving(client)
    app.state.close()


def test_timeout_gives_504_then_recovers(pipe):
    client, app = make(pipe, timeout_s=0.3)
    gate, _ = _gate(app.state.workers["tiny"])
    try:
        assert_error(post(client, {"captions": [CAP]}), 504, "longer than 0.3 s")
    finally:
        gate.set()
    still_serving(client)
    app.state.close()


def test_body_limit_is_configurable(pipe):
    client, app = make(pipe, max_body_bytes=100, max_caption_chars=20)
    try:
        assert_error(post(client, {"captions": ["red petals " * 20]}), 413, "larger than 100 bytes")
        assert_error(post(client, {"captions": ["red petals red petals"]}), 422, "20 characters")
        assert post(client, {"captions": ["red petals"]}).status_code == 200
    finally:
        app.state.close()


# ----------------------------------------------------------------------------- batching
REQS = [([CAP], 1, 2), (["a flower with thin blue petals", "white petals"], 7, 3), (["pink petals"], 3, 1),
        ([CAP, "yellow petals"], 11, 1), (["purple flower"], 5, 4)]


def _jobs(pipe, reqs=REQS):
    out = []
    for caps, seed, n in reqs:
        tokens, lengths, _ = pipe.vocab.batch(caps, pipe.max_words)
        out.append(Job("generate", tokens, lengths, seed, n=n))
    return out


@pytest.mark.parametrize("exact", [False, True])
def test_batched_equals_unbatched(pipe, exact):
    batched = ModelWorker("b", pipe, batching=True, max_wait_ms=0, exact=exact)
    single = ModelWorker("s", pipe, batching=False, exact=exact)
    try:
        together = [r.images for r in batched.run(_jobs(pipe))]  # one forward pass for all five requests
        assert batched.stats["forward_passes"] == 1 and batched.stats["max_batch_images"] == 15
        alone = [single.run([j])[0].images for j in _jobs(pipe)]
        for (caps, seed, n), t, a in zip(REQS, together, alone):
            ref = torch.from_numpy(reference(pipe, caps, seed, n))
            assert t.shape == a.shape == ref.shape
            if not exact:  # alone in its batch = the library's own forward pass
                assert torch.equal(a, ref)
            if exact:  # padded passes: an image never depends on what it was batched with
                assert torch.equal(t, a)
            else:  # CPU kernels change with the batch size: ~1e-6 in float, at most 1 PNG level
                assert (t.int() - a.int()).abs().max() <= 1
                assert (t != a).float().mean() < 1e-3
    finally:
        batched.close()
        single.close()


def test_concurrent_requests_share_forward_passes(pipe):
    client, app = make(pipe, max_wait_ms=300)
    w = app.state.workers["tiny"]
    k, results, barrier = 8, {}, threading.Barrier(8)

    def one(i):
        barrier.wait()
        results[i] = post(client, {"captions": [CAP], "n": 2, "seed": i}).json()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert w.stats["requests"] == k
        assert w.stats["forward_passes"] < k and w.stats["max_batch_images"] >= 4, w.stats
        for i in range(k):  # each request got its own seed's images
            got = np.stack([png(im["png_base64"]) for im in results[i]["images"]])
            ref = reference(pipe, [CAP], i, 2)
            assert np.abs(got.astype(int) - ref).max() <= 1
    finally:
        app.state.close()


def test_no_batching_switch(pipe):
    w = ModelWorker("s", pipe, batching=False)
    try:
        futs = [w.submit(j) for j in _jobs(pipe)]
        [f.result(30) for f in futs]
        assert w.stats["forward_passes"] == w.stats["batches"] == len(REQS)
    finally:
        w.close()


def test_lone_client_does_not_wait(pipe):
    w = ModelWorker("s", pipe, max_wait_ms=500)
    try:
        job = _jobs(pipe)[2]
        w.submit(job).result(30)  # the first batch waits for company (none comes)
        assert job.started - job.enqueued >= 0.45
        job = _jobs(pipe)[2]
        w.submit(job).result(30)  # it was alone, so the next lone request is not kept waiting
        assert job.started - job.enqueued < 0.25
    finally:
        w.close()


def test_worker_error_is_a_json_500(pipe):
    client, app = make(pipe)
    w = app.state.workers["tiny"]

    def broken(jobs):
        raise RuntimeError("simulated failure\nsecond line")
    run, w.run = w.run, broken
    try:
        r = TestClient(app, raise_server_exceptions=False).post("/v1/generate", json={"captions": [CAP]}, headers=AUTH)
        assert_error(r, 500, "internal error: RuntimeError: simulated failure")
        w.run = run
        still_serving(client)
    finally:
        app.state.close()


def test_big_request_is_split_into_max_batch_passes(pipe):
    w = ModelWorker("s", pipe, max_batch=4, max_wait_ms=0)
    try:
        out = w.submit(_jobs(pipe, [([CAP, "blue petals"], 2, 5)])[0]).result(30)
        assert out.images.shape[0] == 10 and w.stats["forward_passes"] == 3
    finally:
        w.close()


# ----------------------------------------------------------------------------- command line
def test_model_names():
    assert parse_model_args(["runs/a", "b=runs/x/pipeline", "runs/y/pipeline"]) == {
        "a": "runs/a", "b": "runs/x/pipeline", "y": "runs/y/pipeline"}
    from t2igan import T2IError
    with pytest.raises(T2IError, match="two models are named 'a'"):
        parse_model_args(["runs/a", "other/a"])
    with pytest.raises(T2IError, match="model name"):
        parse_model_args(["bad name!=runs/a"])


def test_cli_serve(tiny_dfgan, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2
    assert "run `t2igan demo` first" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert main(["serve", str(tiny_dfgan), "--max-n", "0"]) == 2
    import uvicorn
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level, **kw: seen.update(app=app, host=host, port=port))
    assert main(["serve", f"t={tiny_dfgan}", "--port", "0", "--no-batching", "--token", "x"]) == 0
    out = capsys.readouterr().out
    assert "serving t (dfgan, 32px)" in out and "batching off; auth bearer token" in out
    assert seen["host"] == "127.0.0.1" and seen["app"].state.settings.batching is False
    assert seen["app"].state.settings.token == "x"
    # the demo model is served when no model is named
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    from t2igan.demo import DEMO_MODEL

    (tmp_path / DEMO_MODEL).symlink_to(tiny_dfgan, target_is_directory=True)  # any family's folder is served
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "serving demo (dfgan, 32px)" in out and "without a token" in out
