"""Dynamic batching: one worker thread per served model groups queued requests into one forward pass.

A *job* is one HTTP request: its caption tokens plus how to turn the sentence vectors of its
captions into per-image conditions and its own noise (drawn from its own seed, exactly as
``Pipeline.generate`` draws it). The worker takes the first queued job, waits at most
``max_wait_ms`` for more (only while requests have been arriving together, so a lone client is
never made to wait), takes what else is queued up to ``max_batch`` images, runs the text
encoder once and the generator once per ``max_batch`` rows under ``torch.inference_mode()``,
and hands each job its slice. With ``batching=False`` every job gets its own forward pass.

Float kernels on CPU (oneDNN convolutions, MKL GEMMs) pick different code paths for
different batch sizes, so an image computed in a batch of 5 can differ from the same image
computed alone by ~1e-6 (rarely one PNG level). ``exact=True`` pads every forward pass to at
least ``EXACT_MIN_ROWS`` rows, where the kernels no longer change with the batch size, so an
image never depends on what it was batched with (bitwise) at the cost of extra compute for
small batches.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field

import torch

from t2igan.pipeline import Pipeline

EXACT_MIN_ROWS = 16


class QueueFull(Exception):
    """The model's queue holds ``max_queue`` requests already."""


@dataclass
class Job:
    """One request: ``tokens``/``lengths`` for its captions and how to expand them into images.

    kind "generate": images = captions x n (caption-major), noise ``pipe.noise(k * n, seed, truncation)``.
    kind "interpolate": two captions; ``steps`` images whose condition moves linearly from the first
    sentence vector to the second, all with the same noise ``pipe.noise(1, seed, truncation)``.
    """

    kind: str
    tokens: torch.Tensor  # (k, T) long
    lengths: torch.Tensor  # (k,) long
    seed: int
    n: int = 1
    steps: int = 0
    truncation: float | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0

    @property
    def images(self) -> int:
        return self.tokens.size(0) * self.n if self.kind == "generate" else self.steps

    def noise(self, pipe: Pipeline) -> torch.Tensor:
        if self.kind == "generate":
            return pipe.noise(self.images, self.seed, self.truncation)
        return pipe.noise(1, self.seed, self.truncation).expand(self.steps, -1)

    def conditions(self, sent: torch.Tensor) -> torch.Tensor:
        """Per-image sentence conditions from this job's sentence vectors ``sent`` (k, D)."""
        if self.kind == "generate":
            return sent.repeat_interleave(self.n, 0)
        alpha = torch.linspace(0, 1, self.steps, dtype=sent.dtype, device=sent.device)[:, None]  # (steps, 1)
        return (1 - alpha) * sent[0:1] + alpha * sent[1:2]


def _padded(fn, min_rows: int, *xs: torch.Tensor):
    """``fn(*xs)`` with the batch padded (by repeating row 0) to at least ``min_rows`` rows."""
    b = xs[0].size(0)
    if b >= min_rows:
        return fn(*xs)
    pad = [torch.cat([x, x[:1].expand(min_rows - b, *x.shape[1:])]) for x in xs]
    out = fn(*pad)
    return tuple(o[:b] for o in out) if isinstance(out, tuple) else out[:b]


class ModelWorker:
    """Queue + worker thread for one pipeline. ``submit(job)`` returns a concurrent future whose
    result is a uint8 tensor ``[images, S, S, 3]``."""

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

    def run(self, jobs: list[Job]) -> list[torch.Tensor]:
        """One batch: text encoder once over all captions, generator once per ``max_batch`` images."""
        pipe, dev = self.pipe, self.pipe.device
        now = time.perf_counter()
        for j in jobs:
            j.started = now
        min_rows = EXACT_MIN_ROWS if self.exact else 1
        with torch.inference_mode():
            tokens = torch.cat([j.tokens for j in jobs]).to(dev)
            lengths = torch.cat([j.lengths for j in jobs]).to(dev)
            _, sent, _ = _padded(pipe.text_encoder, min_rows, tokens, lengths)  # (K, D)
            conds, noise, k = [], [], 0
            for j in jobs:
                kj = j.tokens.size(0)
                conds.append(j.conditions(sent[k:k + kj]))
                noise.append(j.noise(pipe))
                k += kj
            cond, z = torch.cat(conds), torch.cat(noise).to(dev)
            out = []
            for i in range(0, cond.size(0), self.max_batch):
                out.append(_padded(pipe.generator, min_rows, z[i:i + self.max_batch], cond[i:i + self.max_batch]))
                self.stats["forward_passes"] += 1
            x = torch.cat(out).float().add(1).div(2).clamp(0, 1)
            x = x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()  # (N, S, S, 3)
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        self.stats["images"] += x.size(0)
        self.stats["max_batch_images"] = max(self.stats["max_batch_images"], x.size(0))
        return list(torch.split(x, [j.images for j in jobs]))
