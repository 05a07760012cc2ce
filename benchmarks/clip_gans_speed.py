"""Training-step time of the CLIP-based presets with each fast path on and off, as ratios measured in one run.

    OMP_NUM_THREADS=1 python benchmarks/clip_gans_speed.py --presets galip_synth64,lafite_synth64

Every preset (``configs/<name>.yaml`` with its real data and CLIP) is built once per variant (a
``train.*`` override); the variants then run in alternating rounds (reference, v1, ..., reference,
...) of ``--steps`` steps on the same batches, so load from other jobs hits all alike. The ratio of a
variant is the median over rounds of reference time / variant time (> 1: faster). A preset's own
fast path (e.g. ``channels_last: true``) is switched off in the reference. Result:
``benchmarks/results/clip_gans_speed_cpu.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe  # noqa: E402

from t2igan.config import load_config  # noqa: E402
from t2igan.train.run import build_training  # noqa: E402

VARIANTS = {"reference": ["train.channels_last=false"], "channels_last": ["train.channels_last=true"],
            "bf16": ["train.channels_last=false", "train.precision=bf16"]}


def build(preset: str, overrides: list[str], out: Path):
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [f"train.out_dir={out}", "train.progress=false",
                                                             "train.threads=0", *overrides])
    tr = build_training(cfg, resume=False, overwrite=True)
    for m in tr.task.modules.values():
        m.to(tr.device)
    tr.task.to_device(tr.device)
    tr.setup_fast_paths()
    return tr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="galip_synth64,lafite_synth64")
    ap.add_argument("--variants", default="reference,channels_last")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "clip_gans_speed_cpu.json"))
    a = ap.parse_args()
    variants = a.variants.split(",")
    results = {}
    for preset in a.presets.split(","):
        trs = {v: build(preset, VARIANTS[v], Path("/tmp") / f"t2igan_speed_{preset}_{v}") for v in variants}
        it = trs["reference"].batches()
        batches = [trs["reference"].to_batch(next(it), i) for i in range(a.steps)]
        times = {v: [] for v in variants}
        step = 0
        for _ in range(a.rounds + 1):  # the first round warms up and is not counted
            for v in variants:
                t = time.perf_counter()
                for b in batches:
                    trs[v].task.train_step(b, step)
                    step += 1
                times[v].append((time.perf_counter() - t) / a.steps)
        ref = times["reference"][1:]
        results[preset] = {v: {"seconds_per_step_median": statistics.median(times[v][1:]),
                               "speedup_vs_reference_median": statistics.median(r / x for r, x in zip(ref, times[v][1:]))}
                           for v in variants}
        print(preset, json.dumps(results[preset]), flush=True)
    doc = {"benchmark": "CLIP-based presets: training-step time per fast path, ratios in one run",
           "command": "python benchmarks/clip_gans_speed.py " + " ".join(sys.argv[1:]), "machine": describe(),
           "threads": torch.get_num_threads(), "batch_size": "the preset's", "results": results}
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
