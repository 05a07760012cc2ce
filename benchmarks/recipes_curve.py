"""Training recipes side by side (SynthFlowers-64, SynthFaces-64): attribute accuracy and FID-SF against CPU-minutes.

    python benchmarks/recipes_curve.py runs/galip_synth64 runs/lafite_synth64 runs/lafite_lf_synth64 \
        --out benchmarks/results/recipes_curve.json
    python benchmarks/recipes_curve.py runs/attngan_faces64_damsm ... --data-root data/synthfaces64 \
        --evaluator runs/evaluator_faces64 --face-metrics evaluator --out benchmarks/results/attngan_faces_curve.json

For every run folder: each snapshot in ``RUN/snapshots/`` is scored by ``t2igan eval`` on the test
split (``--curve-samples`` generated images; the curve), then the final pipeline on test, novel
and the paraphrase caption set when the dataset has one (``--final-samples``, 5,000 by default: the
issue's protocol), with FSD / FSS when ``--face-metrics`` is given. The
same evaluator, data and seed score every run. CPU-minutes: the CPU time the trainer recorded
(``cpu_minutes`` of the snapshot, ``cpu_seconds`` of ``train_summary.json``; ``train.max_cpu_minutes``),
or for runs older than that record training wall minutes x ``train.threads`` of the run (1
everywhere here: one core of the 2-core machine per run); the
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

FLOWER_ATTRS = ("petal_colour", "centre_colour", "petal_count", "petal_shape", "size", "all_named")
SHORT = {"petal_colour": "petal", "centre_colour": "centre", "petal_count": "count", "petal_shape": "shape",
         "all_named": "all named"}


def summarise(res: dict) -> dict:
    out = {}
    for split, sp in res["splits"].items():
        g = sp["generated"]
        row = {a: v["accuracy"] for a, v in g["attributes"].items() if isinstance(v, dict) and "accuracy" in v}
        if g.get("fid_sf") is not None:  # caption sets (paraphrase) have no FID
            row["fid_sf"] = g["fid_sf"]
        face = sp.get("face")
        if face:
            row |= {"FSD": face["FSD"], "FSS": face["FSS"], "face_embedder": face.get("embedder")}
        out[split] = row  # the splits and the caption sets (e.g. "paraphrase")
    return out


def attrs_of(rows: list[dict]) -> list[str]:
    """The attribute columns of these result rows: SynthFlowers' in its order, any other dataset's as found,
    all_named last."""
    seen = [k for r in rows for k in r if k not in ("fid_sf", "FSD", "FSS", "face_embedder")]
    names = list(dict.fromkeys(seen))
    if set(names) <= set(FLOWER_ATTRS):
        return [a for a in FLOWER_ATTRS if a in names]
    return [a for a in names if a != "all_named"] + (["all_named"] if "all_named" in names else [])


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
    summary = json.loads((run / "train_summary.json").read_text()) if (run / "train_summary.json").is_file() else {}
    runs = summary.get("runs", [summary])
    recorded = all("cpu_seconds" in r for r in runs) and runs
    cpu = round(sum(r["cpu_seconds"] for r in runs) / 60, 2) if recorded else round((minutes_of(run) or 0) * threads, 2)
    return {"task": cfg.get("task"), "threads": threads, "train_minutes": minutes_of(run), "cpu_minutes": cpu,
            "cpu_minutes_from": "process CPU time" if recorded else "wall minutes x threads",
            "steps": summary.get("step"), "prerequisites": prereq}


def markdown(doc: dict) -> str:
    """The curve points of every run, side by side by CPU-minutes, and the final rows, as markdown."""
    runs = doc["runs"].values()
    attrs = attrs_of([p["test"] for r in runs for p in r["curve"]["points"]] +
                     [t for r in runs for t in (r["final"] or {}).values() if isinstance(t, dict)])
    heads = [SHORT.get(a, a.replace("_", " ")) for a in attrs]
    lines = ["| run | CPU-min | " + " | ".join(heads) + " | FID-SF |", "|---" * (len(attrs) + 3) + "|"]
    for run, r in doc["runs"].items():
        for p in r["curve"]["points"]:
            t = p["test"]
            lines.append(f"| {Path(run).name} | {p['cpu_minutes']:.1f} | " + " | ".join(
                f"{100 * t[a]:.1f}%" if a in t else "-" for a in attrs) + f" | {t['fid_sf']:.1f} |")
    finals = [t for r in runs for t in (r["final"] or {}).values() if isinstance(t, dict)]
    face = any("FSD" in t for t in finals)
    n = next((r["final"]["n_samples"] for r in runs if r["final"]), 0)
    lines += ["", f"| run (final, {n:,} samples) | split | " + " | ".join(heads) + " | FID-SF |" +
              (" FSD | FSS |" if face else ""), "|---" * (len(attrs) + 3 + 2 * face) + "|"]
    for run, r in doc["runs"].items():
        for split, t in (r["final"] or {}).items():
            if isinstance(t, dict):
                lines.append(f"| {Path(run).name} | {split} | " + " | ".join(
                    f"{100 * t[a]:.1f}%" if a in t else "-" for a in attrs) +
                    (f" | {t['fid_sf']:.1f} |" if "fid_sf" in t else " | - |") +
                    ((f" {t['FSD']:.3f} | {t['FSS']:.3f} |" if "FSD" in t else " - | - |") if face else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--evaluator", default="runs/evaluator_synth64")
    ap.add_argument("--data-root", default="data/synthflowers64")
    ap.add_argument("--curve-samples", type=int, default=1000)
    ap.add_argument("--final-samples", type=int, default=5000)
    ap.add_argument("--face-metrics", choices=("dlib", "evaluator", "auto"), default=None,
                    help="also FSD / FSS in the final evaluation (t2igan eval --face-metrics)")
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
            cpu = s["cpu_minutes"] if "cpu_minutes" in s else round(s["train_minutes"] * threads, 2)
            row = {"step": s["step"], "train_minutes": s["train_minutes"], "cpu_minutes": cpu, **summarise(res)}
            curve.append(row)
            t_ = row["test"]
            print(f"{run.name} step {s['step']:6d} {row['cpu_minutes']:6.1f} CPU-min: " + " ".join(
                f"{a} {t_[a]:.3f}" for a in attrs_of([t_])) + f" FID-SF {t_['fid_sf']:.1f} "
                f"[{time.perf_counter() - t:.0f} s]", flush=True)
        final = None
        if not a.no_final and (run / "pipeline").is_dir():
            out = run / "eval" / f"final_{a.final_samples}.json"
            if out.is_file():
                res = json.loads(out.read_text())
            else:
                caps = ["paraphrase"] if (Path(a.data_root) / "paraphrase.jsonl").is_file() else []
                res = evaluate_run(run, a.evaluator, n_samples=a.final_samples, data_root=a.data_root, out=out,
                                   progress=False, damsm_dir=None, captions=caps, face_metrics=a.face_metrics)
            final = {"n_samples": a.final_samples, **summarise(res), "file": str(out)}
            print(f"{run.name} final: {json.dumps(final)}", flush=True)
        results[str(run)] = {**info, "curve": {"n_samples": a.curve_samples, "split": "test", "points": curve},
                             "final": final}
    doc = {"benchmark": f"training recipes on {Path(a.data_root).name}: attribute accuracy and FID-SF against CPU-minutes",
           "command": "python benchmarks/recipes_curve.py " + " ".join(sys.argv[1:]), "machine": describe(),
           "conditions": a.conditions, "evaluator": a.evaluator, "runs": results}
    p = Path(a.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    print(f"wrote {p}")


if __name__ == "__main__":
    main()
