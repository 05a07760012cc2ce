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

Work nobody waits for is not computed. A job carries a ``deadline`` (when its request answers 504)
and a ``cancelled`` flag (set by :meth:`ModelWorker.cancel` when its client hung up or it timed
out; a cancelled job also leaves the queue at once, freeing its place). The worker skips dead
jobs when it takes work, and before every forward pass drops the rows of jobs that died since,
so a request cancelled while its batch runs costs at most the pass already running. A job that
would miss its deadline at the pace of the recent forward passes (:meth:`ModelWorker.expected_s`)
is not started either, and a batch grows only while it would still end before all its jobs'
deadlines: under overload every queued job would otherwise start just before its deadline and
finish after it, all its work thrown away. ``stats`` counts images computed, delivered (handed to
a request still waiting) and skipped.

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
import math
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch

from t2igan.models.blocks import GenOutput
from t2igan.pipeline import Pipeline

EXACT_MIN_ROWS = 16


class QueueFull(Exception):
    """The model's queue holds ``max_queue`` requests already."""


class JobDropped(Exception):
    """The worker did not compute (all of) a job: it was cancelled or its deadline passed first."""

    def __init__(self, expired: bool):
        super().__init__("deadline passed before it was computed" if expired else "cancelled")
        self.expired = expired


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
    deadline: float = math.inf  # time.perf_counter() after which nobody waits for the result
    cancelled: bool = False  # its request is gone (client hung up, or it answered 504): see ModelWorker.cancel

    def live(self, now: float | None = None) -> bool:
        """Someone still waits for this job's images."""
        return not self.cancelled and (time.perf_counter() if now is None else now) < self.deadline

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
        # images (= images_computed, the older name): rows the generator computed for jobs (exact mode's padding
        # rows not counted); images_delivered: handed to a request still waiting for them; images_skipped: never
        # computed because their request was cancelled or expired first. requests_cancelled: the client hung up;
        # requests_timed_out: answered 504. Written under _stats_lock (worker thread and event loop both count).
        self.stats = {"requests": 0, "images": 0, "batches": 0, "forward_passes": 0, "max_batch_images": 0,
                      "images_computed": 0, "images_delivered": 0, "images_skipped": 0, "requests_delivered": 0,
                      "requests_cancelled": 0, "requests_timed_out": 0}
        self._stats_lock = threading.Lock()
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._company = True  # the first batch waits max_wait for others
        self._recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=16)  # (seconds, rows) per pass
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

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Nobody waits for ``job`` any more (``reason``: "cancelled", the client hung up, or "timed_out"):
        flag it and take it out of the queue now, so it is not computed and its place is free. A job
        already in a forward pass finishes that pass; its later passes are dropped."""
        with self._cond:
            if job.cancelled:
                return
            job.cancelled = True
            for i, q in enumerate(self._queue):  # by identity: Job's dataclass == would compare tensors
                if q is job:
                    del self._queue[i]
                    self.count(images_skipped=job.images)
                    break
            self.count(**{f"requests_{reason}": 1})
        job.future.cancel()  # succeeds only while no worker has started it; the worker skips it then

    def delivered(self, job: Job) -> None:
        """``job``'s result reached a request that was still waiting for it."""
        self.count(requests_delivered=1, images_delivered=job.images)

    def count(self, **kw: int) -> None:
        with self._stats_lock:
            for k, v in kw.items():
                self.stats[k] = self.stats.get(k, 0) + v

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ worker side
    def _drop(self, job: Job, images: int) -> None:
        """Worker side: ``job`` will not get its images; ``images`` of them were not computed."""
        self.count(images_skipped=images)
        fut = job.future
        if fut.running() or fut.set_running_or_notify_cancel():  # not cancelled: tell whoever still waits
            fut.set_exception(JobDropped(expired=not job.cancelled))

    def expected_s(self, rows: int) -> float:
        """An estimate of the seconds the forward passes over ``rows`` images take, from the last 16 passes
        (0 before any): per pass, the median recent time per image x its images, but no longer than the
        slowest recent pass over as many images or more (a pass costs no less with more images; on a
        GPU a small pass costs about what a big one does). Worker thread only."""
        if not self._recent or rows <= 0:
            return 0.0
        per_row = statistics.median(sec / n for sec, n in self._recent)

        def one_pass(r: int) -> float:
            bigger = [sec for sec, n in self._recent if n >= r]
            return min(per_row * r, max(bigger)) if bigger else per_row * r
        full, rest = divmod(rows, self.max_batch)
        return full * one_pass(self.max_batch) + (one_pass(rest) if rest else 0.0)

    def _skip_dead(self) -> None:
        """Drop the jobs at the head of the queue that are dead, or would be by the time they are computed
        (under ``_cond``)."""
        now = time.perf_counter()
        while self._queue and not self._queue[0].live(now + self.expected_s(self._queue[0].images)):
            job = self._queue.popleft()
            self._drop(job, job.images)

    def _take(self) -> list[Job] | None:
        """Block for the next group of live jobs (None when closed)."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                self._skip_dead()
                if self._queue:
                    break
            jobs = [self._queue.popleft()]
            if not self.batching:
                return jobs
            total, due = jobs[0].images, jobs[0].deadline  # due: the batch's earliest deadline
            # wait for company only while requests have been arriving together (the last batch had
            # more than one); a lone client is served at once instead of paying max_wait every time
            wait_until = jobs[0].enqueued + (self.max_wait if self._company else 0.0)
            while total < self.max_batch:
                self._skip_dead()
                if self._queue:
                    nxt = self._queue[0]
                    if total + nxt.images > self.max_batch:
                        break
                    # a bigger batch ends later: stop before it would end after one of its jobs' deadlines
                    if time.perf_counter() + self.expected_s(total + nxt.images) > min(due, nxt.deadline):
                        break
                    jobs.append(self._queue.popleft())
                    total += nxt.images
                    due = min(due, nxt.deadline)
                    continue
                left = wait_until - time.perf_counter()
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
            now, live = time.perf_counter(), jobs
            for _ in range(len(jobs)):  # dead, or would be when the batch ends (it shrinks as jobs go): not computed
                end = now + self.expected_s(sum(j.images for j in live))
                dead = {id(j) for j in live if not j.live(end)}  # decided once per job (the flag may flip meanwhile)
                if not dead:
                    break
                for j in live:
                    if id(j) in dead:
                        self._drop(j, j.images)
                live = [j for j in live if id(j) not in dead]
            started = []
            for j in live:
                if j.future.set_running_or_notify_cancel():
                    started.append(j)
                else:  # its future was cancelled without cancel() (a caller's own fut.cancel())
                    self.count(images_skipped=j.images)
            live = started
            if not live:
                continue
            try:
                outs = self.run(live)
            except Exception as e:  # noqa: BLE001 - handed to the waiting requests
                for j in live:
                    j.future.set_exception(e)
                continue
            for j, o in zip(live, outs):
                if o is None:  # died during the batch: its remaining rows were not computed
                    j.future.set_exception(JobDropped(expired=not j.cancelled))
                else:
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

    def run(self, jobs: list[Job]) -> list[Result | None]:
        """One batch: text encoder once over all captions, ``Pipeline.synthesize`` once per ``max_batch`` images.

        Before every forward pass the rows of jobs that died meanwhile (cancelled, or past their deadline)
        are dropped; such a job gets ``None`` instead of a :class:`Result`."""
        pipe, dev = self.pipe, self.pipe.device
        now = time.perf_counter()
        for j in jobs:
            j.started = now
        min_rows = EXACT_MIN_ROWS if self.exact else 1
        sizes = [j.images for j in jobs]
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
            total = z.size(0)
            owner = torch.repeat_interleave(torch.arange(len(jobs)), torch.tensor(sizes))  # row -> its job
            todo = torch.arange(total)  # rows still to compute, in order
            done: list[torch.Tensor] = []
            stages: list[list[torch.Tensor]] = []
            att: list[list[torch.Tensor]] = []
            while todo.numel():
                now = time.perf_counter()
                alive = torch.tensor([j.live(now) for j in jobs])
                if not bool(alive.all()):  # nobody waits for these rows any more
                    keep = alive[owner[todo]]
                    self.count(images_skipped=int((~keep).sum()))
                    todo = todo[keep]
                    if not todo.numel():
                        break
                idx, todo = todo[:self.max_batch], todo[self.max_batch:]
                if idx.numel() == total:  # the usual case: every row in one pass, the tensors as they are
                    args = (z, sent, words, mask, eps)
                else:
                    di = idx.to(dev)
                    args = tuple(None if a is None else a[di] for a in (z, sent, words, mask, eps))
                t_pass = time.perf_counter()
                out = _padded(pipe.synthesize, min_rows, *args)
                stages.append([_to_uint8(x) for x in (out.images if want_stages else out.images[-1:])])
                att.append([a.float().cpu() for a in out.attention] if want_att else [])
                self._recent.append((time.perf_counter() - t_pass, idx.numel()))
                done.append(idx)
                self.count(forward_passes=1)
            if not done:
                return [None] * len(jobs)
            stages_all = [torch.cat([b[s] for b in stages]) for s in range(len(stages[0]))]
            att_all = [torch.cat([b[s] for b in att]) for s in range(len(att[0]))]
            mask = mask.cpu()
        computed = torch.cat(done)  # increasing global row numbers
        n = computed.numel()
        self.count(batches=1, requests=len(jobs), images=n, images_computed=n)
        with self._stats_lock:
            self.stats["max_batch_images"] = max(self.stats["max_batch_images"], n)
        pos = torch.full((total,), -1, dtype=torch.long)
        pos[computed] = torch.arange(n)
        out_jobs: list[Result | None] = []
        first = 0
        for j, size in zip(jobs, sizes):
            rows = pos[first:first + size]
            m = mask[first:first + size]
            first += size
            if bool((rows < 0).any()):  # died mid-batch: part of it was never computed
                out_jobs.append(None)
                continue
            sl = slice(int(rows[0]), int(rows[0]) + size)  # a job's rows are consecutive, so are their positions
            out_jobs.append(Result(stages_all[-1][sl], [s[sl] for s in stages_all] if j.stages else [],
                                   [a[sl] for a in att_all] if j.attention else [],
                                   m if j.attention and att_all else None))
        return out_jobs
