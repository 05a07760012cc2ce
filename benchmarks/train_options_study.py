"""The least stable preset with the shared GAN options: StackGAN++ without the DAMSM term.

The published row (docs/results.md, "Families on SynthFlowers-64"; benchmarks/results/families_quality.json,
``stackganpp_synth64``: ``configs/stackganpp_synth64.yaml model.damsm_lambda=0 model.gf_dim=32``,
60 CPU-minutes, test petal colour 21.2%) is the family whose preset trains worst. Here that preset
and a few variants, each changing only ``gan.*`` options, train with the same seed, data, batch and
wall-clock budget (one thread each, ``--parallel`` at a time), keep a snapshot every
``--snapshot-every`` steps, and are scored with ``t2igan eval`` (the attribute evaluator's feature
space): every snapshot on ``--curve-samples`` test captions (the curve), the final model on
``--n-samples`` per split of test and novel (the end point).

    OMP_NUM_THREADS=1 python benchmarks/train_options_study.py --data data/synthflowers64 \\
        --damsm runs/damsm_synth64 --evaluator runs/evaluator_synth64 --work runs/options_study \\
        --steps 250 --parallel 2

Writes benchmarks/results/train_options_study.json (commands, steps, stability monitor, curve,
end point) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESET = ["model.damsm_lambda=0", "model.gf_dim=32"]  # the published 21.2% row's settings
VARIANTS = {
    "preset": [],
    "hinge": ["gan.loss=hinge"],
    "lsgan": ["gan.loss=lsgan"],
    "r1_layernorm": ["gan.loss=r1", "gan.d_norm=layer", "gan.gp_lambda=1"],
}


def train_command(name: str, extra: list[str], a) -> list[str]:
    return [sys.executable, "-m", "t2igan.cli", "train", str(ROOT / "configs" / "stackganpp_synth64.yaml"), *PRESET,
            *extra, f"data.root={a.data}", f"text_encoder={a.damsm}", f"train.out_dir={a.work / name}",
            "train.threads=1", f"train.max_minutes={a.minutes}", f"train.max_steps={a.steps}",
            f"train.snapshot_every={a.snapshot_every}",
            "train.ckpt_every=0", "train.sample_every=0", "train.progress=false", "train.seed=0"]


def eval_command(folder: Path, out: Path, n: int, splits: str, a) -> list[str]:
    return [sys.executable, "-m", "t2igan.cli", "eval", str(folder), "--evaluator", str(a.evaluator),
            "--data-root", str(a.data), "--n-samples", str(n), "--splits", splits, "--seed", "0",
            "--diversity-captions", "0", "--out", str(out)]


def scores(metrics: Path) -> dict:
    m = json.loads(metrics.read_text())
    out = {}
    for split, s in m["splits"].items():
        g = s["generated"]
        if "attributes" in g:
            out[split] = {"petal_colour": g["attributes"]["petal_colour"]["accuracy"],
                          "centre_colour": g["attributes"]["centre_colour"]["accuracy"],
                          "all_named": g["attributes"]["all_named"]["accuracy"], "fid_sf": g.get("fid_sf"),
                          "n_samples": s.get("n_samples")}
    return out


def run_all(cmds: dict[str, list[str]], parallel: int, logs: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    pending, running = list(cmds.items()), []
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd = pending.pop(0)
            log = open(logs / f"{name}.log", "w")
            running.append((name, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for r in list(running):
            if r[1].poll() is not None:
                r[2].close()
                running.remove(r)
                if r[1].returncode != 0:
                    raise SystemExit(f"{r[0]} failed (exit {r[1].returncode}); see {logs / (r[0] + '.log')}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=Path("data/synthflowers64"))
    p.add_argument("--damsm", type=Path, default=Path("runs/damsm_synth64"))
    p.add_argument("--evaluator", type=Path, default=Path("runs/evaluator_synth64"))
    p.add_argument("--work", type=Path, default=Path("runs/options_study"))
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget per run (0: none, --steps only)")
    p.add_argument("--steps", type=int, default=250, help="step budget per run (on a shared machine a step budget is "
                   "the same work for every run; 250 steps ~ 10 minutes of one free core at the published 13.8 images/s)")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--snapshot-every", type=int, default=50)
    p.add_argument("--curve-samples", type=int, default=300)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--skip-train", action="store_true", help="score existing runs in --work")
    p.add_argument("--note", default="", help="how the runs were made, if not by this script's training step")
    p.add_argument("--no-eval", action="store_true", help="record the training (steps, monitor) without scores")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_options_study.json")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    names = a.variants.split(",")
    from machine import describe

    machine = describe()
    cmds = {n: train_command(n, VARIANTS[n], a) for n in names}
    if not a.skip_train:
        run_all(cmds, a.parallel, a.work)
    evals = {}
    for n in [] if a.no_eval else names:
        run = a.work / n
        for snap in sorted((run / "snapshots").glob("step_*")):
            evals[(n, snap.name)] = eval_command(snap, run / "eval" / f"{snap.name}.json", a.curve_samples, "test", a)
        evals[(n, "final")] = eval_command(run / "pipeline", run / "eval" / "final.json", a.n_samples, "test,novel", a)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for (n, what), cmd in evals.items():
        out = Path(cmd[cmd.index("--out") + 1])
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(cmd, env=env, check=True, capture_output=True)
    rows = []
    for n in names:
        run = a.work / n
        summary = json.loads((run / "train_summary.json").read_text())
        curve = []
        for snap in sorted((run / "snapshots").glob("step_*")):
            info = json.loads((snap / "snapshot.json").read_text())
            s = {} if a.no_eval else scores(run / "eval" / f"{snap.name}.json")["test"]
            curve.append({"step": info["step"], "train_minutes": info["train_minutes"], **s})
        rows.append({"variant": n, "options": VARIANTS[n], "train_command": " ".join(cmds[n][2:]),
                     "steps": summary["step"],
                     "wall_seconds": round(sum(r["wall_seconds"] for r in summary.get("runs", [summary])), 1),
                     "invocations": len(summary.get("runs", [summary])),
                     "images_per_s": round(summary["step"] * summary["batch_size"] / max(1e-9, sum(
                         r["wall_seconds"] for r in summary.get("runs", [summary]))), 2),
                     "monitor": summary.get("monitor"),
                     "curve_test": curve, "final": {} if a.no_eval else scores(run / "eval" / "final.json")})
    doc = {"benchmark": "StackGAN++ (no DAMSM term) with the shared GAN options on SynthFlowers-64",
           "budget": f"{a.steps} steps (batch 32) per run" + (f", at most {a.minutes} wall-clock minutes" if a.minutes else "")
                     + f", train.threads=1, {a.parallel} runs at a time, seed 0 (the published row: 60 minutes, "
                       "1,556 steps at its 13.8 images/s)",
           "eval": f"t2igan eval: curve {a.curve_samples} test samples per snapshot, end point {a.n_samples} per split",
           "published_row": {"run": "stackganpp_synth64", "train_minutes": 60.0, "test_petal_colour": 0.212,
                             "test_centre_colour": 0.282, "test_fid_sf": 182.6},
           "note": a.note, "machine": machine, "rows": rows}
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print("| variant | options | steps | img/s | D won at | test petal | test centre | test FID-SF | novel petal | best curve petal (step) |")
    print("|---" * 10 + "|")
    for r in rows:
        t, nv = r["final"].get("test", {}), r["final"].get("novel", {})
        best = max((c for c in r["curve_test"] if "petal_colour" in c), key=lambda c: c["petal_colour"], default=None)
        pct = lambda d, k: f"{100 * d[k]:.1f}%" if k in d else "–"  # noqa: E731
        best_s = f"{100 * best['petal_colour']:.1f}% ({best['step']})" if best else "–"
        fid_s = f"{t['fid_sf']:.1f}" if t.get("fid_sf") is not None else "–"
        print(f"| {r['variant']} | {' '.join(r['options']) or '(preset)'} | {r['steps']} | {r['images_per_s']} | "
              f"{(r['monitor'] or {}).get('d_won_at')} | {pct(t, 'petal_colour')} | {pct(t, 'centre_colour')} | "
              f"{fid_s} | {pct(nv, 'petal_colour')} | "
              f"{best_s} |")


if __name__ == "__main__":
    main()
