"""Fault benchmark of ``t2igan serve``: clients that hang up, requests that time out, a full queue, slow headers.

    python benchmarks/serve_faults.py runs/demo/dfgan --threads 1 --baseline-ref HEAD

Every scenario starts its own server process (``t2igan serve MODEL --threads T ...``) on 127.0.0.1 and
reads the worker's stats from ``GET /v1/models`` before and after it: images computed by the generator,
delivered to a client still waiting, skipped (never computed); wasted = computed - delivered.

* hangups: 60 clients each send a request for 64 images (one full forward pass each) and hang up once
  the server has queued them; then one normal request (1 image). Latency of that request (p50/p99 over
  the rounds) and the images computed for the 60 (target: at most one batch per cancelled client).
* timeouts: ``--timeout 0.3``; 16 clients send requests of 16 images back to back: answers by status,
  and the share of computed images (and requests) thrown away because their request had answered 504.
* full_queue: ``--max-queue 4``; 32 clients back to back (a 503 is retried after 50 ms): answers by
  status, Retry-After, p99 latency of the answered ones, wasted images.
* slow_headers: 50 connections trickle one header byte every 0.5 s, ``--timeout-header 2``: when each
  is closed, and the p99 latency of normal requests sent meanwhile.

``--baseline-ref REF`` also runs the scenarios against the server of that git revision (``git archive``
into a temporary folder, put first on the server's PYTHONPATH), with fewer hang-up rounds: it
computes every hung-up request. Without a model folder a small demo-shaped one is built first
(``t2igan demo --n 200 --damsm-steps 2 --minutes 0.05``: 64 px DF-GAN, ngf 16; timing, not quality).
Results: ``benchmarks/results/serve_faults.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
from machine import describe  # benchmarks/machine.py (run as a script from the repo root)

CAP = "this flower has red petals and a yellow center"
BIG = {"captions": [CAP, "a flower with thin blue petals", "white petals and a black middle", "orange petals"], "n": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantiles(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)
    q = lambda p: round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1)
    return {"n": len(xs), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(xs[-1] * 1000, 1),
            "mean_ms": round(statistics.mean(xs) * 1000, 1)}


class Server:
    """``t2igan serve MODEL`` in a child process (``src``: a source tree put first on its PYTHONPATH)."""

    def __init__(self, model: str, threads: int, flags: list[str], src: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "t2igan.cli", "serve", str(Path(model).resolve()), "--port", str(self.port), "--threads", str(threads),
               "--log-level", "warning", *flags]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env.pop("T2IGAN_TOKEN", None)
        if src:  # run from src too: python -m puts the working folder first on sys.path
            env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(cmd, env=env, cwd=src, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.proc.kill()
            raise SystemExit("server did not start in 60 s")

    def model(self) -> dict:
        return httpx.get(self.url + "/v1/models", timeout=30).json()["models"][0]

    def stats(self) -> dict:
        return dict(self.model()["stats"])

    def idle(self, timeout: float = 120.0) -> None:
        """Wait until nothing is queued and no forward pass runs (the computed count stops moving)."""
        end, last = time.perf_counter() + timeout, None
        while time.perf_counter() < end:
            m = self.model()
            now = (m["queued"], m["stats"]["images"])
            if now == last and m["queued"] == 0:
                return
            last = now
            time.sleep(0.6)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def delta(before: dict, after: dict) -> dict:
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after if isinstance(after[k], int) and k != "max_batch_images"}
    d["images_computed"] = d.get("images", 0)  # the older servers only count "images"
    return d


def raw_post(port: int, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sk = socket.create_connection(("127.0.0.1", port), timeout=10)
    sk.sendall(f"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sk


def normal_request(url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/generate", json={"captions": [CAP], "n": 1, "seed": 1}, timeout=300)
    return r.status_code, time.perf_counter() - t0


# ----------------------------------------------------------------------------- scenarios
def hangups(a, src: str | None, rounds: int) -> dict:
    srv = Server(a.model, a.threads, ["--max-queue", "256", "--max-batch", "64"], src)
    try:
        normal_request(srv.url)
        srv.idle()
        before, lat, codes, queued_seen = srv.stats(), [], {}, []
        for _ in range(rounds):
            socks = [raw_post(srv.port, {**BIG, "seed": i}) for i in range(a.hangups)]
            end = time.perf_counter() + 10
            while time.perf_counter() < end and srv.model()["queued"] < a.hangups - 1:  # one may be computing
                time.sleep(0.02)
            queued_seen.append(srv.model()["queued"])
            for sk in socks:
                sk.close()
            code, t = normal_request(srv.url)
            codes[code] = codes.get(code, 0) + 1
            lat.append(t)
            srv.idle()
        d = delta(before, srv.stats())
        normal_images = rounds  # one image per normal request
        wasted = d["images_computed"] - normal_images
        requested = rounds * a.hangups * 64
        return {"rounds": rounds, "hangups_per_round": a.hangups, "images_per_hangup": 64,
                "queued_when_they_hung_up": queued_seen, "normal_request": {"status_codes": codes, **quantiles(lat)},
                "images_requested_by_hangups": requested, "images_computed_for_hangups": wasted,
                "wasted_batches_per_round": round(wasted / 64 / rounds, 2),
                "wasted_images_per_cancelled_client": round(wasted / (rounds * a.hangups), 2),
                "target_wasted_per_cancelled_client": 64, "stats_delta": d}
    finally:
        srv.close()


async def closed_loop(url: str, clients: int, seconds: float, body: dict, retry_503_s: float | None = None) -> dict:
    lat, codes, retry_after = [], {}, set()
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(k: int, http: httpx.AsyncClient):
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                r = await http.post(url + "/v1/generate", json={**body, "seed": k * 100_000 + i})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t0)
                elif r.status_code == 503:
                    retry_after.add(r.headers.get("retry-after"))
                    if retry_503_s:
                        await asyncio.sleep(retry_503_s)
            except httpx.HTTPError as e:
                codes[type(e).__name__] = codes.get(type(e).__name__, 0) + 1
            i += 1

    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    return {"status_codes": {str(k): v for k, v in sorted(codes.items(), key=str)}, "answered": quantiles(lat),
            "retry_after": sorted(x for x in retry_after if x)}


def thrown_away(d: dict) -> dict:
    computed, delivered = d["images_computed"], d.get("images_delivered")
    out = {"images_computed": computed}
    if delivered is not None and "requests_delivered" in d:
        out.update(images_delivered=delivered, images_thrown_away=computed - delivered,
                   share_of_computed_images_thrown_away=round((computed - delivered) / computed, 4) if computed else None,
                   requests_computed=d["requests"], requests_delivered=d["requests_delivered"],
                   share_of_computed_requests_thrown_away=round((d["requests"] - d["requests_delivered"]) / d["requests"], 4)
                   if d["requests"] else None)
    return out


def timeouts(a, src: str | None) -> dict:
    srv = Server(a.model, a.threads, ["--timeout", "0.3", "--max-queue", "256"], src)
    try:
        normal_request(srv.url)
        srv.idle()
        before = srv.stats()
        load = asyncio.run(closed_loop(srv.url, 16, a.seconds, {"captions": [CAP], "n": 16}))
        srv.idle()
        d = delta(before, srv.stats())
        res = {"timeout_s": 0.3, "clients": 16, "images_per_request": 16, "seconds": a.seconds, **load,
               **thrown_away(d), "stats_delta": d}
        if "requests_delivered" not in d:  # an older server: delivered = the 200s it answered
            ok = load["status_codes"].get("200", 0)
            res.update(images_delivered=ok * 16, images_thrown_away=d["images_computed"] - ok * 16,
                       share_of_computed_images_thrown_away=round(1 - ok * 16 / d["images_computed"], 4)
                       if d["images_computed"] else None,
                       share_of_computed_requests_thrown_away=round(1 - ok / d["requests"], 4) if d["requests"] else None)
        return res
    finally:
        srv.close()


def full_queue(a, src: str | None) -> dict:
    srv = Server(a.model, a.threads, ["--max-queue", "4"], src)
    try:
        normal_request(srv.url)
        srv.idle()
        before = srv.stats()
        load = asyncio.run(closed_loop(srv.url, 32, a.seconds, {"captions": [CAP], "n": 16}, retry_503_s=0.05))
        srv.idle()
        d = delta(before, srv.stats())
        code, t = normal_request(srv.url)
        return {"max_queue": 4, "clients": 32, "images_per_request": 16, "seconds": a.seconds, **load,
                **thrown_away(d), "normal_request_after": {"status": code, "ms": round(t * 1000, 1)}, "stats_delta": d}
    finally:
        srv.close()


def slow_headers(a, src: str | None, new_flags: bool) -> dict:
    flags = ["--timeout-header", "2"] if new_flags else []
    srv = Server(a.model, a.threads, flags, src)
    n, trickle_s, limit_s = 50, 0.5, 8.0
    try:
        normal_request(srv.url)
        socks = []
        for _ in range(n):
            sk = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            sk.setblocking(False)
            sk.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(sk)
        t0, closed, lat = time.perf_counter(), {}, []
        head = b"X-Slow: " + b"a" * 200
        i = 0
        while time.perf_counter() - t0 < limit_s and len(closed) < n:
            for k, sk in enumerate(socks):
                if k in closed:
                    continue
                try:
                    data = sk.recv(4096)
                    if data == b"" or data.startswith(b"HTTP/1.1 408"):
                        closed[k] = time.perf_counter() - t0
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    closed[k] = time.perf_counter() - t0
                    continue
                try:
                    sk.send(head[i % len(head):i % len(head) + 1])
                except OSError:
                    closed[k] = time.perf_counter() - t0
            i += 1
            _, t = normal_request(srv.url)
            lat.append(t)
            time.sleep(max(0.0, trickle_s - t))
        for sk in socks:
            sk.close()
        times = sorted(closed.values())
        return {"connections": n, "trickle_one_byte_every_s": trickle_s, "timeout_header_s": 2 if new_flags else None,
                "closed_by_server": len(closed), f"still_open_after_{limit_s:g}_s": n - len(closed),
                "closed_after_s": {"p50": round(times[len(times) // 2], 2), "max": round(times[-1], 2)} if times else None,
                "normal_requests_meanwhile": quantiles(lat)}
    finally:
        srv.close()


def run_all(a, src: str | None, rounds: int, new_flags: bool) -> dict:
    out = {}
    for name, fn in (("hangups", lambda: hangups(a, src, rounds)), ("timeouts", lambda: timeouts(a, src)),
                     ("full_queue", lambda: full_queue(a, src)), ("slow_headers", lambda: slow_headers(a, src, new_flags))):
        t0 = time.perf_counter()
        out[name] = fn()
        out[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"  {name}: {json.dumps({k: v for k, v in out[name].items() if k != 'stats_delta'})}", flush=True)
    return out


def build_demo(folder: Path) -> str:
    run = folder / "dfgan"
    if not (run / "pipeline" / "model_index.json").is_file():
        subprocess.run([sys.executable, "-m", "t2igan.cli", "demo", "--out", str(folder), "--n", "200", "--damsm-steps",
                        "2", "--minutes", "0.05"], check=True, stdout=subprocess.DEVNULL)
    return str(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="runs/demo/dfgan", help="run folder to serve")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--hangups", type=int, default=60, help="clients that hang up per round")
    ap.add_argument("--rounds", type=int, default=20, help="hang-up rounds (the normal request's p99 is over them)")
    ap.add_argument("--seconds", type=float, default=10.0, help="per load scenario")
    ap.add_argument("--baseline-ref", default=None, help="also run against this git revision's server, e.g. HEAD")
    ap.add_argument("--baseline-rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/serve_faults.json")
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="serve_faults_")
    model_note = a.model
    if not Path(a.model).exists():
        print(f"{a.model} not found: building a small demo-shaped model in {tmp.name}", flush=True)
        a.model = build_demo(Path(tmp.name) / "demo")
        model_note = "t2igan demo --n 200 --damsm-steps 2 --minutes 0.05 (64 px DF-GAN, ngf 16; timing only)"
    result = {"benchmark": "serve_faults", "model": model_note, "server": {"threads": a.threads, "max_batch": 64},
              "machine": describe(), "command": " ".join(["python", *sys.argv]),
              "note": "clients and server share this machine's cores; wasted = images computed - images delivered"}
    print("this tree:", flush=True)
    result["this_tree"] = run_all(a, None, a.rounds, new_flags=True)
    if a.baseline_ref:
        rev = subprocess.run(["git", "rev-parse", "--short", a.baseline_ref], capture_output=True, text=True,
                             check=True).stdout.strip()
        src = Path(tmp.name) / "baseline"
        src.mkdir()
        arch = Path(tmp.name) / "baseline.tar"
        subprocess.run(["git", "archive", "-o", str(arch), a.baseline_ref, "t2igan"], check=True)
        with tarfile.open(arch) as tf:
            tf.extractall(src, filter="data")
        print(f"baseline {a.baseline_ref} ({rev}):", flush=True)
        result["baseline"] = {"ref": a.baseline_ref, "commit": rev,
                              **run_all(a, str(src), a.baseline_rounds, new_flags=False)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".tmp")
    part.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    part.replace(out)
    tmp.cleanup()
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
