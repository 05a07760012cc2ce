"""Evaluation reports: one run (``t2igan eval RUN --report``) and a comparison of runs
(``t2igan eval compare RUN_A RUN_B ...``).

RUN/report/report.md holds a sample grid per caption set (test and novel captions), the
training loss curves read from the run's TensorBoard logs, the metric history of
``--eval-every`` (RUN/eval_history.jsonl) and the metric table with its protocol.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from t2igan import T2IError


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of a TensorBoard log folder: {tag: [(step, value), ...]} (later files win per step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    d = Path(log_dir)
    if not d.is_dir():
        return {}
    for f in sorted(d.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for ev in acc.Scalars(tag):
                out.setdefault(tag, {})[int(ev.step)] = float(ev.value)
    return {k: sorted(v.items()) for k, v in out.items()}


def plot_losses(scalars: dict, path: Path) -> Path | None:
    tags = [t for t in scalars if t.startswith("train/") and t != "train/images_per_s"]
    if not tags:
        return None
    plt = _plt()
    n = len(tags)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        steps, vals = zip(*scalars[tag])
        ax.plot(steps, vals, lw=0.8)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def read_history(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / "eval_history.jsonl"
    if not p.is_file():
        return []
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise T2IError(f"{p}:{n}: not valid JSON") from None
    return rows


def plot_history(rows: list[dict], path: Path) -> Path | None:
    keys = sorted({k for r in rows for k, v in r.get("metrics", {}).items() if isinstance(v, (int, float))})
    if not rows or not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        pts = [(r["step"], r["metrics"][k]) for r in rows if isinstance(r.get("metrics", {}).get(k), (int, float))]
        ax.plot(*zip(*pts), marker="o", lw=1)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_grids(run_dir: Path, res: dict, out: Path, per_set: int = 8, n: int = 4) -> list[tuple[str, Path, list[str]]]:
    """One grid per caption set (each evaluated split: its first ``per_set`` captions, ``n`` images each)."""
    from torchvision.utils import save_image

    from t2igan.data.folder import load_folder
    from t2igan.eval.run import EmptyCaptionsAsPadding
    from t2igan.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(run_dir)
    grids = []
    for s, entry in res.get("splits", {}).items():
        if entry.get("captions_file"):  # a caption set: its first captions
            from t2igan.data.caption_set import load_caption_set

            caps = load_caption_set(entry["captions_file"]).captions[:per_set]
        else:
            ds = load_folder(res["data_root"], s)
            step = max(1, len(ds) // per_set)
            caps = [ds.captions[i][0] for i in range(0, len(ds), step)][:per_set]
        path = out / f"samples_{s}.png"
        with EmptyCaptionsAsPadding(pipe):  # as in the evaluation of caption sets
            save_image(pipe.generate(caps, seed=0, n=n), path, nrow=n, padding=2)
        grids.append((s, path, caps))
    return grids


def write_report(run_dir, res: dict) -> Path:
    """RUN/report/report.md (+ PNGs beside it) for an evaluation result of ``run_dir``."""
    from t2igan.eval.run import format_table

    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Evaluation report: {run_dir}", ""]
    summary = run_dir / "train_summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        md += [f"Trained {s.get('task')} to step {s.get('step')} ({sum(r.get('wall_seconds', 0) for r in s.get('runs', [s])) / 60:.1f} "
               f"training minutes over {len(s.get('runs', [s]))} invocation(s), device {s.get('device')}).", ""]
    md += ["## Samples", "", "One row per caption, 4 noise seeds each (seed 0).", ""]
    for split, path, caps in write_grids(run_dir, res, out):
        md += [f"### {split} captions", "", f"![{split}]({path.name})", ""]
        md += [f"{i + 1}. {c}" for i, c in enumerate(caps)] + [""]
    scalars = read_scalars(run_dir / "logs")
    if plot_losses(scalars, out / "losses.png"):
        md += ["## Training curves", "", "From the run's TensorBoard logs (`logs/`).", "", "![losses](losses.png)", ""]
    hist = read_history(run_dir)
    if plot_history(hist, out / "eval_history.png"):
        md += ["## Metrics during training", "", f"`eval_history.jsonl`: {len(hist)} evaluations of the EMA generator "
               f"({hist[-1].get('n_samples')} samples each).", "", "![history](eval_history.png)", ""]
    md += ["## Metrics", "", "```", format_table(res), "```", "", "### Protocol", ""]
    md += [f"- **{k}**: {v}" for k, v in res.get("protocol", {}).items()]
    for key in ("feature_extractor", "inception", "inception_domain", "damsm", "clip"):
        if res.get(key):
            md += [f"- **{key}**: " + ", ".join(f"{k}={v}" for k, v in res[key].items())]
    md += ["", f"Full numbers: `{res.get('output')}`.", ""]
    path = out / "report.md"
    tmp = out / f".report.md.tmp{os.getpid()}"
    tmp.write_text("\n".join(md), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- compare
def headline(res: dict) -> dict[str, float]:
    """Flat {metric name: value} of one result, for comparison tables."""
    out: dict[str, float] = {}
    for s, sp in res.get("splits", {}).items():
        for side in ("generated", "real"):
            g = sp.get(side, {})
            tag = f"{s} {side}"
            if "attributes" in g:
                out[f"{tag}: all named attributes"] = g["attributes"]["all_named"]["accuracy"]
                for k, v in g["attributes"].items():
                    if k != "all_named":
                        out[f"{tag}: {k}"] = v["accuracy"]
            if "fid_sf" in g:
                out[f"{tag}: FID-SF"] = g["fid_sf"]
                out[f"{tag}: KID-SF"] = g["kid_sf"]["mean"]
            if "r_precision" in g:
                out[f"{tag}: R-precision"] = g["r_precision"]["mean"]
            if "clip_score" in g:
                out[f"{tag}: CLIP score"] = g["clip_score"]["mean"]
                out[f"{tag}: CLIP R-precision"] = g["clip_r_precision"]["mean"]
            if g.get("diversity"):
                out[f"{tag}: diversity"] = g["diversity"]["mean"]
            if g.get("cmmd"):
                out[f"{tag}: CMMD"] = g["cmmd"]["value"]
            dom = sp.get("inception_domain", {}).get(side)
            if dom:
                if dom.get("accuracy"):
                    out[f"{tag}: domain accuracy"] = dom["accuracy"]["accuracy"]
                out[f"{tag}: domain FID"] = dom["fid"]
                if dom.get("is"):
                    out[f"{tag}: domain IS"] = dom["is"]["mean"]
            if side == "generated" and sp.get("face"):
                out[f"{s}: FSD"] = sp["face"]["FSD"]
                out[f"{s}: FSS"] = sp["face"]["FSS"]
            if g.get("retrieval"):
                out[f"{tag}: NN hit@1"] = g["retrieval"]["hit@1"]
                out[f"{tag}: NN hit@5"] = g["retrieval"]["hit@5"]
                for k, v in g["retrieval"]["groups"].items():
                    out[f"{tag}: NN same {k}@1"] = v["hit@1"]
            inc = sp.get("inception", {}).get(side)
            if inc:
                bb = (res.get("inception") or {}).get("backbone", "tf-inception")
                out[f"{tag}: FID ({bb})"] = inc["fid"]
                out[f"{tag}: KID ({bb})"] = inc["kid"]["mean"]
                if inc.get("is"):
                    out[f"{tag}: IS ({bb})"] = inc["is"]["mean"]
    return out


def compare_runs(runs: list, out=None) -> dict:
    """Markdown + JSON table of the runs' ``eval/metrics.json`` and a bar plot of the main metrics."""
    if len(runs) < 2:
        raise T2IError("t2igan eval compare needs at least two run folders")
    results = {}
    for r in runs:
        p = Path(r) / "eval" / "metrics.json"
        if not p.is_file():
            raise T2IError(f"{p} not found: run `t2igan eval {r}` first")
        try:
            results[str(r)] = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            raise T2IError(f"{p}: not valid JSON") from None
    heads = {r: headline(v) for r, v in results.items()}
    keys = [k for k in dict.fromkeys(k for h in heads.values() for k in h)]
    protocols = {r: {"n_samples": v.get("protocol", {}).get("n_samples"), "seed": v.get("protocol", {}).get("seed"),
                     "evaluator_sha256": (v.get("feature_extractor") or {}).get("weights_sha256"),
                     "inception_sha256": (v.get("inception") or {}).get("weights_sha256"),
                     "fid_backbone": (v.get("inception") or {}).get("backbone"),
                     "domain_inception_sha256": (v.get("inception_domain") or {}).get("weights_sha256"),
                     "clip_sha256": (v["clip"] if isinstance(v.get("clip"), dict) else {}).get("weights_sha256"),
                     "damsm_sha256": (v.get("damsm") or {}).get("weights_sha256")}
                 for r, v in results.items()}
    warn = []
    for field in ("n_samples", "evaluator_sha256", "fid_backbone", "inception_sha256", "domain_inception_sha256",
                  "clip_sha256", "damsm_sha256"):
        vals = {p[field] for p in protocols.values()}
        if len(vals) > 1:
            warn.append(f"runs differ in {field} ({', '.join(map(str, vals))}): their numbers are not comparable")

    def fmt(v):
        return "-" if v is None else (f"{v:.4g}")

    names = list(heads)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {k} | " + " | ".join(fmt(heads[r].get(k)) for r in names) + " |" for k in keys]
    table = "\n".join(lines)
    out = Path(out) if out else Path("compare.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    md = ["# Run comparison", "", table, "", "Protocols:", ""]
    md += [f"- {r}: " + ", ".join(f"{k}={v}" for k, v in p.items()) for r, p in protocols.items()]
    md += [f"- **warning**: {w}" for w in warn]
    plot = out.with_suffix(".png")
    main = [k for k in keys if "generated" in k and any(m in k for m in ("all named", "FID-SF", "R-precision", ": FID", "NN hit@1",
                                                                          "NN same category@1"))]
    if main:
        plt = _plt()
        fig, axes = plt.subplots(1, len(main), figsize=(3.2 * len(main), 3), squeeze=False)
        for ax, k in zip(axes.flat, main):
            ax.bar(range(len(names)), [heads[r].get(k) or 0 for r in names])
            ax.set_xticks(range(len(names)), [Path(r).name for r in names], rotation=30, fontsize=7)
            ax.set_title(k, fontsize=8)
        fig.tight_layout()
        fig.savefig(plot, dpi=90)
        plt.close(fig)
        md += ["", f"![comparison]({plot.name})"]
    out.write_text("\n".join(md) + "\n", encoding="utf-8")
    js = out.with_suffix(".json")
    js.write_text(json.dumps({"runs": names, "metrics": heads, "protocols": protocols, "warnings": warn}, indent=2) + "\n")
    return {"table": table, "markdown": str(out), "json": str(js), "plot": str(plot) if main else None, "warnings": warn}
