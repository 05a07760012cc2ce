"""The t2igan server: a FastAPI app with an OpenAPI spec and one web page.

    app = create_app({"flowers": "runs/demo/lafite"}, Settings(token="s3cret"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: ``POST /v1/generate``, ``POST /v1/interpolate``, ``GET /v1/models``, ``GET /healthz``,
``GET /`` (the page), and with ``Settings(docs=True)`` ``GET /docs``, ``/redoc`` and ``/openapi.json``.
Every error is JSON ``{"error": "<one line>", "status": <code>}``; bad input never stops the server.

Security model: with a token set, every route but ``/healthz`` needs it, as ``Authorization: Bearer
TOKEN`` or as the password of HTTP Basic auth (any user name; the page and the docs ask the browser
for it with a Basic challenge, and the browser then sends it on the page's API calls too). Slow
clients are bounded: a body must arrive within ``timeout_body_s`` (else 408), request headers within
``timeout_header_s`` (``uvicorn_options``: a guard in uvicorn's h11 protocol), a request answers 504
after ``timeout_s``, and work for a client that hung up or timed out is not computed.
"""

import asyncio
import base64
import binascii
import functools
import io
import os
import re
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

import t2igan
from t2igan import T2IError
from t2igan.families import registry
from t2igan.pipeline import Pipeline
from t2igan.serve.batcher import Job, JobDropped, ModelWorker, QueueFull, Result

PAGE = Path(__file__).with_name("index.html")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# inferno-like colour map for attention heat maps: weight 0 -> near black, full scale -> pale yellow
HEAT = torch.tensor([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=torch.float32)


def extras_notes(pipe: Pipeline, stages: bool, attention: bool) -> list[str]:
    """Why ``stages`` / ``attention`` are empty for this model, when they were asked for."""
    name = pipe.title
    notes = []
    if stages and len(pipe.stage_sizes) == 1:
        notes.append(f"{name} draws one image scale, so stages is empty")
    if attention and not pipe.attends_words:
        have = " and ".join(f.title for f in registry.FAMILIES if f.text == "words")
        notes.append(f"{name} has no word attention (only {have} with 2+ stages have), so attention is empty")
    return notes


def heatmaps(att: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One image's word attention ``[L, h, w]`` (its L words) -> uint8 heat maps ``[L, h, w, 3]`` and the
    weight shown at full scale (the largest over these words, so the words of one image compare)."""
    scale = float(att.max().clamp(min=1e-12))
    v = (att.float() / scale).clamp(0, 1) * (len(HEAT) - 1)  # (L, h, w) in [0, 4]
    lo = v.floor().long().clamp(max=len(HEAT) - 2)
    f = (v - lo)[..., None]
    rgb = HEAT[lo] * (1 - f) + HEAT[lo + 1] * f  # (L, h, w, 3)
    return rgb.round().to(torch.uint8), scale


@dataclass
class Settings:
    """Server limits and switches (each is a ``t2igan serve`` option)."""

    max_caption_chars: int = 300  # per caption
    max_captions: int = 16  # per request
    max_n: int = 16  # images per caption
    max_images: int = 64  # per request (captions x n, or interpolation steps)
    max_body_bytes: int = 64 * 1024  # request body; larger gets 413
    max_queue: int = 64  # waiting requests per model; more gets 503 + Retry-After
    timeout_s: float = 30.0  # per request; longer gets 504
    batching: bool = True  # group concurrent requests into one forward pass
    max_batch: int = 64  # images per forward pass
    max_wait_ms: float = 10.0  # how long the first request waits for company
    exact: bool = False  # pad forward passes so an image never depends on its batch (slower)
    token: str | None = None  # needed by every route but /healthz (Bearer, or Basic password); None: open
    docs: bool = False  # serve /docs, /redoc and /openapi.json (behind the token when one is set)
    timeout_body_s: float = 10.0  # a request body must arrive within this (from its headers); else 408
    # uvicorn_options(): the connection limits (uvicorn's own settings, and the header guard)
    timeout_header_s: float = 10.0  # a request's headers must arrive within this (from connect / its first byte)
    timeout_keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    timeout_graceful_shutdown_s: float = 10.0  # at shutdown, requests still running get this long
    max_header_bytes: int = 16 * 1024  # request line + headers; larger gets 400
    device: str = "cpu"
    fused_upsample: bool = False  # DF-GAN generators: fused upsampling blocks (same function, fewer FLOPs)
    extra: dict = field(default_factory=dict)


class APIError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# ----------------------------------------------------------------------------- models
def parse_model_args(specs: list[str]) -> dict[str, str]:
    """``["runs/a", "b=runs/x/pipeline"]`` -> ``{"a": "runs/a", "b": "runs/x/pipeline"}``."""
    out: dict[str, str] = {}
    for spec in specs:
        if "=" in spec and not Path(spec).exists():
            name, path = spec.split("=", 1)
        else:
            p = Path(spec.rstrip("/\\"))
            name, path = (p.parent.name if p.name == "pipeline" else p.name), spec
        if not NAME_RE.match(name):
            raise T2IError(f"model name {name!r} (from {spec!r}) must be letters, digits, '.', '_' or '-'; "
                           f"use name=path to choose one")
        if name in out:
            raise T2IError(f"two models are named {name!r} ({out[name]} and {path}); use name=path to tell them apart")
        out[name] = path
    return out


def _load(models: dict, device: str, fused_upsample: bool = False) -> dict[str, Pipeline]:
    if not models:
        raise T2IError("no model to serve")
    pipes = {}
    for name, m in models.items():
        pipes[name] = m if isinstance(m, Pipeline) else Pipeline.from_pretrained(m, device=device)
        if fused_upsample:
            pipes[name].use_fused_upsample()
    return pipes


# ----------------------------------------------------------------------------- app
def create_app(models: dict, settings: Settings | None = None) -> FastAPI:
    """``models``: name -> run/pipeline folder or a loaded ``Pipeline``. Loads them and starts one
    batching worker per model (stopped by ``app.state.close()`` or at server shutdown)."""
    s = settings or Settings()
    from t2igan.families.srnet import PARTS, Editor, is_srnet_folder  # SRNet models: the Edit-text tab

    editors = {n: Editor(m, s.device) for n, m in models.items() if not isinstance(m, Pipeline) and is_srnet_folder(m)}
    models = {n: m for n, m in models.items() if n not in editors}
    pipes = _load(models, s.device, s.fused_upsample) if models or not editors else {}
    workers = {name: ModelWorker(name, p, batching=s.batching, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms,
                                 max_queue=s.max_queue, exact=s.exact) for name, p in pipes.items()}
    default_model = next(iter(pipes), None)
    token = s.token

    def close():
        for w in workers.values():
            w.close()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        close()

    app = FastAPI(title="t2igan", version=t2igan.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="Text-to-image GAN server: generate images from captions with the "
                                                 "served models." + (" Every route but /healthz needs the token: "
                                                 "'Authorization: Bearer TOKEN', or HTTP Basic auth with the token "
                                                 "as the password." if token else ""))
    app.state.workers, app.state.settings, app.state.close = workers, s, close

    # ------------------------------------------------------------------ schemas
    Caption = Field(min_length=1, max_length=s.max_caption_chars)

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
            {"captions": ["this flower has red petals and a yellow center"], "n": 4, "seed": 0}]})
        captions: list[Annotated[str, Caption]] = Field(
            min_length=1, max_length=s.max_captions,
            description=f"1 to {s.max_captions} captions of at most {s.max_caption_chars} characters")
        n: int = Field(1, ge=1, le=s.max_n, description="images per caption")
        seed: int = Field(0, ge=0, le=2**63 - 1, description="same seed, same images")
        truncation: float | None = Field(None, gt=0, le=100, allow_inf_nan=False, description="clamp noise to [-t, t]")
        model: str | None = Field(None, description=f"served model name (default: {default_model})")
        return_stages: bool = Field(False, validation_alias=AliasChoices("return_stages", "stages"),
                                    description="also return every stage's images (smallest first) when the model "
                                                "draws 2+ stages (also accepted as 'stages')")
        return_attention: bool = Field(False, validation_alias=AliasChoices("return_attention", "attention"),
                                       description="also return per-word attention heat maps (AttnGAN, MirrorGAN; "
                                                   "also accepted as 'attention')")

    class InterpolateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
            {"caption_a": "a flower with red petals", "caption_b": "a flower with blue petals", "steps": 8, "seed": 0}]})
        caption_a: str = Caption
        caption_b: str = Caption
        steps: int = Field(8, ge=2, le=min(16, s.max_images), description="images from caption A to caption B")
        seed: int = Field(0, ge=0, le=2**63 - 1)
        truncation: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)
        model: str | None = None

    class Image(BaseModel):
        caption_index: int = Field(description="which caption (interpolation: step index)")
        index: int = Field(description="image number for that caption")
        png_base64: str

    class AttentionMap(BaseModel):
        caption_index: int
        index: int = Field(description="image number for that caption")
        stage: int = Field(description="the stage (index into stage_sizes) whose generator attended with this map")
        word_index: int = Field(description="position of the word in the caption as the model read it")
        word: str
        size: int = Field(description="the map is size x size (the attending stage's input resolution)")
        scale: float = Field(description="attention weight drawn at full brightness (the largest of this image's "
                                         "words at this stage; weights sum to 1 over the words at every pixel)")
        png_base64: str

    class GenerateResponse(BaseModel):
        model: str
        family: str
        image_size: int
        seed: int
        n: int
        captions: list[str]
        images: list[Image] = Field(description="caption-major: all images of caption 0, then caption 1, ...")
        dropped_words: list[str] = Field(description="words not in the model's vocabulary, ignored")
        stage_sizes: list[int] = Field(description="image size of every stage the model draws, smallest first")
        stages: list[list[Image]] = Field(description="per stage (smallest first, the last is images), every image; "
                                                      "empty unless return_stages and the model has 2+ stages")
        words: list[list[str]] = Field(description="per caption, the words the model read (vocabulary models)")
        attention: list[AttentionMap] = Field(description="per image, attended stage and word, a heat map; empty "
                                                          "unless return_attention and the model attends over words")
        notes: list[str]
        timing_ms: dict[str, float]

    class InterpolateResponse(BaseModel):
        model: str
        family: str
        image_size: int
        seed: int
        caption_a: str
        caption_b: str
        alphas: list[float]
        images: list[Image]
        dropped_words: list[str]
        timing_ms: dict[str, float]

    class ModelInfo(BaseModel):
        name: str
        family: str
        title: str = Field(description="display name of the model's family")
        image_size: int
        default: bool
        text_encoder: str = Field(description="damsm (the model's own vocabulary) or a frozen pretrained encoder")
        vocab_size: int | None = Field(description="None for a frozen pretrained text encoder")
        max_words: int | None
        stage_sizes: list[int]
        stages: bool = Field(description="draws 2+ stages (return_stages gives them)")
        attention: bool = Field(description="has word attention maps (return_attention gives them)")
        queued: int
        stats: dict[str, int]

    class ModelsResponse(BaseModel):
        models: list[ModelInfo]
        default: str
        limits: dict[str, float | int | bool]

    class Health(BaseModel):
        status: str
        models: list[str]
        version: str

    class ErrorBody(BaseModel):
        error: str
        status: int

    err = {c: {"model": ErrorBody, "description": d} for c, d in [
        (400, "request body is not valid UTF-8"), (401, "missing or wrong token"), (404, "unknown model"),
        (406, "image/png asked for more than one image"),
        (408, f"the request body did not arrive within {s.timeout_body_s:g} s"), (413, "request body too large"),
        (422, "invalid input"), (500, "internal error (one JSON line, the server keeps serving)"),
        (503, "queue full, retry after the Retry-After seconds"), (504, f"not computed within {s.timeout_s:g} s")]}

    def responses(*codes: int) -> dict:
        """The error responses a route really gives: 401 only when a token is set."""
        return {c: err[c] for c in codes if c != 401 or token is not None}

    # ------------------------------------------------------------------ errors
    @app.exception_handler(APIError)
    async def _api_error(_req, e: APIError):
        return JSONResponse({"error": e.message, "status": e.status}, e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(_req, e: HTTPException):
        msg = str(e.detail)
        if e.status_code == 400 and "parsing the body" in msg:  # e.g. bytes that are not UTF-8
            msg = "request body is not valid JSON in UTF-8"
        return JSONResponse({"error": msg, "status": e.status_code}, e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(_req, e: Exception):  # a bug or an out-of-memory: still one JSON line
        first = (str(e).splitlines() or [""])[0]
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {first}"[:300], "status": 500}, 500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            msg = "request body is not valid JSON in UTF-8"
        elif first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            msg = "request body is missing (send JSON)"
        else:
            where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
            msg = f"{where}: {first.get('msg', 'invalid')}"
            if "input" in first and first.get("type") not in ("missing", "extra_forbidden"):
                shown = repr(first["input"])
                msg += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        return JSONResponse({"error": msg, "status": 422}, 422)

    # ------------------------------------------------------------------ body size and time
    app.add_middleware(BodyLimit, max_bytes=s.max_body_bytes, timeout_s=s.timeout_body_s)

    # ------------------------------------------------------------------ auth
    bearer = HTTPBearer(auto_error=False, description="set with --token or T2IGAN_TOKEN (HTTP Basic auth with the "
                                                      "token as the password works too)")

    def authorized(request: Request) -> bool:
        """The request carries the token: ``Bearer TOKEN``, or HTTP Basic with TOKEN as the password."""
        if token is None:
            return True
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        given, cred = "", cred.strip()
        if scheme.lower() == "bearer":
            given = cred
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                given = ""
        return secrets.compare_digest(given.encode(), token.encode())

    async def auth(request: Request, _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None):
        """The API routes: a 401 names the Bearer scheme (no browser prompt)."""
        if not authorized(request):
            raise APIError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                           {"WWW-Authenticate": "Bearer"})

    async def browser_auth(request: Request):
        """The page and the docs: a 401 carries a Basic challenge, so a browser asks for the token (as the
        password) and then sends it with every request to this server, the page's API calls included."""
        if not authorized(request):
            raise APIError(401, "missing or wrong token: the browser asks for it (any user name, the token as "
                                "the password); programs send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": 'Basic realm="t2igan", charset="UTF-8"'})

    api_auth = [Depends(auth)] if token is not None else []  # no token: no security scheme in the spec either
    page_auth = [Depends(browser_auth)] if token is not None else []

    # ------------------------------------------------------------------ helpers
    def worker_for(name: str | None) -> ModelWorker:
        name = default_model if name is None else name
        if name is None:  # only SRNet models are served
            raise APIError(404, "no text-to-image model is served (only SRNet models: POST /v1/edit)")
        if name not in workers:
            shown = name if len(name) <= 60 else name[:60] + "..."
            raise APIError(404, f"unknown model {shown!r}; served: {', '.join(workers)}")
        return workers[name]

    def check_caption(i: int, c: str) -> None:
        if not c.strip():
            raise APIError(422, f"caption {i} is empty")
        if len(c) > s.max_caption_chars:
            raise APIError(422, f"caption {i} is {len(c)} characters long; the limit is {s.max_caption_chars}")

    def tokenize(w: ModelWorker, captions: list[str]):
        try:
            if w.pipe.vocab is None:  # a frozen pretrained encoder reads the captions in the worker
                w.pipe.text_encoder.check(captions)  # ... and refuses here what it cannot read, not its batch-mates
                return None, None, []
            return w.pipe.vocab.batch(captions, w.pipe.max_words)
        except T2IError as e:
            raise APIError(422, str(e)) from None

    async def client_gone(request: Request) -> None:
        """Returns when the client hangs up. uvicorn does not cancel a request's task when its client
        disconnects; it answers the next ``receive()`` after the body with ``http.disconnect``."""
        while True:  # ends with the disconnect, or when run_job cancels it
            if (await request.receive())["type"] == "http.disconnect":
                return
            await asyncio.sleep(0.01)  # a server that answers something else: do not spin

    async def run_job(w: ModelWorker, job: Job, request: Request) -> Result:
        """Queue ``job`` and wait for it, at most until its deadline and only while the client is there;
        otherwise the job is cancelled (out of the queue, its rows dropped from later forward passes)."""
        job.deadline = time.perf_counter() + s.timeout_s
        try:
            fut = w.submit(job)
        except QueueFull:
            raise APIError(503, f"model {w.name!r} has {w.max_queue} requests waiting; retry shortly",
                           {"Retry-After": "1"}) from None
        waiter = asyncio.wrap_future(fut)
        gone = asyncio.ensure_future(client_gone(request))
        try:
            done, _ = await asyncio.wait({waiter, gone}, timeout=max(0.0, job.deadline - time.perf_counter()),
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server cancelled this request (shutdown)
            w.cancel(job, "cancelled")
            raise
        finally:
            gone.cancel()
        if gone in done:  # nobody to answer: whatever was computed for it is wasted
            w.cancel(job, "cancelled")
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: no "exception was never retrieved" warning
            waiter.cancel()
            raise APIError(499, "client closed the request")
        if waiter not in done:
            w.cancel(job, "timed_out")
            waiter.cancel()
            raise APIError(504, f"request took longer than {s.timeout_s:g} s")
        try:
            res = waiter.result()
        except JobDropped:  # it would end after its deadline at the pace of the last forward passes
            w.cancel(job, "timed_out")
            raise APIError(504, f"request would not be done within {s.timeout_s:g} s at the current load") from None
        except T2IError as e:
            raise APIError(422, str(e)) from None
        w.delivered(job)
        return res

    def encode_png(x: torch.Tensor) -> bytes:
        from PIL import Image as PILImage

        buf = io.BytesIO()
        PILImage.fromarray(x.numpy()).save(buf, format="PNG")
        return buf.getvalue()

    def encode_all(x: torch.Tensor) -> list[str]:
        return [base64.b64encode(encode_png(im)).decode("ascii") for im in x]

    def encode_attention(res: Result, words: list[list[str]], n: int, sizes: list[int]) -> list[AttentionMap]:
        out = []
        first = len(sizes) - len(res.attention)  # map k was used by stage first + k
        for k, att in enumerate(res.attention):  # (N, T, h, w)
            for i in range(att.size(0)):
                ws = words[i // n]
                keep = res.mask[i].nonzero().flatten()[:len(ws)]
                maps, scale = heatmaps(att[i, keep])
                for t, pos in enumerate(keep.tolist()):
                    out.append(AttentionMap(caption_index=i // n, index=i % n, stage=first + k, word_index=pos,
                                            word=ws[t], size=att.size(-1), scale=scale,
                                            png_base64=base64.b64encode(encode_png(maps[t])).decode("ascii")))
        return out

    def wants_png(request: Request, fmt: str | None) -> bool:
        if fmt is not None:
            return fmt == "png"
        accept = request.headers.get("accept", "")
        return "image/png" in accept and "application/json" not in accept

    def timing(t0: float, job: Job) -> dict[str, float]:
        done = time.perf_counter()
        return {"total": round((done - t0) * 1000, 2), "queue": round((job.started - job.enqueued) * 1000, 2)}

    # ------------------------------------------------------------------ routes
    @app.get("/", response_class=HTMLResponse, include_in_schema=False, dependencies=page_auth)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    if s.docs:
        from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

        @app.get("/openapi.json", include_in_schema=False, dependencies=page_auth)
        async def openapi_spec():
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=page_auth)
        async def swagger():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="t2igan API")

        @app.get("/redoc", include_in_schema=False, dependencies=page_auth)
        async def redoc():
            return get_redoc_html(openapi_url="/openapi.json", title="t2igan API")

    @app.get("/healthz", response_model=Health, summary="liveness (never needs a token)")
    async def healthz():
        return Health(status="ok", models=list(workers), version=t2igan.__version__)

    @app.get("/v1/models", response_model=ModelsResponse, dependencies=api_auth,
             responses=responses(401), summary="the served models and the server limits")
    async def list_models():
        def info(n: str, w: ModelWorker) -> ModelInfo:
            p = w.pipe
            own = p.vocab is not None
            return ModelInfo(name=n, family=p.family, title=p.title, image_size=p.image_size, default=n == default_model,
                             text_encoder="damsm" if own else str(getattr(p.text_encoder, "name", "pretrained")),
                             vocab_size=len(p.vocab) if own else None, max_words=p.max_words if own else None,
                             stage_sizes=p.stage_sizes, stages=len(p.stage_sizes) > 1, attention=p.attends_words,
                             queued=w.queued(), stats=dict(w.stats))
        infos = [info(n, w) for n, w in workers.items()]
        limits = {k: getattr(s, k) for k in ("max_caption_chars", "max_captions", "max_n", "max_images",
                                             "max_body_bytes", "max_queue", "timeout_s", "timeout_body_s",
                                             "batching", "max_batch", "max_wait_ms", "exact")}
        return ModelsResponse(models=infos, default=default_model, limits=limits)

    png_doc = {"content": {"image/png": {}}, "description": "one PNG image (exactly one image requested with "
                                                             "?format=png or Accept: image/png)"}

    @app.post("/v1/generate", response_model=GenerateResponse, dependencies=api_auth,
              responses={**responses(400, 401, 404, 406, 408, 413, 422, 500, 503, 504), 200: png_doc},
              summary="images for captions (base64 PNGs in JSON, or one image/png)")
    async def generate(req: GenerateRequest, request: Request,
                       format: Literal["json", "png"] | None = Query(None, description="png: return image/png bytes "
                                                                                       "(exactly one image)")):
        t0 = time.perf_counter()
        w = worker_for(req.model)
        for i, c in enumerate(req.captions):
            check_caption(i, c)
        if len(req.captions) * req.n > s.max_images:
            raise APIError(422, f"{len(req.captions)} captions x n={req.n} is {len(req.captions) * req.n} images; "
                                f"the limit is {s.max_images} per request")
        png = wants_png(request, format)
        if png and len(req.captions) * req.n != 1:
            raise APIError(406, f"image/png returns exactly one image; this request asks for "
                                f"{len(req.captions) * req.n} (use JSON)")
        tokens, lengths, dropped = tokenize(w, req.captions)
        pipe = w.pipe
        stages = req.return_stages and len(pipe.stage_sizes) > 1
        attention = req.return_attention and pipe.attends_words
        job = Job("generate", tokens, lengths, req.seed, n=req.n, truncation=req.truncation, captions=req.captions,
                  stages=stages and not png, attention=attention and not png)
        res = await run_job(w, job, request)
        if png:
            data = await run_in_threadpool(encode_png, res.images[0])
            headers = {"X-Seed": str(req.seed), "X-Model": w.name}
            if dropped:
                headers["X-Dropped-Words"] = ",".join(dropped)[:500].encode("ascii", "replace").decode()
            return Response(data, media_type="image/png", headers=headers)
        def image_list(x: torch.Tensor) -> list[Image]:
            return [Image(caption_index=i // req.n, index=i % req.n, png_base64=b) for i, b in enumerate(encode_all(x))]

        images = await run_in_threadpool(image_list, res.images)
        stage_images = [await run_in_threadpool(image_list, x) for x in res.stages]
        words = job.words(pipe)
        maps = await run_in_threadpool(encode_attention, res, words, req.n, pipe.stage_sizes) if attention else []
        notes = extras_notes(pipe, req.return_stages, req.return_attention)
        if dropped:
            notes.append("words not in the model's vocabulary were ignored: " + ", ".join(dropped))
        return GenerateResponse(model=w.name, family=pipe.family, image_size=pipe.image_size, seed=req.seed,
                                n=req.n, captions=req.captions, images=images, dropped_words=dropped,
                                stage_sizes=pipe.stage_sizes, stages=stage_images, words=words, attention=maps,
                                notes=notes, timing_ms=timing(t0, job))

    @app.post("/v1/interpolate", response_model=InterpolateResponse, dependencies=api_auth,
              responses=responses(400, 401, 404, 408, 413, 422, 500, 503, 504),
              summary="a row of images moving from caption A to caption B (same noise, mixed text encodings)")
    async def interpolate(req: InterpolateRequest, request: Request):
        t0 = time.perf_counter()
        w = worker_for(req.model)
        check_caption(0, req.caption_a)
        check_caption(1, req.caption_b)
        tokens, lengths, dropped = tokenize(w, [req.caption_a, req.caption_b])
        job = Job("interpolate", tokens, lengths, req.seed, steps=req.steps, truncation=req.truncation,
                  captions=[req.caption_a, req.caption_b])
        res = await run_job(w, job, request)
        b64 = await run_in_threadpool(encode_all, res.images)
        alphas = [round(i / (req.steps - 1), 6) for i in range(req.steps)]
        return InterpolateResponse(model=w.name, family=w.pipe.family, image_size=w.pipe.image_size, seed=req.seed,
                                   caption_a=req.caption_a, caption_b=req.caption_b, alphas=alphas,
                                   images=[Image(caption_index=i, index=0, png_base64=b) for i, b in enumerate(b64)],
                                   dropped_words=dropped, timing_ms=timing(t0, job))

    # ------------------------------------------------------------------ SRNet text editing (the Edit-text tab)
    class EditRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        image_base64: str = Field(min_length=1, description="the image of a word (PNG or JPEG file, base64)")
        word: str = Field(min_length=1, max_length=40, description="the new word")
        model: str | None = Field(None, description="served SRNet model name (default: the first)")

    @app.get("/v1/editors", dependencies=api_auth, responses=responses(401), summary="the served SRNet models")
    async def list_editors():
        return {"editors": [{"name": n, "image_size": list(e.size)} for n, e in editors.items()]}

    @app.post("/v1/edit", dependencies=api_auth, responses=responses(400, 401, 404, 408, 413, 422, 500),
              summary="SRNet: replace the word in an image; returns the parts (source, plain word, skeleton, "
                      "converted text, background, fused) as base64 PNGs")
    async def edit_text(req: EditRequest):
        t0 = time.perf_counter()
        name = req.model if req.model is not None else next(iter(editors), None)
        if name not in editors:
            raise APIError(404, f"unknown SRNet model {str(name)[:60]!r}; served: {', '.join(editors) or 'none'}")
        try:
            data = base64.b64decode(req.image_base64, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(422, "image_base64: not valid base64") from None
        try:
            parts = await run_in_threadpool(editors[name].edit_bytes, data, req.word)
        except T2IError as e:
            raise APIError(422, str(e)) from None
        return {"model": name, "image_size": list(editors[name].size), "word": req.word, "order": list(PARTS),
                "parts": {k: base64.b64encode(v).decode("ascii") for k, v in parts.items()},
                "timing_ms": {"total": round((time.perf_counter() - t0) * 1000, 2)}}

    return app


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` (by Content-Length or as read) gets 413 JSON;
    one that has not all arrived ``timeout_s`` after the headers gets 408 JSON and the connection closed."""

    def __init__(self, app, max_bytes: int, timeout_s: float | None = None):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def _too_large(self, scope, receive, send) -> None:
        await JSONResponse({"error": f"request body is larger than {self.max_bytes} bytes", "status": 413}, 413)(
            scope, receive, send)

    async def _too_slow(self, scope, receive, send) -> None:
        await JSONResponse({"error": f"request body did not arrive within {self.timeout_s:g} s", "status": 408}, 408,
                           headers={"Connection": "close"})(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        cl = dict(scope["headers"]).get(b"content-length")
        if cl is not None and (not cl.isdigit() or int(cl) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        body, more = b"", True
        loop = asyncio.get_running_loop()
        end = None if self.timeout_s is None else loop.time() + self.timeout_s
        while more:  # read it all here, bounded in size and time, then replay it to the app
            try:
                msg = await asyncio.wait_for(receive(), None if end is None else max(0.0, end - loop.time()))
            except asyncio.TimeoutError:
                return await self._too_slow(scope, receive, send)
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


@functools.cache
def header_guard_protocol(timeout_s: float):
    """uvicorn's h11 protocol plus a header timeout: a connection that has not sent a request's complete
    headers ``timeout_s`` after connecting (or after that request's first byte) gets a 408 (or, if it sent
    nothing, no answer) and is closed. uvicorn (0.54) has none: its only timer is the keep-alive one
    armed after a response, so a socket that connects and then trickles headers, or sends nothing,
    is held forever. h11 only (this protocol replaces httptools when that is installed)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = f'{{"error": "request headers did not arrive within {timeout_s:g} s", "status": 408}}'.encode()
    reply = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
             b"content-length: %d\r\n\r\n%s" % (len(body), body))

    class HeaderTimeoutH11Protocol(H11Protocol):
        _header_timer = None
        _header_bytes = False  # bytes of the request being waited for have arrived

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:  # (part of) a request's head
                self._header_bytes = True
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # its headers are complete
                self._disarm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            self._header_bytes = False

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self._header_bytes:
                self.transport.write(reply)
            self.transport.close()

    return HeaderTimeoutH11Protocol


def uvicorn_options(s: Settings) -> dict:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: the connection limits of ``s``."""
    return {"http": header_guard_protocol(float(s.timeout_header_s)), "timeout_keep_alive": s.timeout_keep_alive_s,
            "timeout_graceful_shutdown": s.timeout_graceful_shutdown_s,
            "h11_max_incomplete_event_size": s.max_header_bytes}


def token_from_env(token: str | None) -> str | None:
    t = token if token is not None else os.environ.get("T2IGAN_TOKEN")
    return t or None
