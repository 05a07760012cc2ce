"""Dynamic batching: one worker thread per served model groups queued requests into one forward pass.

A *job* is one HTTP request: its captions (as tokens for vocabulary models) plus how to turn
the text encoding of its captions (sentence vectors, word features and their mask) into
per-image conditions and its own latents (noise and conditioning-augmentation noise, drawn
from its own seed exactly as ``Pipeline.generate`` draws them). The worker takes the first
queued job, waits at most ``max_wait_ms`` for more (only while requests have been arriving
together, so a lone client is never made to wait), takes what else is queued up to
``max_batch`` images, runs the text encoder once and ``Pipeline.synthesize`` (the generator of
any family) once per ``max_batch`` rows under ``torch.inference_mode()``, and hands each job
its slice: final images, and every stage's images and the word attention maps when the job
asked for them. With ``batching=False`` every job gets its own forward pass.

Float kernels on CPU (oneDNN convolutions, MKL GEMMs) pick different code paths for
different batch sizes, so an image computed in a batch of 5 can differ from the same image
computed alone by ~1e-6 (rarely one PNG level). ``exact=True`` pads every forward pass to at
least ``EXACT_MIN_ROWS`` rows, where the kernels no longer change with the batch size, so an
image never depends on what it was batched with (bitwise) at the cost of extra compute for
small batches. The text encoders do not compute a batch of captions row by row (the bi-LSTM's
packed steps, a transformer's padding to the longest caption), so in exact mode every caption
is encoded on its own, also padded to ``EXACT_MIN_ROWS`` identical rows. Exact mode covers
everything handed back: images, every stage and the float attention maps.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field

import torch

from t2igan.models.blocks import GenOutput
from t2igan.pipeline import Pipeline

EXACT_MIN_ROWS = 16


class QueueFull(Exception):
    """The model's queue holds ``max_queue`` requests already."""


@dataclass
class Job:
    """One request: ``tokens``/``lengths`` for its captions (vocabulary models; ``None`` for a frozen
    pretrained text encoder, which reads ``captions``) and how to expand them into images.

    kind "generate": images = captions x n (caption-major), latents ``pipe.latents(k * n, seed, truncation)``.
    kind "interpolate": two captions; ``steps`` images whose condition moves linearly from the first
    caption's text encoding to the second's, all with the same latents ``pipe.latents(1, seed, truncation)``.
    ``stages`` / ``attention``: also hand back every stage's images / the word attention maps.
    """

    kind: str
    tokens: torch.Tensor | None  # (k, T) long
    lengths: torch.Tensor | None  # (k,) long
    seed: int
    n: int = 1
    steps: int = 0
    truncation: float | None = None
    captions: list[str] | None = None
    stages: bool = False
    attention: bool = False
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0

    @property
    def count(self) -> int:
        """Captions in this job."""
        return self.tokens.size(0) if self.tokens is not None else len(self.captions)

    @property
    def images(self) -> int:
        return self.count * self.n if self.kind == "generate" else self.steps

    def latents(self, pipe: Pipeline):
        """``(z, eps)`` for this job's images (eps None for models without conditioning augmentation)."""
        if self.kind == "generate":
            return pipe.latents(self.images, self.seed, self.truncation)
        z, eps = pipe.latents(1, self.seed, self.truncation)
        return z.expand(self.steps, -1), None if eps is None else eps.expand(self.steps, -1)

    def noise(self, pipe: Pipeline) -> torch.Tensor:
        return self.latents(pipe)[0]

    def conditions(self, sent: torch.Tensor, words: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """Per-image conditions from this job's text encoding: sentence vectors ``sent`` (k, D), and when
        given the word features ``words`` (k, D, T) with their ``mask`` (k, T), which are returned too.

        Interpolation mixes both linearly; the words position by position, attended over the words of
        either caption (``mask`` of A or B) in between and exactly caption A's / B's at the ends."""
        if self.kind == "generate":
            if words is None:
                return sent.repeat_interleave(self.n, 0)
            return tuple(t.repeat_interleave(self.n, 0) for t in (sent, words, mask))
        alpha = torch.linspace(0, 1, self.steps, dtype=sent.dtype, device=sent.device)[:, None]  # (steps, 1)
        s = (1 - alpha) * sent[0:1] + alpha * sent[1:2]
        if words is None:
            return s
        a = alpha[:, :, None]  # (steps, 1, 1)
        w = (1 - a) * words[0:1] + a * words[1:2]  # (steps, D, T)
        m = (mask[0] | mask[1]).expand(self.steps, -1).clone()  # (steps, T)
        m[0], m[-1] = mask[0], mask[1]
        return s, w, m

    def words(self, pipe: Pipeline) -> list[list[str]]:
        """The words each caption is read as (vocabulary models: known words, up to ``max_words``)."""
        if self.tokens is None:
            return [[] for _ in range(self.count)]
        return [[pipe.vocab.words[int(i)] for i in t[:int(n)]] for t, n in zip(self.tokens, self.lengths)]


@dataclass
class Result:
    """What a job gets back: ``images`` uint8 ``[N, S, S, 3]``; when asked, ``stages`` (uint8 per stage,
    smallest first, the last equal to ``images``), ``attention`` (float ``[N, T, h, w]`` per attended
    stage; stage ``k + 1`` attended with map ``k``) and ``mask`` (bool ``[N, T]``, the words attended)."""

    images: torch.Tensor
    stages: list[torch.Tensor] = field(default_factory=list)
    attention: list[torch.Tensor] = field(default_factory=list)
    mask: torch.Tensor | None = None


def _padded(fn, min_rows: int, *xs: torch.Tensor | None):
    """``fn(*xs)`` with the batch padded (by repeating row 0) to at least ``min_rows`` rows; ``None``
    inputs pass through. The output (a tensor, tuple, or ``GenOutput``) is cut back to the batch."""
    b = next(x for x in xs if x is not None).size(0)
    if b >= min_rows:
        return fn(*xs)
    pad = [None if x is None else torch.cat([x, x[:1].expand(min_rows - b, *x.shape[1:])]) for x in xs]
    out = fn(*pad)
    if isinstance(out, GenOutput):
        return GenOutput(images=[o[:b] for o in out.images], attention=[o[:b] for o in out.attention])
    return tuple(o[:b] for o in out) if isinstance(out, tuple) else out[:b]


def _pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with its last dimension padded with zeros (False) to ``size``."""
    if x.size(-1) == size:
        return x
    return torch.cat([x, x.new_zeros(*x.shape[:-1], size - x.size(-1))], -1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float ``[N, 3, S, S]`` -> uint8 ``[N, S, S, 3]`` on the CPU (as ``Pipeline.__call__`` rounds)."""
    x = x.float().add(1).div(2).clamp(0, 1)
    return x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


class ModelWorker:
    """Queue + worker thread for one pipeline. ``submit(job)`` returns a concurrent future whose
    result is a :class:`Result` (``result.images``: uint8 ``[images, S, S, 3]``)."""

    def __init__(self, name: str, pipe: Pipeline, batching: bool = True, max_batch: int = 64,
                 max_wait_ms: float = 10.0, max_queue: int = 64, exact: bool = False):
        self.name, self.pipe = name, pipe
        self.batching, self.max_batch, self.max_wait = batching, int(max_batch), max_wait_ms / 1000.0
        self.max_queue, self.exact = int(max_queue), exact
        self.pipe.text_encoder.eval()
        self.pipe.generator.eval()
        self.stats = {"requests": 0, "images": 0, "batches": 0, "forward_passes": 0, "max_batch_images": 0}
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._company = True  # the first batch waits max_wait for others
        self._thread = threading.Thread(target=self._loop, name=f"t2igan-serve-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, job: Job) -> concurrent.futures.Future:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"model {self.name!r} is shut down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(self.name)
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ worker side
    def _take(self) -> list[Job] | None:
        """Block for the next group of jobs (None when closed)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            jobs = [self._queue.popleft()]
            if not self.batching:
                return jobs
            total = jobs[0].images
            # wait for company only while requests have been arriving together (the last batch had
            # more than one); a lone client is served at once instead of paying max_wait every time
            deadline = jobs[0].enqueued + (self.max_wait if self._company else 0.0)
            while total < self.max_batch:
                if self._queue:
                    if total + self._queue[0].images > self.max_batch:
                        break
                    job = self._queue.popleft()
                    jobs.append(job)
                    total += job.images
                    continue
                left = deadline - time.perf_counter()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            self._company = len(jobs) > 1
            return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # drop timed-out ones
            if not jobs:
                continue
            try:
                outs = self.run(jobs)
            except Exception as e:  # noqa: BLE001 - handed to the waiting requests
                for j in jobs:
                    j.future.set_exception(e)
                continue
            for j, o in zip(jobs, outs):
                j.future.set_result(o)

    def encode(self, jobs: list[Job], min_rows: int):
        """The text encoder over every job's captions: ``words [K, D, T]``, ``sent [K, D]``, ``mask [K, T]``.

        Batched: one call over all captions. Exact (``min_rows > 1``): every caption on its own, padded
        to ``min_rows`` identical rows, because a batch of captions is not computed row-independently
        (the bi-LSTM's packed sequence steps over the captions still running, a transformer pads to
        the longest caption), so a caption's encoding would depend on its company by ~1e-8."""
        pipe = self.pipe
        if pipe.vocab is not None:
            dev = pipe.device
            tokens = torch.cat([j.tokens for j in jobs]).to(dev)
            lengths = torch.cat([j.lengths for j in jobs]).to(dev)
            if min_rows <= 1:
                return pipe.text_encoder.encode_tokens(tokens, lengths)
            parts = [_padded(pipe.text_encoder.encode_tokens, min_rows, tokens[i:i + 1], lengths[i:i + 1])
                     for i in range(tokens.size(0))]
        else:
            captions = [c for j in jobs for c in j.captions]
            if min_rows <= 1:
                return pipe.encode(captions)
            parts = [tuple(t[:1] for t in pipe.encode([c] * min_rows)) for c in captions]
        T = max(m.size(1) for _, _, m in parts)
        words = torch.cat([_pad_last(w, T) for w, _, _ in parts])  # padded words: zero, masked out
        mask = torch.cat([_pad_last(m, T) for _, _, m in parts])
        return words, torch.cat([s for _, s, _ in parts]), mask

    def run(self, jobs: list[Job]) -> list[Result]:
        """One batch: text encoder once over all captions, ``Pipeline.synthesize`` once per ``max_batch`` images."""
        pipe, dev = self.pipe, self.pipe.device
        now = time.perf_counter()
        for j in jobs:
            j.started = now
        min_rows = EXACT_MIN_ROWS if self.exact else 1
        with torch.inference_mode():
            words, sent, mask = self.encode(jobs, min_rows)  # (K, D, T), (K, D), (K, T)
            conds, zs, epss, k = [], [], [], 0
            for j in jobs:
                kj = j.count
                conds.append(j.conditions(sent[k:k + kj], words[k:k + kj], mask[k:k + kj]))
                z, eps = j.latents(pipe)
                zs.append(z)
                epss.append(eps)
                k += kj
            sent, words, mask = (torch.cat([c[i] for c in conds]) for i in range(3))
            z = torch.cat(zs).to(dev)
            eps = None if epss[0] is None else torch.cat(epss).to(dev)
            want_stages, want_att = any(j.stages for j in jobs), any(j.attention for j in jobs)
            stages: list[list[torch.Tensor]] = []
            att: list[list[torch.Tensor]] = []
            for i in range(0, z.size(0), self.max_batch):
                sl = slice(i, i + self.max_batch)
                out = _padded(pipe.synthesize, min_rows, z[sl], sent[sl], words[sl], mask[sl],
                              None if eps is None else eps[sl])
                stages.append([_to_uint8(x) for x in (out.images if want_stages else out.images[-1:])])
                att.append([a.float().cpu() for a in out.attention] if want_att else [])
                self.stats["forward_passes"] += 1
            stages_all = [torch.cat([b[s] for b in stages]) for s in range(len(stages[0]))]
            att_all = [torch.cat([b[s] for b in att]) for s in range(len(att[0]))]
            mask = mask.cpu()
        x = stages_all[-1]
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        self.stats["images"] += x.size(0)
        self.stats["max_batch_images"] = max(self.stats["max_batch_images"], x.size(0))
        sizes = [j.images for j in jobs]
        cut = lambda ts: [list(torch.split(t, sizes)) for t in ts]  # noqa: E731 - per tensor, per job
        images, st, at, masks = list(torch.split(x, sizes)), cut(stages_all), cut(att_all), torch.split(mask, sizes)
        return [Result(images[q], [s[q] for s in st] if j.stages else [],
                       [a[q] for a in at] if j.attention else [], masks[q] if j.attention and at else None)
                for q, j in enumerate(jobs)]
