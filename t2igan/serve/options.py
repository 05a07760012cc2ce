"""``t2igan serve``: its options (argparse only, no heavy imports) and its main function."""
from __future__ import annotations

import argparse
import ipaddress
import socket

from t2igan import T2IError
from t2igan.demo import DEMO_MODEL  # noqa: F401  (the model the README's main job writes; light import)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help=f"run or pipeline folders, or NAME=FOLDER (default: the demo model {DEMO_MODEL})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None,
                   help="require the token on every route but /healthz: 'Authorization: Bearer TOKEN', or HTTP Basic "
                        "auth with TOKEN as the password (browsers ask for it); or set T2IGAN_TOKEN")
    p.add_argument("--docs", action="store_true",
                   help="serve the API docs /docs, /redoc and /openapi.json (off by default; behind the token if set)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-batching", dest="batching", action="store_false",
                   help="one forward pass per request (dynamic batching is on by default)")
    p.add_argument("--max-batch", type=int, default=64, help="images per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for others to batch with")
    p.add_argument("--exact", action="store_true",
                   help="pad small forward passes so an image never depends on what it was batched with (slower)")
    p.add_argument("--fused-upsample", action="store_true",
                   help="DF-GAN models: upsampling blocks in their fused form (same function, fewer FLOPs)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests per model before 503")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds per request before 504 (its work is then dropped, as for a client that hangs up)")
    p.add_argument("--timeout-header", type=float, default=10.0,
                   help="seconds a connection has to send a request's headers (from connecting or the request's "
                        "first byte) before 408 and close")
    p.add_argument("--timeout-body", type=float, default=10.0,
                   help="seconds a request has to send its body after its headers before 408 and close")
    p.add_argument("--timeout-keep-alive", type=float, default=5.0, help="seconds an idle keep-alive connection stays open")
    p.add_argument("--timeout-graceful-shutdown", type=float, default=10.0,
                   help="seconds running requests get to finish at shutdown (Ctrl-C)")
    p.add_argument("--max-header-bytes", type=int, default=16 * 1024,
                   help="request line and headers, at most (larger gets 400)")
    p.add_argument("--max-caption-chars", type=int, default=300)
    p.add_argument("--max-captions", type=int, default=16, help="captions per request")
    p.add_argument("--max-n", type=int, default=16, help="images per caption")
    p.add_argument("--max-images", type=int, default=64, help="images per request")
    p.add_argument("--max-body-bytes", type=int, default=64 * 1024)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def model_specs(models: list[str]) -> list[str]:
    if models:
        return list(models)
    if (DEMO_MODEL / "pipeline" / "model_index.json").is_file() or (DEMO_MODEL / "model_index.json").is_file():
        return [f"demo={DEMO_MODEL}"]
    raise T2IError(f"no model given and the demo model {DEMO_MODEL} does not exist: run `t2igan demo` first, "
                   f"or pass a run folder (t2igan serve runs/my_run)")


def settings_from_args(a):
    from t2igan.serve.app import Settings, token_from_env

    for k in ("max_batch", "max_queue", "max_caption_chars", "max_captions", "max_n", "max_images", "max_body_bytes",
              "max_header_bytes"):
        if getattr(a, k) < 1:
            raise T2IError(f"--{k.replace('_', '-')} must be at least 1, got {getattr(a, k)}")
    if not a.timeout > 0 or a.max_wait_ms < 0:
        raise T2IError("--timeout must be > 0 and --max-wait-ms >= 0")
    for k in ("timeout_header", "timeout_body", "timeout_keep_alive", "timeout_graceful_shutdown"):
        if not getattr(a, k) > 0:
            raise T2IError(f"--{k.replace('_', '-')} must be > 0, got {getattr(a, k)}")
    return Settings(max_caption_chars=a.max_caption_chars, max_captions=a.max_captions, max_n=a.max_n,
                    max_images=a.max_images, max_body_bytes=a.max_body_bytes, max_queue=a.max_queue,
                    timeout_s=a.timeout, batching=a.batching, max_batch=a.max_batch, max_wait_ms=a.max_wait_ms,
                    exact=a.exact, token=token_from_env(a.token), device=a.device,
                    fused_upsample=a.fused_upsample, docs=a.docs, timeout_body_s=a.timeout_body,
                    timeout_header_s=a.timeout_header, timeout_keep_alive_s=a.timeout_keep_alive,
                    timeout_graceful_shutdown_s=a.timeout_graceful_shutdown, max_header_bytes=a.max_header_bytes)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise T2IError(f"--port must be 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise T2IError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    fam, _, _, _, addr = infos[0]
    with socket.socket(fam, socket.SOCK_STREAM) as sk:
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sk.bind(addr)
        except OSError as e:
            raise T2IError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def main(a) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise T2IError(f"t2igan serve needs fastapi and uvicorn ({e.name} is missing): pip install fastapi uvicorn") from None
    import torch

    from t2igan.serve.app import create_app, parse_model_args, uvicorn_options

    specs = parse_model_args(model_specs(a.models))
    settings = settings_from_args(a)
    _check_port(a.host, a.port)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    app = create_app(specs, settings)
    names = ", ".join(f"{n} ({w.pipe.family}, {w.pipe.image_size}px)" for n, w in app.state.workers.items())
    url_host = f"[{a.host}]" if ":" in a.host else a.host
    print(f"serving {names}")
    docs = f"API docs: http://{url_host}:{a.port}/docs" if settings.docs else "API docs off (--docs)"
    print(f"page: http://{url_host}:{a.port}/   {docs}   "
          f"batching {'on' if settings.batching else 'off'}; auth {'bearer token' if settings.token else 'off'}")
    if not _is_loopback(a.host) and not settings.token:
        print(f"warning: listening on {a.host} without a token; anyone who can reach it can use it "
              f"(set --token or T2IGAN_TOKEN)", flush=True)
    try:
        uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level, **uvicorn_options(settings))
    finally:
        app.state.close()
