"""Load benchmark of ``t2igan serve``: requests/s and p50/p99 latency, batching on vs off.

    python benchmarks/serve_load.py runs/demo/dfgan --seconds 10 --clients 1,8,32

For each of batching on/off a server process is started (``t2igan serve MODEL --threads T``),
warmed up, then for each client count C, C clients send ``POST /v1/generate`` (one caption,
``--n`` images, a different seed each time) back to back for ``--seconds``. Clients run in
this process (asyncio + httpx), the server in its own; on a small machine they share the
cores, which the JSON says. Results: ``benchmarks/results/serve_load.json``.
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
import time
from pathlib import Path

import httpx

from machine import describe  # benchmarks/machine.py (run as a script from the repo root)

CAPTIONS = ["this flower has red petals and a yellow center", "a flower with thin blue petals",
            "the petals of this flower are white and the middle is black", "a large orange flower with five round petals"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, batching: bool, threads: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "t2igan.cli", "serve", model, "--port", str(port), "--threads", str(threads),
           "--log-level", "warning", "--max-queue", "256", *extra]
    if not batching:
        cmd.append("--no-batching")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start in 60 s")


async def load(url: str, clients: int, seconds: float, n: int) -> dict:
    lat, errors, codes = [], 0, {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(k: int, http: httpx.AsyncClient):
        nonlocal errors
        i = 0
        while time.perf_counter() < stop:
            body = {"captions": [CAPTIONS[(k + i) % len(CAPTIONS)]], "n": n, "seed": k * 100_000 + i}
            t0 = time.perf_counter()
            try:
                r = await http.post(url + "/v1/generate", json=body)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            i += 1

    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        wall = time.perf_counter() - t0
    lat.sort()
    q = (lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1)) if lat else (lambda p: None)
    return {"clients": clients, "seconds": round(wall, 2), "requests": len(lat), "errors": errors, "status_codes": codes,
            "requests_per_s": round(len(lat) / wall, 2), "images_per_s": round(len(lat) * n / wall, 2),
            "latency_ms": {"p50": q(0.50), "p99": q(0.99), "mean": round(statistics.mean(lat) * 1000, 1) if lat else None}}


def stats(url: str) -> dict:
    m = httpx.get(url + "/v1/models", timeout=10).json()["models"][0]["stats"]
    return dict(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="runs/demo/dfgan", help="run folder to serve")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10.0, help="per client count")
    ap.add_argument("--n", type=int, default=1, help="images per request")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--out", default="benchmarks/results/serve_load.json")
    a = ap.parse_args()
    if not Path(a.model).exists():
        raise SystemExit(f"error: model folder not found: {a.model} (run `t2igan demo` first or pass a run folder)")
    clients = [int(c) for c in a.clients.split(",")]
    result = {"benchmark": "serve_load", "model": a.model, "request": {"captions": 1, "n": a.n},
              "server": {"threads": a.threads, "max_wait_ms": a.max_wait_ms, "max_batch": 64},
              "seconds_per_point": a.seconds, "machine": describe(),
              "note": "clients (asyncio+httpx) and server run on the same machine and share its cores",
              "runs": {}}
    for batching in (True, False):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(a.model, port, batching, a.threads, ["--max-wait-ms", str(a.max_wait_ms)])
        try:
            asyncio.run(load(url, 2, 1.0, a.n))  # warm-up
            rows = []
            for c in clients:
                before = stats(url)
                row = asyncio.run(load(url, c, a.seconds, a.n))
                after = stats(url)
                passes = after["forward_passes"] - before["forward_passes"]
                row["forward_passes"] = passes
                row["images_per_forward_pass"] = round((after["images"] - before["images"]) / passes, 2) if passes else None
                rows.append(row)
                print(f"batching {'on ' if batching else 'off'} clients {c:3d}: {row['requests_per_s']:7.2f} req/s  "
                      f"p50 {row['latency_ms']['p50']} ms  p99 {row['latency_ms']['p99']} ms  "
                      f"{row['images_per_forward_pass']} images/pass  errors {row['errors']}", flush=True)
            result["runs"]["batching_on" if batching else "batching_off"] = rows
        finally:
            proc.terminate()
            proc.wait(10)
    on, off = result["runs"]["batching_on"], result["runs"]["batching_off"]
    result["speedup_requests_per_s"] = {str(x["clients"]): round(x["requests_per_s"] / y["requests_per_s"], 2)
                                        if y["requests_per_s"] else None for x, y in zip(on, off)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"batching on/off requests/s ratio by clients: {result['speedup_requests_per_s']}")
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
