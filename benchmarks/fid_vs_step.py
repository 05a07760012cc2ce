"""FID-SF of DF-GAN snapshots against training steps, beside the real-vs-real floor.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/fid_vs_step.py \
        --runs runs/dfgan_synth64 --evaluator runs/evaluator_synth64 \
        --data-root data/synthflowers64 --n-samples 1000

Scores every ``snapshots/step_*`` and the final ``pipeline/`` of the given runs (later runs
win for a step they share, e.g. a resumed copy) on the test split: FID-SF / KID-SF (the
attribute evaluator's feature space, torchmetrics), attribute accuracy and diversity, with
the same protocol as ``t2igan eval``. Nothing is written into the runs. Writes
benchmarks/results/fid_vs_step.json and docs/fid_vs_step.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", nargs="+", default=["runs/dfgan_synth64"])
    p.add_argument("--evaluator", default="runs/evaluator_synth64")
    p.add_argument("--data-root", default="data/synthflowers64")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fid_vs_step.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "fid_vs_step.png"))
    a = p.parse_args()

    import torch

    from benchmarks.machine import describe
    from t2igan.eval.evaluator import AttributeEvaluator
    from t2igan.eval.run import evaluate_pipeline
    from t2igan.pipeline import Pipeline
    from t2igan.core import weights as ckpt

    torch.set_num_threads(1)
    machine = describe()
    ev = AttributeEvaluator.from_pretrained(a.evaluator)
    points: dict[int, dict] = {}
    for run in map(Path, a.runs):
        summary = ckpt.read_json(run / "train_summary.json")
        minutes = round(sum(r["wall_seconds"] for r in summary.get("runs", [summary])) / 60, 1)
        for snap in sorted((run / "snapshots").glob("step_*")):
            points[int(snap.name.split("_")[1])] = {"dir": str(snap), "train_minutes": None}
        points[int(summary["step"])] = {"dir": str(run / "pipeline"), "train_minutes": minutes}
    rows = []
    floor = None
    for step in sorted(points):
        t0 = time.time()
        pipe = Pipeline.from_pretrained(points[step]["dir"])
        res = evaluate_pipeline(pipe, a.data_root, ev, splits=("test",), n_samples=a.n_samples, batch_size=100,
                                seed=0, progress=False, diversity_captions=20, diversity_k=8)
        t = res["splits"]["test"]
        row = {"step": step, **points[step], "fid_sf": t["generated"]["fid_sf"], "kid_sf": t["generated"]["kid_sf"]["mean"],
               "all_named": t["generated"]["attributes"]["all_named"]["accuracy"],
               "petal_colour": t["generated"]["attributes"]["petal_colour"]["accuracy"],
               "diversity": t["generated"]["diversity"]["mean"], "seconds": round(time.time() - t0, 1)}
        floor = {"fid_sf_real_train_vs_test": t["real"]["fid_sf"], "kid_sf": t["real"]["kid_sf"]["mean"],
                 "diversity_real_random": t["real"]["diversity"]["mean"], "n_train_reference": t["n_train_reference"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"what": "FID-SF (attribute-evaluator feature space) of DF-GAN SynthFlowers-64 snapshots vs training step, "
                   "test split, and the real train-vs-test floor",
           "command": "OMP_NUM_THREADS=1 nice -n 19 python benchmarks/fid_vs_step.py --runs " + " ".join(a.runs)
                      + f" --evaluator {a.evaluator} --data-root {a.data_root} --n-samples {a.n_samples}",
           "n_samples": a.n_samples, "evaluator_sha256": ev.weights_sha256, "protocol": res["protocol"],
           "points": rows, "real_floor": floor, "machine": machine}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot([r["step"] for r in rows], [r["fid_sf"] for r in rows], marker="o", label="DF-GAN (EMA generator)")
    ax.axhline(floor["fid_sf_real_train_vs_test"], color="g", ls="--", label="real train vs real test")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"FID-SF (test, {a.n_samples} samples)")
    ax.set_yscale("log")
    ax.set_title("SynthFlowers-64: FID-SF falls as DF-GAN trains", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.plot, dpi=110)
    print(f"wrote {a.out} and {a.plot}")


if __name__ == "__main__":
    main()
