"""Training and generation speed of each model, each fast path on/off as a ratio, FLOPs and
the fraction of the machine's matmul throughput reached, and the data pipeline's rate.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/train_speed.py                 # CPU, 1 thread
    python benchmarks/train_speed.py --device cuda --variants reference,bf16,channels_last,bf16+channels_last,compile,fast

Models are the project's presets (``configs/dfgan_synth64.yaml``, ``configs/dfgan_synth256.yaml``,
``configs/damsm_synth64.yaml``) with random weights and random batches (speed does not depend on
them); ``--batch-256`` lowers the 256x256 batch on a CPU, where one preset step takes minutes.
Variants are ``train.*`` overrides; every variant of a model starts from the same weights and
runs in alternating rounds (reference, v1, v2, ..., reference, ...) in this one process, so
load from other jobs hits all alike, and its ratio to the reference is the median of the
per-round ratios. Peak memory: on a CPU, the resident-set growth (sampled every 2 ms) while
a fresh process runs the variant's warm-up and timed steps, from after its weights and batches
are built (in the timing process the allocator keeps what earlier variants freed, so growth
there depends on the order); on a GPU ``torch.cuda.max_memory_allocated``.

Result: ``benchmarks/results/train_speed_<device>.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from machine import describe, matmul_gflops  # benchmarks/machine.py (run as a script from the repo root)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2igan.config import load_config  # noqa: E402
from t2igan.data.dataset import Batch  # noqa: E402
from t2igan.data.text import Vocabulary  # noqa: E402
from t2igan.models import dfgan  # noqa: E402
from t2igan.text.damsm import TextEncoder  # noqa: E402
from t2igan.train import fast  # noqa: E402
from t2igan.families.damsm import DAMSMStep  # noqa: E402
from t2igan.families.dfgan import DFGANStep  # noqa: E402
from t2igan.text.conditioning import Conditioning  # noqa: E402
from t2igan.text.damsm_encoder import DAMSMCaptionEncoder  # noqa: E402

VARIANTS = {
    "reference": [],
    "foreach_adam": ["train.adam=foreach"],
    "channels_last": ["train.channels_last=true"],
    "bf16": ["train.precision=bf16"],
    "bf16+channels_last": ["train.precision=bf16", "train.channels_last=true"],
    "compile": ["train.compile=true"],
    "fused_upsample": ["train.fused_upsample=true"],
    "fused_upsample+channels_last": ["train.fused_upsample=true", "train.channels_last=true"],
    "fused_upsample+compile": ["train.fused_upsample=true", "train.compile=true"],
    "fp16": ["train.precision=fp16"],
    "accumulate2": ["train.accumulate=2"],  # same update, 2 micro-batches: peak memory vs time
    "accumulate4": ["train.accumulate=4"],
    "fast": ["train.adam=foreach", "train.channels_last=true", "train.precision=bf16", "train.compile=true",
             "train.fused_upsample=true"],
}
MODELS = {"dfgan64": "configs/dfgan_synth64.yaml", "dfgan256": "configs/dfgan_synth256.yaml", "damsm": "configs/damsm_synth64.yaml"}
WORDS = "this flower has red blue pink white yellow petals and a center the middle is round pointed thin large small".split()


class PeakRSS:
    """Peak resident set size growth (bytes) of this process while the block runs."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.stop = False
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def grown(self) -> int:
        return self.peak - self.base


def _peak_rss_child(model: str, variant: str, batch: int | None, steps: int, threads: int, conn) -> None:
    torch.set_num_threads(threads)
    cfg, step = build(model, VARIANTS[variant], torch.device("cpu"), batch)
    data = batches(cfg, steps, torch.device("cpu"), len(step.vocab))
    with PeakRSS() as rss:
        for k, b in enumerate(data):
            step.train_step(b, k)
    conn.send(rss.grown)


def fresh_process_peak_rss(model: str, variant: str, batch: int | None, steps: int, threads: int) -> int:
    """Peak resident-set growth (bytes) of a new process running ``steps`` training steps."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_peak_rss_child, args=(model, variant, batch, steps, threads, send))
    p.start()
    try:
        return recv.recv()
    finally:
        p.join()


def build(model: str, extra: list[str], device: torch.device, batch: int | None):
    o = [f"train.batch_size={batch}"] if batch else []
    cfg = load_config(ROOT / MODELS[model], o + list(extra))
    vocab = Vocabulary.build([" ".join(WORDS)])
    torch.manual_seed(0)
    if cfg.task == "damsm":
        step = DAMSMStep(cfg, vocab)
    else:
        enc_args = dict(ntoken=len(vocab), ninput=300, nhidden=256, nlayers=1, drop_prob=0.5)
        text = Conditioning(DAMSMCaptionEncoder(TextEncoder(**enc_args), vocab, cfg.data.max_words), [], "")
        step = DFGANStep(cfg, text, vocab)
        step.to_device(device)
    for m in step.modules.values():
        m.to(device)
    fast.prepare_step(step, cfg.train, device)
    return cfg, step


def batches(cfg, n: int, device: torch.device, vocab_size: int) -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    B, S, T = cfg.train.batch_size, cfg.data.image_size, cfg.data.max_words
    out = []
    for _ in range(n):
        x = (torch.rand(B, 3, S, S, generator=g) * 2 - 1).to(device)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lengths = torch.randint(3, T + 1, (B,), generator=g)
        tokens = torch.randint(1, vocab_size, (B, T), generator=g) * (torch.arange(T)[None] < lengths[:, None])
        out.append(Batch(images=[x], tokens=tokens.to(device), lengths=lengths.to(device), wrong_tokens=tokens.to(device),
                         wrong_lengths=lengths.to(device), index=torch.arange(B)))
    return out


class _NoModuleTracking:
    """FlopCounterMode attributes FLOPs to modules with tensor hooks that autograd.grad (the
    MA-GP) refuses; the totals need no attribution."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    fc.mod_tracker = _NoModuleTracking()
    return fc


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(model: str, variants: list[str], a, device) -> dict:
    runs, errors = {}, {}
    for v in variants:
        try:
            cfg, step = build(model, VARIANTS[v], device, a.batch_256 if model == "dfgan256" and device.type == "cpu" else None)
            fast.check(cfg.train, device)
            data = batches(cfg, a.steps, device, len(step.vocab))
            t = time.perf_counter()
            for k, b in enumerate(data[: a.warmup]):  # warm-up (and compilation)
                step.train_step(b, k)
            sync(device)
            runs[v] = {"cfg": cfg, "step": step, "data": data, "warmup_s": time.perf_counter() - t, "times": []}
        except Exception as e:  # a variant this machine cannot run is reported, not fatal
            errors[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(f"  {model} {v}: {errors[v]}", flush=True)
    mem = {}
    for r in range(a.rounds):
        for v, run in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = time.perf_counter()
            for k, b in enumerate(run["data"]):
                run["step"].train_step(b, k)
            sync(device)
            run["times"].append(time.perf_counter() - t)
            if device.type == "cuda":
                mem[v] = max(mem.get(v, 0), torch.cuda.max_memory_allocated(device))
        print(f"  {model} round {r + 1}/{a.rounds}: " + ", ".join(
            f"{v} {len(x['data']) * x['cfg'].train.batch_size / x['times'][-1]:.2f} img/s" for v, x in runs.items()), flush=True)
    if device.type != "cuda":
        for v, run in runs.items():
            mem[v] = fresh_process_peak_rss(model, v, a.batch_256 if model == "dfgan256" else None,
                                            a.warmup + a.steps, a.threads)
    out = {"variants": {}, "errors": errors}
    ref = runs.get("reference")
    for v, run in runs.items():
        B = run["cfg"].train.batch_size
        ips = [len(run["data"]) * B / t for t in run["times"]]
        rec = {"overrides": VARIANTS[v], "batch_size": B, "images_per_s_median": round(statistics.median(ips), 3),
               "images_per_s_rounds": [round(x, 3) for x in ips], "warmup_seconds": round(run["warmup_s"], 1),
               ("peak_cuda_memory_allocated_mb" if device.type == "cuda" else "peak_rss_growth_mb"): round(mem[v] / 2 ** 20, 1)}
        if ref is not None:
            rec["ratio_to_reference"] = round(statistics.median(t0 / t for t0, t in zip(ref["times"], run["times"])), 3)
        out["variants"][v] = rec
    if ref is not None:  # FLOPs of one reference training step
        cfg, step = build(model, [], device, ref["cfg"].train.batch_size)
        b = batches(cfg, 1, device, len(step.vocab))[0]
        with flop_counter() as fc:
            step.train_step(b, 0)
        fpi = fc.get_total_flops() / cfg.train.batch_size
        out["train_flops_per_image"] = fpi
        out["train_gflops_per_s_reference"] = round(fpi * out["variants"]["reference"]["images_per_s_median"] / 1e9, 2)
        out["image_size"] = cfg.data.image_size
        if cfg.task == "dfgan":
            out["generation"] = bench_generation(step, cfg, device, a)
    for run in runs.values():
        run.clear()
    return out


@torch.no_grad()
def bench_generation(step: DFGANStep, cfg, device, a) -> dict:
    """Text encoder + generator in eval mode: latency of 1 image, throughput of a batch of 64;
    the generator as built (reference) and with ``fused_upsample`` (under that key)."""
    res = _bench_generation(copy.deepcopy(step.netG), step, cfg, device, a)
    fused = copy.deepcopy(step.netG)
    dfgan.set_fused_upsample(fused)
    res["fused_upsample"] = _bench_generation(fused, step, cfg, device, a)
    return res


def _bench_generation(G, step: DFGANStep, cfg, device, a) -> dict:
    G.eval()
    enc = step.text_encoder.encoder.eval()  # the DAMSM text encoder of the DAMSMCaptionEncoder (tokens, lengths)
    T = cfg.data.max_words
    res = {}
    for n in (1, 64):
        tokens = torch.randint(1, len(step.vocab), (n, T), device=device)
        lengths = torch.full((n,), T, device=device)

        def gen():
            _, sent, _ = enc(tokens, lengths)
            return G(torch.randn(n, cfg.model.nz, device=device), sent)

        gen()
        times = []
        t_end = time.perf_counter() + a.gen_seconds
        while time.perf_counter() < t_end or len(times) < 3:
            t = time.perf_counter()
            gen()
            sync(device)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        res[f"batch_{n}"] = {"median_seconds": round(med, 5), "images_per_s": round(n / med, 2), "repeats": len(times)}
        if n == 1:
            with flop_counter() as fc:
                gen()
            res["flops_per_image"] = fc.get_total_flops()
    return res


def bench_data(a, device, demand: dict) -> dict:
    """Images/s that the input pipeline (uint8 cache -> DataLoader -> device -> augment) delivers."""
    import tempfile

    from t2igan.data.dataset import TextImageDataset
    from t2igan.data.folder import load_folder
    from t2igan.data.synth import write_synthflowers
    from t2igan.train.trainer import Trainer

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sf"
        write_synthflowers(root, n=a.data_images, size=64, seed=0, workers=1, progress=False)
        data = load_folder(root, "train")
        vocab = Vocabulary.build(c for caps in data.captions for c in caps)
        ds = TextImageDataset(data, vocab, 64, 18, crop=True)
        for workers in sorted({0, a.data_workers}):
            cfg = load_config(ROOT / MODELS["dfgan64"], [f"data.workers={workers}", f"train.out_dir={tmp}/run",
                                                         f"train.device={device}", "train.progress=false"])
            tr = Trainer(cfg, task=type("NoTask", (), {"ema_of": None, "modules": {}, "switches": frozenset()})(), dataset=ds, sample_captions=[])
            it = tr.batches()
            tr.to_batch(next(it), 0)
            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < a.data_seconds:
                b = tr.to_batch(next(it), n)
                sync(device)
                n += b.images[-1].size(0)
            res[f"workers_{workers}"] = round(n / (time.perf_counter() - t), 1)
            del it
    res["training_demand_images_per_s"] = demand
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="dfgan64,dfgan256,damsm")
    ap.add_argument("--variants", default="reference,foreach_adam,channels_last,bf16")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-256", type=int, default=4, help="batch of dfgan256 on a CPU (preset: 32)")
    ap.add_argument("--gen-seconds", type=float, default=3.0)
    ap.add_argument("--data-images", type=int, default=256)
    ap.add_argument("--data-workers", type=int, default=2)
    ap.add_argument("--data-seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    a.steps, a.warmup = max(a.steps, 1), min(a.warmup, max(a.steps, 1))
    variants = a.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant {unknown[0]!r} (one of {', '.join(VARIANTS)})")
    result = {"benchmark": "training / generation speed per model and fast path", "machine": describe(),
              "device": str(device), "threads": torch.get_num_threads(),
              "matmul_gflops_fp32": round(matmul_gflops(a.threads, device=a.device), 1), "models": {}}
    for model in a.models.split(","):
        print(f"{model} ...", flush=True)
        r = bench_model(model, variants, a, device)
        if "train_flops_per_image" in r:
            r["fraction_of_matmul_peak_reference"] = round(r["train_gflops_per_s_reference"] / result["matmul_gflops_fp32"], 3)
        result["models"][model] = r
    demand = {m: r["variants"]["reference"]["images_per_s_median"] for m, r in result["models"].items() if "reference" in r["variants"]}
    result["data_pipeline_images_per_s"] = bench_data(a, device, demand)
    out = a.out or ROOT / "benchmarks" / "results" / f"train_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({m: {v: (x["images_per_s_median"], x.get("ratio_to_reference")) for v, x in r["variants"].items()}
                      for m, r in result["models"].items()}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
