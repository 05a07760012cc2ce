"""The server against faulty clients, over real sockets: a uvicorn server on 127.0.0.1 in a thread
(the pattern of tests/test_browser.py) whose generator sleeps in every forward pass and counts the
images it computes. Clients that hang up or time out; slow headers, slow bodies, idle connections;
the token on every route but /healthz; the OpenAPI spec's error responses."""
import base64
import json
import select
import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient

from t2igan.cli import main
from t2igan.pipeline import Pipeline
from t2igan.serve.app import Settings, create_app, uvicorn_options

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP = "this flower has red petals and a yellow center"
DELAY = 0.4  # seconds every generator forward pass sleeps
BATCH = 8  # max_batch of the servers here: a request of n=8 is one forward pass


class SlowGenerator:
    """Replaces ``pipe.synthesize`` (the generator's one pass): waits while ``gate`` is clear (a test holds
    a pass that way until its clients are in place), sleeps ``delay`` s (+ ``per_row`` s per image), then
    runs it; counts the passes and the images (rows) it was called for."""

    def __init__(self, pipe: Pipeline, delay: float, per_row: float = 0.0):
        self.inner, self.delay, self.per_row, self.calls, self.rows = pipe.synthesize, delay, per_row, 0, 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        pipe.synthesize = self

    def __call__(self, z, *args, **kw):
        with self._lock:
            self.calls += 1
            self.rows += z.size(0)
        self.gate.wait(20)
        time.sleep(self.delay + self.per_row * z.size(0))
        return self.inner(z, *args, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 10.0, step: float = 0.01) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


@contextmanager
def serving(tiny_dfgan, delay: float = DELAY, **kw):
    """A real uvicorn server (with ``uvicorn_options``, as ``t2igan serve`` runs it) for the tiny model,
    its generator slowed down; yields url, port, the SlowGenerator, the app and its worker."""
    pipe = Pipeline.from_pretrained(tiny_dfgan)
    slow = SlowGenerator(pipe, delay)
    s = Settings(**{"token": TOKEN, "max_batch": BATCH, **kw})
    app = create_app({"tiny": pipe}, s)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           **uvicorn_options(s)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 10), "uvicorn did not start"
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, slow=slow, app=app,
                              worker=app.state.workers["tiny"], settings=s)
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.close()


def send_request(port: int, body: dict, path: str = "/v1/generate", token: str = TOKEN) -> socket.socket:
    """A raw HTTP/1.1 POST on a new socket (not read): the caller hangs up by closing it."""
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    sk = socket.create_connection(("127.0.0.1", port), timeout=5)
    sk.sendall(head + data)
    return sk


def read_until_closed(sk: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when that was (seconds from now);
    raises socket.timeout if it is still open after ``limit_s``."""
    t0, got = time.perf_counter(), b""
    sk.settimeout(limit_s)
    while True:
        try:
            chunk = sk.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return got, time.perf_counter() - t0
        got += chunk
        sk.settimeout(max(0.01, limit_s - (time.perf_counter() - t0)))


def stats(srv) -> dict:
    return dict(srv.worker.stats)


# ----------------------------------------------------------------------------- hang-ups and timeouts
def test_hung_up_clients_are_not_computed_and_do_not_delay_the_next(tiny_dfgan):
    """8 clients each ask for one batch and hang up while the first is computed: the queued 7 are not
    computed, they leave the (full) queue at once, and the next request waits for the pass that was
    running and its own, not for 7 more."""
    n_clients = 8
    with serving(tiny_dfgan, max_queue=n_clients - 1) as srv:
        srv.slow.gate.clear()  # the first pass waits until every client is queued and has hung up
        # the first request is in the (held) pass before the others arrive: sent together, the last one
        # could find the queue full while the worker has not yet taken the first (a 503, not a hang-up)
        socks = [send_request(srv.port, {"captions": [CAP], "n": BATCH, "seed": 0})]
        assert wait_until(lambda: srv.slow.calls == 1)
        socks += [send_request(srv.port, {"captions": [CAP], "n": BATCH, "seed": i}) for i in range(1, n_clients)]
        assert wait_until(lambda: srv.worker.queued() == n_clients - 1)
        for sk in socks:
            sk.close()
        assert wait_until(lambda: stats(srv)["requests_cancelled"] == n_clients)
        assert srv.worker.queued() == 0  # they left the queue at once ...
        answer = []
        normal = threading.Thread(target=lambda: answer.append(httpx.post(
            srv.url + "/v1/generate", json={"captions": [CAP], "n": BATCH, "seed": 99}, headers=AUTH, timeout=30)))
        normal.start()  # ... so the full queue takes the next request (no 503)
        assert wait_until(lambda: srv.worker.queued() == 1 or answer)
        t0 = time.perf_counter()
        srv.slow.gate.set()
        normal.join(30)
        latency = time.perf_counter() - t0
        r = answer[0]
        assert r.status_code == 200 and len(r.json()["images"]) == BATCH, r.text[:200]
        assert latency < 3 * DELAY + 0.5, f"{latency:.2f} s: the hung-up requests were computed first"
        st = stats(srv)
        requested = n_clients * BATCH
        wasted = srv.slow.rows - BATCH  # all but the normal request's images
        assert wasted == BATCH, (wasted, st)  # the pass that was running when they hung up
        assert st["images_computed"] == st["images"] == srv.slow.rows
        assert st["images_delivered"] == BATCH and st["requests_delivered"] == 1
        assert st["images_skipped"] == requested - wasted
        m = httpx.get(srv.url + "/v1/models", headers=AUTH).json()["models"][0]["stats"]  # exposed in /v1/models
        assert m["images_computed"] == srv.slow.rows and m["images_delivered"] == BATCH


def test_hang_up_mid_batch_costs_at_most_the_running_pass(tiny_dfgan):
    """One request of 32 images (4 passes of 8); its client hangs up during the first pass: the later
    passes are dropped."""
    with serving(tiny_dfgan) as srv:
        srv.slow.gate.clear()
        sk = send_request(srv.port, {"captions": [CAP, "a flower with thin blue petals"], "n": 16})
        assert wait_until(lambda: srv.slow.calls == 1)
        sk.close()
        assert wait_until(lambda: stats(srv)["requests_cancelled"] == 1)
        srv.slow.gate.set()
        assert wait_until(lambda: stats(srv)["images_skipped"] > 0)
        time.sleep(2 * DELAY)  # a pass still started would show now
        st = stats(srv)
        assert srv.slow.rows == BATCH and st["images_skipped"] == 32 - BATCH, (srv.slow.rows, st)
        assert st["requests_cancelled"] == 1 and st["images_delivered"] == 0
        still = httpx.post(srv.url + "/v1/generate", json={"captions": [CAP]}, headers=AUTH, timeout=30)
        assert still.status_code == 200


def test_timed_out_requests_are_not_computed(tiny_dfgan):
    """8 requests of one pass each, --timeout 2.5 s, passes of 1 s: two are answered; the third would
    finish after its deadline at the pace of the passes so far, so it is not started (504 at once), and
    the rest leave the queue when they answer 504. Nothing is computed for a request that got 504.
    (Half a pass of margin on each side: the second ends ~0.5 s before its deadline, the third would
    end ~0.5 s after it, so a slow machine does not move a request across the line.)"""
    delay, timeout = 1.0, 2.5
    with serving(tiny_dfgan, delay=delay, timeout_s=timeout) as srv:
        codes, barrier = [], threading.Barrier(8)

        def client(i):
            barrier.wait()
            r = httpx.post(srv.url + "/v1/generate", json={"captions": [CAP], "n": BATCH, "seed": i}, headers=AUTH,
                           timeout=30)
            codes.append(r.status_code)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(codes) == [200] * 2 + [504] * 6, codes
        time.sleep(delay)  # a pass started late would finish now
        st = stats(srv)
        assert st["images_delivered"] == 2 * BATCH and st["requests_timed_out"] == 6, st
        assert st["images_computed"] == srv.slow.rows == 2 * BATCH, (srv.slow.rows, st)  # no image thrown away
        t0 = time.perf_counter()  # and the server answers at once afterwards
        assert httpx.post(srv.url + "/v1/generate", json={"captions": [CAP]}, headers=AUTH, timeout=30).status_code == 200
        assert time.perf_counter() - t0 < delay + 0.5


# ----------------------------------------------------------------------------- slow and idle connections
def test_slow_headers_are_cut_off(tiny_dfgan):
    with serving(tiny_dfgan, timeout_header_s=0.5, timeout_body_s=0.5, timeout_keep_alive_s=0.5) as srv:
        # headers that never end: 408, then closed, ~0.5 s after connecting
        sk = socket.create_connection(("127.0.0.1", srv.port))
        sk.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        got, t = read_until_closed(sk, 3.0)
        assert got.startswith(b"HTTP/1.1 408") and b"request headers did not arrive within 0.5 s" in got
        assert 0.3 < t < 1.5, t
        sk.close()
        # a trickle of header bytes does not extend the time
        sk = socket.create_connection(("127.0.0.1", srv.port))
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        t0 = time.perf_counter()
        try:
            for i in range(40):  # one byte every 0.05 s (2 s if nobody stops it) until the server answers
                if select.select([sk], [], [], 0.05)[0]:
                    break
                sk.sendall(head[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            pass
        got, _ = read_until_closed(sk, 3.0)
        t = time.perf_counter() - t0
        assert t < 1.5 and (got.startswith(b"HTTP/1.1 408") or got == b""), (t, got[:40])
        sk.close()
        # a connection that sends nothing is closed too (no reply)
        sk = socket.create_connection(("127.0.0.1", srv.port))
        got, t = read_until_closed(sk, 3.0)
        assert got == b"" and t < 1.5
        sk.close()
        # a body that stalls: 408 JSON and closed, ~0.5 s after the headers
        sk = socket.create_connection(("127.0.0.1", srv.port))
        sk.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"captions\"")
        got, t = read_until_closed(sk, 3.0)
        assert got.startswith(b"HTTP/1.1 408") and b"request body did not arrive within 0.5 s" in got, got[:200]
        assert t < 1.5
        sk.close()
        # headers sent in pieces, in time, and a request that runs longer than the header timeout: answered
        sk = socket.create_connection(("127.0.0.1", srv.port))
        body = json.dumps({"captions": [CAP], "n": 2 * BATCH}).encode()  # two passes: 0.8 s > 0.5 s
        raw = (b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        for part in (raw[:20], raw[20:60], raw[60:]):
            sk.sendall(part)
            time.sleep(0.1)
        got, t = read_until_closed(sk, 5.0)  # keep-alive: closed 0.5 s after the response
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        assert b'"png_base64"' in got
        sk.close()
        assert httpx.get(srv.url + "/healthz").status_code == 200  # still serving


def test_cli_passes_the_connection_limits_to_uvicorn(tiny_dfgan, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", f"t={tiny_dfgan}", "--port", "0", "--timeout-header", "3", "--timeout-body", "4",
                 "--timeout-keep-alive", "2", "--timeout-graceful-shutdown", "6", "--max-header-bytes", "8192",
                 "--docs"]) == 0
    assert "API docs: http://127.0.0.1:0/docs" in capsys.readouterr().out
    assert seen["timeout_keep_alive"] == 2 and seen["timeout_graceful_shutdown"] == 6
    assert seen["h11_max_incomplete_event_size"] == 8192
    assert seen["http"].__name__ == "HeaderTimeoutH11Protocol"
    s = seen["app"].state.settings
    assert s.timeout_header_s == 3 and s.timeout_body_s == 4 and s.docs is True
    assert main(["serve", f"t={tiny_dfgan}", "--port", "0", "--timeout-header", "0"]) == 2
    assert main(["serve", f"t={tiny_dfgan}", "--port", "0"]) == 0  # defaults: docs off
    assert "API docs off" in capsys.readouterr().out and seen["app"].state.settings.docs is False


# ----------------------------------------------------------------------------- the token and the docs
def basic(password: str, user: str = "me") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_token_protects_every_route_but_healthz(tiny_dfgan):
    with serving(tiny_dfgan, delay=0.0, docs=True) as srv:
        url = srv.url
        assert httpx.get(url + "/healthz").status_code == 200
        routes = [(m, r.path) for r in srv.app.routes for m in sorted(getattr(r, "methods", ()) or ()) if m != "HEAD"]
        assert {("GET", "/"), ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"), ("GET", "/v1/models"),
                ("POST", "/v1/generate"), ("POST", "/v1/interpolate"), ("GET", "/healthz")} <= set(routes)
        for method, path in routes:
            if path == "/healthz":
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, basic("wrong"), {"Authorization": "Basic !!"}):
                r = httpx.request(method, url + path, headers=headers, json={} if method == "POST" else None)
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.json()["status"] == 401
                # the browser routes ask for the token with a Basic prompt; the API names Bearer
                assert r.headers["www-authenticate"].startswith("Basic" if not path.startswith("/v1/") else "Bearer")
        for headers in (AUTH, basic(TOKEN), basic(TOKEN, user="")):  # the token as Bearer, or as a Basic password
            page = httpx.get(url + "/", headers=headers)
            assert page.status_code == 200 and 'id="captions"' in page.text
            assert httpx.get(url + "/docs", headers=headers).status_code == 200
            assert httpx.get(url + "/redoc", headers=headers).status_code == 200
            assert "/v1/generate" in httpx.get(url + "/openapi.json", headers=headers).json()["paths"]
            assert httpx.get(url + "/v1/models", headers=headers).status_code == 200
            r = httpx.post(url + "/v1/generate", json={"captions": [CAP]}, headers=headers, timeout=30)
            assert r.status_code == 200
        # a cross-site form post (text/plain, a browser sends cached Basic credentials with it) is not run
        r = httpx.post(url + "/v1/generate", content=json.dumps({"captions": [CAP]}),
                       headers={**basic(TOKEN), "Content-Type": "text/plain"})
        assert r.status_code == 422
        assert httpx.get(url + "/v1/nothing", headers=AUTH).status_code == 404


def test_docs_are_opt_in(tiny_dfgan):
    pipe = Pipeline.from_pretrained(tiny_dfgan)
    for token in (TOKEN, None):
        app = create_app({"tiny": pipe}, Settings(token=token))
        try:
            client = TestClient(app)
            for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
                assert client.get(path, headers=AUTH).status_code == 404, path
            assert client.get("/", headers=AUTH).status_code == 200
            assert client.get("/").status_code == (401 if token else 200)  # no token set: all open
        finally:
            app.state.close()
    app = create_app({"tiny": pipe}, Settings(docs=True))  # no token: the docs are open
    try:
        assert TestClient(app).get("/docs").status_code == 200
    finally:
        app.state.close()


def test_openapi_lists_the_responses_given(tiny_dfgan):
    """Every error code the server gives on a route is in the spec, and no other (401 only with a token).
    Each is produced by a test: 400, 401, 404, 406, 413, 422, 500, 503, 504 in tests/test_serve.py, 408 in
    test_slow_headers_are_cut_off."""
    pipe = Pipeline.from_pretrained(tiny_dfgan)
    want = {("/v1/generate", "post"): {"200", "400", "401", "404", "406", "408", "413", "422", "500", "503", "504"},
            ("/v1/interpolate", "post"): {"200", "400", "401", "404", "408", "413", "422", "500", "503", "504"},
            ("/v1/models", "get"): {"200", "401"}, ("/healthz", "get"): {"200"},
            # SRNet's routes (an SRNet model need not be served for them to exist): the same middleware
            # (400, 401, 408, 413, 422) and the handler's 404 / 500
            ("/v1/edit", "post"): {"200", "400", "401", "404", "408", "413", "422", "500"},
            ("/v1/editors", "get"): {"200", "401"}}
    for token in (TOKEN, None):
        app = create_app({"tiny": pipe}, Settings(token=token, docs=True))
        try:
            client = TestClient(app)
            spec = client.get("/openapi.json", headers=AUTH).json()
            assert {p for p, _ in want} == set(spec["paths"])  # the page and the docs are not in it
            for (path, method), codes in want.items():
                got = set(spec["paths"][path][method]["responses"])
                assert got == (codes if token else codes - {"401"}), (path, got)
                assert ("security" in spec["paths"][path][method]) == (token is not None and path != "/healthz")
        finally:
            app.state.close()


def test_page_works_in_a_browser_with_the_token(tiny_dfgan):
    """The page behind a token in Chromium: the browser answers the Basic challenge with the token, then
    the page's own API calls carry it (no token typed into the page)."""
    from test_browser import CHROMIUM_FLAGS, chromium_path

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium found")
    with serving(tiny_dfgan, delay=0.0) as srv, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        try:
            ctx = browser.new_context(http_credentials={"username": "me", "password": TOKEN})
            page = ctx.new_page()
            page.goto(srv.url + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length === 1", timeout=10000)
            page.fill("#captions", CAP)
            page.fill("#n", "2")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('#results img.result-image').length === 2",
                                   timeout=30000)
            assert page.is_hidden("#token-row")  # never asked for it: no 401 reached the page
            anon = browser.new_context().new_page()  # without the token: the page is not served
            try:  # headless Chromium has nobody to ask for the password and gives up
                assert anon.goto(srv.url + "/").status == 401
            except sync_api.Error as e:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(e)
        finally:
            browser.close()


# ----------------------------------------------------------------------------- the worker on its own
def test_worker_skips_dead_jobs_when_it_forms_a_batch(tiny_dfgan):
    """An expired job at the head of the queue takes no place in the next batch: the live jobs behind
    it share one forward pass, and the expired one's future says why it got nothing."""
    from t2igan.serve.batcher import Job, JobDropped, ModelWorker

    pipe = Pipeline.from_pretrained(tiny_dfgan)
    slow = SlowGenerator(pipe, 0.0)
    w = ModelWorker("w", pipe, max_batch=BATCH, max_wait_ms=0)
    try:
        def job(n):
            tokens, lengths, _ = pipe.vocab.batch([CAP], pipe.max_words)
            return Job("generate", tokens, lengths, 0, n=n)
        slow.gate.clear()
        first = w.submit(job(1))
        assert wait_until(lambda: slow.calls == 1)  # the worker is busy with the first
        dead, a, b = job(4), job(4), job(4)
        dead.deadline = time.perf_counter() - 1  # nobody waits for it any more
        futs = [w.submit(j) for j in (dead, a, b)]
        slow.gate.set()
        first.result(10)
        assert futs[1].result(10).images.shape[0] == 4 and futs[2].result(10).images.shape[0] == 4
        with pytest.raises(JobDropped) as e:
            futs[0].result(10)
        assert e.value.expired
        assert w.stats["forward_passes"] == 2 and slow.rows == 1 + 8  # a and b in one pass
        assert w.stats["images_skipped"] == 4 and w.stats["images_computed"] == 9
        cancelled = job(2)  # cancel() takes a queued job out at once
        slow.gate.clear()
        blocker = w.submit(job(1))
        assert wait_until(lambda: slow.calls == 3)
        w.submit(cancelled)
        assert w.queued() == 1
        w.cancel(cancelled)
        assert w.queued() == 0 and cancelled.future.cancelled() and w.stats["requests_cancelled"] == 1
        slow.gate.set()
        blocker.result(10)
        assert w.stats["images_skipped"] == 6
    finally:
        slow.gate.set()
        w.close()


def test_batch_grows_only_while_it_meets_its_deadlines(tiny_dfgan):
    """Passes cost 0.1 s per image. Two queued jobs of 4 images, 0.7 s left: together (0.8 s) both would
    miss their deadline, so the first runs alone (0.4 s) and is delivered; the second, 0.3 s left
    by then, would miss it alone too and is not started."""
    from t2igan.serve.batcher import Job, JobDropped, ModelWorker

    pipe = Pipeline.from_pretrained(tiny_dfgan)
    slow = SlowGenerator(pipe, 0.0, per_row=0.1)
    w = ModelWorker("w", pipe, max_batch=BATCH, max_wait_ms=0)
    gate, run = threading.Event(), w.run

    def gated(jobs):  # holds the worker before a batch (outside the timed forward pass)
        gate.wait(10)
        return run(jobs)

    def job(n):
        tokens, lengths, _ = pipe.vocab.batch([CAP], pipe.max_words)
        return Job("generate", tokens, lengths, 0, n=n)
    try:
        gate.set()
        w.submit(job(4)).result(10)  # measured: 0.1 s per image
        w.run = gated
        gate.clear()
        blocker = w.submit(job(1))
        assert wait_until(lambda: w.queued() == 0)  # the worker holds it
        a, b = job(4), job(4)
        a.deadline = b.deadline = time.perf_counter() + 0.7
        fa, fb = w.submit(a), w.submit(b)
        gate.set()
        blocker.result(10)
        assert fa.result(10).images.shape[0] == 4
        with pytest.raises(JobDropped):
            fb.result(10)
        assert slow.rows == 4 + 1 + 4 and w.stats["images_skipped"] == 4, (slow.rows, w.stats)
    finally:
        gate.set()
        w.close()


def test_expected_pass_time(tiny_dfgan):
    """expected_s: the median time per image x images, capped by the slowest recent pass over as many
    images or more (a GPU pass costs about the same at any size); linear beyond what was seen."""
    import collections

    from t2igan.serve.batcher import ModelWorker

    w = ModelWorker("w", Pipeline.from_pretrained(tiny_dfgan), max_batch=64)
    try:
        assert w.expected_s(8) == 0.0  # nothing measured yet
        w._recent = collections.deque([(0.4, 4)])  # CPU-like: 0.1 s per image
        assert w.expected_s(8) == pytest.approx(0.8) and w.expected_s(2) == pytest.approx(0.2)
        w._recent = collections.deque([(0.5, 64), (0.45, 1), (0.46, 1)])  # GPU-like: flat
        assert w.expected_s(8) == pytest.approx(0.5) and w.expected_s(1) == pytest.approx(0.45)
        assert w.expected_s(128) == pytest.approx(1.0)  # two passes of 64
    finally:
        w.close()
