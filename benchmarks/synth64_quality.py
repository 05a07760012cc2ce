"""DF-GAN on SynthFlowers-64: attribute accuracy and FID-SF against training time.

Evaluates the final pipeline of a run (``t2igan eval`` protocol, 5,000 samples per split)
and every snapshot in ``RUN/snapshots/`` (fewer samples, for the curve), and writes
``benchmarks/results/dfgan_synth64_quality.json`` with the training summary, the machine
and the curve. The run itself is made by the commands in ``--print-commands``.

    python benchmarks/synth64_quality.py --run runs/dfgan_synth64 --evaluator runs/evaluator_synth64
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from machine import describe  # benchmarks/machine.py (run as a script from the repo root)

COMMANDS = [
    "t2igan data synth --out data/synthflowers64 --n 10000 --size 64 --seed 0",
    "t2igan train configs/evaluator_synth64.yaml",
    "t2igan train configs/damsm_synth64.yaml train.threads=1",
    "t2igan train configs/dfgan_synth64.yaml train.threads=1",
    "t2igan eval runs/dfgan_synth64",
    "python benchmarks/synth64_quality.py",
]


def summarise(res: dict) -> dict:
    out = {}
    for split, sp in res["splits"].items():
        g, r = sp["generated"], sp["real"]
        out[split] = {
            "petal_colour": g["attributes"]["petal_colour"]["accuracy"],
            "centre_colour": g["attributes"]["centre_colour"]["accuracy"],
            "all_named": g["attributes"]["all_named"]["accuracy"],
            "fid_sf": g["fid_sf"], "real_fid_sf": r["fid_sf"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="runs/dfgan_synth64")
    ap.add_argument("--evaluator", default="runs/evaluator_synth64")
    ap.add_argument("--data-root", default="data/synthflowers64")
    ap.add_argument("--curve-samples", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/dfgan_synth64_quality.json")
    ap.add_argument("--print-commands", action="store_true")
    a = ap.parse_args()
    if a.print_commands:
        print("\n".join(COMMANDS))
        return
    from t2igan.eval.run import evaluate_run, format_table

    run = Path(a.run)
    final_path = run / "eval" / "metrics.json"
    if not final_path.is_file():
        print(f"evaluating {run} (5,000 samples per split)")
        evaluate_run(run, a.evaluator, n_samples=5000, data_root=a.data_root)
    final = json.loads(final_path.read_text())
    print(format_table(final))
    train = json.loads((run / "train_summary.json").read_text())
    curve = []
    for snap in sorted((run / "snapshots").glob("step_*")):
        info = json.loads((snap / "snapshot.json").read_text())
        if "train_minutes" not in info:  # older snapshots: minutes since that invocation started
            prior, last = 0.0, 0
            for r in train["runs"]:
                if r["step"] >= info["step"] > last:
                    break
                prior, last = prior + r["wall_seconds"], r["step"]
            info = {"step": info["step"], "minutes_this_run": info["minutes"],
                    "train_minutes": round(prior / 60 + info["minutes"], 2)}
        t = time.perf_counter()
        res = evaluate_run(snap, a.evaluator, n_samples=a.curve_samples, data_root=a.data_root,
                           out=snap / "eval.json", progress=False)
        curve.append({**info, **summarise(res)})
        print(f"step {info['step']:6d} ({info['train_minutes']:5.1f} training min): " + ", ".join(
            f"{s} petal {v['petal_colour']:.3f} centre {v['centre_colour']:.3f} FID-SF {v['fid_sf']:.2f}"
            for s, v in curve[-1].items() if isinstance(v, dict)) + f"  [{time.perf_counter() - t:.0f} s]")
    result = {
        "benchmark": "DF-GAN on SynthFlowers-64, trained on this machine's CPU within train.max_minutes",
        "commands": COMMANDS, "machine": describe(), "train_summary": {k: v for k, v in train.items() if k != "runs"},
        "final": {"n_samples": 5000, **summarise(final)}, "final_metrics_file": str(final_path),
        "curve": {"n_samples_per_split": a.curve_samples, "points": curve},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
