"""Quality of each model family on SynthFlowers-64: one table from the runs' own outputs.

    python benchmarks/families_quality.py runs/dfgan_l5to2 runs/attngan_synth64 runs/gan_int_cls_synth64

For every run folder: the family and image size (``pipeline/model_index.json``), generator
parameters (the saved pipeline), training minutes, steps and images/s
(``train_summary.json``), the minutes of the runs it was trained on (StackGAN stage II's
frozen stage I ``model.stage1``, MirrorGAN's STREAM captioner ``stream``; the pretrained DAMSM
encoder every family shares is not counted), and attribute accuracy / FID-SF on test and novel from
``eval/metrics.json`` (``t2igan eval RUN``, run beforehand). Nothing is trained or evaluated
here. Writes ``benchmarks/results/families_quality.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_minutes(run: Path) -> float:
    summary = json.loads((run / "train_summary.json").read_text())
    return round(sum(r["wall_seconds"] for r in summary.get("runs", [summary])) / 60, 1)


def prerequisites(cfg: dict) -> dict[str, float]:
    """Training minutes of the runs this run builds on (from its saved config.yaml, ``cfg``)."""
    found = {}
    for key, value in (("model.stage1", (cfg.get("model") or {}).get("stage1")), ("stream", cfg.get("stream"))):
        if value:
            found[key] = {"run": value, "train_minutes": train_minutes(Path(value))}
    return found


def damsm_lambda(cfg: dict) -> float:
    """Weight of the DAMSM loss on the generator (``model.damsm_lambda``, DF-GAN ``loss.damsm_lambda``)."""
    return float((cfg.get("model") or {}).get("damsm_lambda") or (cfg.get("loss") or {}).get("damsm_lambda") or 0.0)


def row(run: Path) -> dict:
    import yaml

    from t2igan.pipeline import Pipeline

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    index = json.loads((run / "pipeline" / "model_index.json").read_text())
    pipe = Pipeline.from_pretrained(run / "pipeline")
    out = {"run": str(run), "family": index.get("family"), "image_size": pipe.image_size,
           "generator_params": sum(p.numel() for p in pipe.generator.parameters()),
           "train_minutes": train_minutes(run), "steps": summary["step"],
           "prerequisites": prerequisites(cfg), "damsm_lambda": damsm_lambda(cfg),
           "batch_size": summary["batch_size"], "threads": summary["threads"],
           "images_per_s": summary["images_per_s"], "eval_samples_per_split": None, "splits": {}}
    for split, s in metrics["splits"].items():
        g = s["generated"]
        if "attributes" not in g:
            continue
        out["eval_samples_per_split"] = s.get("n_samples", out["eval_samples_per_split"])
        out["splits"][split] = {"petal_colour": g["attributes"]["petal_colour"]["accuracy"],
                                "centre_colour": g["attributes"]["centre_colour"]["accuracy"],
                                "all_named": g["attributes"]["all_named"]["accuracy"],
                                "fid_sf": g.get("fid_sf"), "real_fid_sf": s["real"].get("fid_sf")}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "families_quality.json"))
    a = p.parse_args()
    from machine import describe

    rows = [row(Path(r)) for r in a.runs]
    Path(a.out).write_text(json.dumps({"benchmark": "model families on SynthFlowers-64 (t2igan eval, evaluator "
                                                    "feature space)", "machine": describe(), "rows": rows},
                                      indent=2) + "\n")
    print("| family | run | DAMSM loss | size | G params | train min (+ prerequisite) | img/s | test petal | test centre | "
          "test all-named | test FID-SF | novel petal | novel centre | novel FID-SF |")
    print("|---" * 14 + "|")
    for r in rows:
        t, n = r["splits"].get("test", {}), r["splits"].get("novel", {})
        pct = lambda d, k: f"{100 * d[k]:.1f}%" if k in d else "–"  # noqa: E731
        fid = lambda d: f"{d['fid_sf']:.1f}" if d.get("fid_sf") is not None else "–"  # noqa: E731
        pre = sum(v["train_minutes"] for v in r["prerequisites"].values())
        minutes = f"{r['train_minutes']} (+ {pre})" if pre else f"{r['train_minutes']}"
        print(f"| {r['family']} | `{Path(r['run']).name}` | {r['damsm_lambda'] or 'off'} | {r['image_size']} | {r['generator_params'] / 1e6:.2f}M | {minutes} | "
              f"{r['images_per_s']} | {pct(t, 'petal_colour')} | {pct(t, 'centre_colour')} | {pct(t, 'all_named')} | "
              f"{fid(t)} | {pct(n, 'petal_colour')} | {pct(n, 'centre_colour')} | {fid(n)} |")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
