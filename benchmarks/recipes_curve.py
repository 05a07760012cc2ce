"""Training recipes side by side on SynthFlowers-64: attribute accuracy and FID-SF against CPU-minutes.

    python benchmarks/recipes_curve.py runs/galip_synth64 runs/lafite_synth64 runs/lafite_lf_synth64 \
        --out benchmarks/results/recipes_curve.json

For every run folder: each snapshot in ``RUN/snapshots/`` is scored by ``t2igan eval`` on the test
split (``--curve-samples`` generated images; the curve), then the final pipeline on test, novel
and the paraphrase caption set (``--final-samples``, 5,000 by default: the issue's protocol). The
same evaluator, data and seed score every run. CPU-minutes = training wall minutes x
``train.threads`` of the run (1 everywhere here: one core of the 2-core machine per run); the
minutes of a prerequisite (the CLIP a GALIP/LAFITE run uses: ``clip``; a DAMSM text encoder) are
given beside, from its own ``train_summary.json``. Nothing is trained here.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe  # noqa: E402  (benchmarks/machine.py)

ATTRS = ("petal_colour", "centre_colour", "petal_count", "petal_shape", "size", "all_named")


def summarise(res: dict) -> dict:
    out = {}
    for split, sp in res["splits"].items():
        g = sp["generated"]
        row = {a: g["attributes"][a]["accuracy"] for a in ATTRS if a in g["attributes"]}
        if g.get("fid_sf") is not None:  # caption sets (paraphrase) have no FID
            row["fid_sf"] = g["fid_sf"]
        out[split] = row  # the splits and the caption sets (e.g. "paraphrase")
    return out


def minutes_of(run: Path) -> float | None:
    p = run / "train_summary.json"
    if not p.is_file():
        return None
    s = json.loads(p.read_text())
    return round(sum(r["wall_seconds"] for r in s.get("runs", [s])) / 60, 2)


def run_info(run: Path) -> dict:
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    threads = int((cfg.get("train") or {}).get("threads") or 0) or 2
    prereq = {}
    for key in ("clip", "text_encoder"):
        v = cfg.get(key)
        if isinstance(v, str):
            p = Path(v.split(":", 1)[1] if v.startswith(("clip:", "damsm:")) else v)
            m = minutes_of(p)
            if m is not None and str(p) not in {x["run"] for x in prereq.values()}:
                prereq[key] = {"run": str(p), "train_minutes": m}
    return {"task": cfg.get("task"), "threads": threads, "train_minutes": minutes_of(run),
            "cpu_minutes": round((minutes_of(run) or 0) * threads, 2), "prerequisites": prereq}


def markdown(doc: dict) -> str:
    """The curve points of every run, side by side by CPU-minutes, and the final rows, as markdown."""
    lines = ["| run | CPU-min | petal | centre | count | shape | size | all named | FID-SF |", "|---" * 9 + "|"]
    for run, r in doc["runs"].items():
        for p in r["curve"]["points"]:
            t = p["test"]
            lines.append(f"| {Path(run).name} | {p['cpu_minutes']:.1f} | " + " | ".join(
                f"{100 * t[a]:.1f}%" for a in ATTRS) + f" | {t['fid_sf']:.1f} |")
    lines += ["", "| run (final, 5,000 samples) | split | petal | centre | count | shape | size | all named | FID-SF |",
              "|---" * 9 + "|"]
    for run, r in doc["runs"].items():
        for split, t in (r["final"] or {}).items():
            if isinstance(t, dict):
                lines.append(f"| {Path(run).name} | {split} | " + " | ".join(
                    f"{100 * t[a]:.1f}%" if a in t else "-" for a in ATTRS) +
                    (f" | {t['fid_sf']:.1f} |" if "fid_sf" in t else " | - |"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--evaluator", default="runs/evaluator_synth64")
    ap.add_argument("--data-root", default="data/synthflowers64")
    ap.add_argument("--curve-samples", type=int, default=1000)
    ap.add_argument("--final-samples", type=int, default=5000)
    ap.add_argument("--no-final", action="store_true", help="curves only")
    ap.add_argument("--conditions", default="", help="machine conditions to record (other jobs running, ...)")
    ap.add_argument("--out", default="benchmarks/results/recipes_curve.json")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the runs' JSON files and exit")
    a = ap.parse_args()
    if a.table:  # the runs are result files here
        for f in a.runs:
            print(markdown(json.loads(Path(f).read_text())))
        return
    from t2igan.eval.run import evaluate_run

    results = {}
    for r in a.runs:
        run = Path(r)
        info = run_info(run)
        threads = info["threads"]
        curve = []
        for snap in sorted((run / "snapshots").glob("step_*")):
            s = json.loads((snap / "snapshot.json").read_text())
            out = snap / f"eval_{a.curve_samples}.json"
            t = time.perf_counter()
            if out.is_file():
                res = json.loads(out.read_text())
            else:
                res = evaluate_run(snap, a.evaluator, n_samples=a.curve_samples, splits=["test"],
                                   data_root=a.data_root, out=out, progress=False, damsm_dir=None)
            row = {"step": s["step"], "train_minutes": s["train_minutes"],
                   "cpu_minutes": round(s["train_minutes"] * threads, 2), **summarise(res)}
            curve.append(row)
            t_ = row["test"]
            print(f"{run.name} step {s['step']:6d} {row['cpu_minutes']:6.1f} CPU-min: petal {t_['petal_colour']:.3f} "
                  f"centre {t_['centre_colour']:.3f} all {t_['all_named']:.3f} FID-SF {t_['fid_sf']:.1f} "
                  f"[{time.perf_counter() - t:.0f} s]", flush=True)
        final = None
        if not a.no_final and (run / "pipeline").is_dir():
            out = run / "eval" / f"final_{a.final_samples}.json"
            if out.is_file():
                res = json.loads(out.read_text())
            else:
                caps = ["paraphrase"] if (Path(a.data_root) / "paraphrase.jsonl").is_file() else []
                res = evaluate_run(run, a.evaluator, n_samples=a.final_samples, data_root=a.data_root, out=out,
                                   progress=False, damsm_dir=None, captions=caps)
            final = {"n_samples": a.final_samples, **summarise(res), "file": str(out)}
            print(f"{run.name} final: {json.dumps(final)}", flush=True)
        results[str(run)] = {**info, "curve": {"n_samples": a.curve_samples, "split": "test", "points": curve},
                             "final": final}
    doc = {"benchmark": "training recipes on SynthFlowers-64: attribute accuracy and FID-SF against CPU-minutes",
           "command": "python benchmarks/recipes_curve.py " + " ".join(a.runs), "machine": describe(),
           "conditions": a.conditions, "evaluator": a.evaluator, "runs": results}
    p = Path(a.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    print(f"wrote {p}")


if __name__ == "__main__":
    main()
