"""Runs that differ by their text encoder, side by side, from their own ``t2igan eval`` outputs.

    python benchmarks/encoders_compare.py DAMSM=runs/dfgan_l5to2 MiniLM=runs/dfgan_minilm_synth64 \
        --out benchmarks/results/encoders_synth64.json
    python benchmarks/encoders_compare.py DAMSM=runs/dfgan_emoji MiniLM=runs/dfgan_emoji_minilm \
        --out benchmarks/results/encoders_emoji.json

For every ``NAME=RUN``: the splits of every metrics file in ``RUN/eval/`` (``t2igan eval`` writes
``metrics.json``, or ``--out FILE``; a split found in two files is an error), the text encoder
and training figures of ``RUN/config.yaml`` and ``RUN/train_summary.json``. Per split it reports
what the evaluation measured there: attribute accuracy (petal, centre, all named) on
SynthFlowers, FID-SF, DAMSM R-precision and, on emoji, nearest-neighbour retrieval of the
intended emoji (hit@1, hit@5, same category, same base emoji, each with its chance). Nothing
is trained or evaluated here. Writes the JSON and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _splits(run: Path) -> tuple[dict, list[str]]:
    files = sorted((run / "eval").glob("*.json"))
    splits: dict = {}
    used = []
    for f in files:
        data = json.loads(f.read_text())
        if not isinstance(data, dict) or "splits" not in data:
            continue
        for name, s in data["splits"].items():
            if name in splits:
                raise SystemExit(f"error: {run}: split {name!r} is in two eval files ({f.name} and an earlier one)")
            splits[name] = s
        used.append(str(f))
    if not splits:
        raise SystemExit(f"error: {run}/eval has no t2igan eval metrics (run `t2igan eval {run}` first)")
    return splits, used


def _split_row(s: dict) -> dict:
    g = s.get("generated", {})
    out: dict = {"n_samples": s.get("n_samples")}
    att = g.get("attributes")
    if att:
        for key in ("petal_colour", "centre_colour", "all_named"):
            if key in att:
                out[key] = att[key]["accuracy"]
        known = g.get("attributes_known_words_only")
        if known and "petal_colour" in known:
            out["petal_colour_known_words_only"] = known["petal_colour"]["accuracy"]
    if g.get("fid_sf") is not None:
        out["fid_sf"] = g["fid_sf"]
        out["real_fid_sf"] = (s.get("real") or {}).get("fid_sf")
    if g.get("r_precision"):
        out["r_precision"] = g["r_precision"]["mean"]
        out["real_r_precision"] = ((s.get("real") or {}).get("r_precision") or {}).get("mean")
    r = g.get("retrieval")
    if r:
        out["retrieval"] = {k: r[k] for k in ("hit@1", "chance@1", "hit@5", "chance@5", "gallery_size") if k in r}
        out["retrieval"]["groups"] = r.get("groups", {})
    return out


def row(name: str, run: Path) -> dict:
    import yaml
    from families_quality import train_minutes  # every process of a resumed run, summed

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    splits, files = _splits(run)
    loss = cfg.get("loss") or {}
    return {"name": name, "run": str(run), "task": cfg.get("task"), "text_encoder": cfg.get("text_encoder"),
            "damsm_lambda": loss.get("damsm_lambda"), "damsm_words": loss.get("damsm_words", True),
            "train_minutes": train_minutes(run),
            "steps": summary.get("step"), "images_per_s": summary.get("images_per_s"),
            "eval_files": files, "splits": {k: _split_row(v) for k, v in splits.items()}}


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def table(rows: list[dict]) -> list[str]:
    lines = ["| run | encoder | split | samples | petal | centre | all named | FID-SF | R-prec. | hit@1 (chance) | "
             "hit@5 (chance) | same category (chance) | same base (chance) |", "|---" * 13 + "|"]
    for r in rows:
        for split, s in r["splits"].items():
            ret = s.get("retrieval") or {}
            grp = ret.get("groups", {})
            both = lambda d, k, c: f"{_pct(d.get(k))} ({_pct(d.get(c))})" if d else "–"  # noqa: E731
            lines.append(f"| {r['name']} | {r['text_encoder']} | {split} | {s['n_samples']} | {_pct(s.get('petal_colour'))} | "
                         f"{_pct(s.get('centre_colour'))} | {_pct(s.get('all_named'))} | {_num(s.get('fid_sf'))} | "
                         f"{_pct(s.get('r_precision'))} | {both(ret, 'hit@1', 'chance@1')} | "
                         f"{both(ret, 'hit@5', 'chance@5')} | {both(grp.get('category', {}), 'hit@1', 'chance')} | "
                         f"{both(grp.get('base_emoji', {}), 'hit@1', 'chance')} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NAME=RUN")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    from machine import describe

    rows = []
    for item in a.runs:
        name, sep, run = item.partition("=")
        if not sep or not name or not run:
            raise SystemExit(f"error: {item!r}: expected NAME=RUN")
        rows.append(row(name, Path(run)))
    Path(a.out).write_text(json.dumps({"benchmark": "text encoders compared (t2igan eval outputs of each run)",
                                       "machine": describe(), "rows": rows}, indent=2) + "\n")
    print("\n".join(table(rows)))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
