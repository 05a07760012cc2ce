"""The text table of an evaluation result (``t2igan eval RUN`` prints it; ``report.md`` holds it)."""
from __future__ import annotations


def _pct(entry) -> str:
    acc = entry.get("accuracy") if isinstance(entry, dict) else None
    return "-" if acc is None else f"{100 * acc:.1f}%"


def _num(v, fmt=".3f", scale=1.0) -> str:
    return "-" if v is None else f"{scale * v:{fmt}}"


def format_table(result: dict) -> str:
    """Text table: rows = metrics (attributes, all_named, FID-SF, KID-SF, Inception FID/KID/IS, R-precision,
    diversity); columns per split = generated / real ceiling."""
    splits = list(result["splits"])
    attrs: list[str] = []
    for s in splits:
        for k in result["splits"][s]["generated"].get("attributes", {}):
            if k != "all_named" and k not in attrs:
                attrs.append(k)
    cw = 11
    head1 = f"{'':<16}" + "".join(f"{s:^{2 * cw}}" for s in splits)
    head2 = f"{'metric':<16}" + "".join(f"{'generated':>{cw}}{'real':>{cw}}" for _ in splits)
    lines = [head1, head2]
    if attrs:
        for k in attrs + ["all_named"]:
            row = f"{k:<16}"
            for s in splits:
                sp = result["splits"][s]
                row += (f"{_pct(sp['generated'].get('attributes', {}).get(k)):>{cw}}"
                        f"{_pct(sp['real'].get('attributes', {}).get(k)):>{cw}}")
            lines.append(row)

    def row(name, get):
        vals = []
        for s in splits:
            sp = result["splits"][s]
            vals += [get(sp, "generated"), get(sp, "real")]
        if all(v == "-" for v in vals):
            return
        lines.append(f"{name:<16}" + "".join(f"{v:>{cw}}" for v in vals))

    def dig(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or d.get(k) is None:
                return None
            d = d[k]
        return d

    row("FID-SF", lambda sp, side: _num(dig(sp, side, "fid_sf")))
    row("KID-SF (x1e3)", lambda sp, side: _num(dig(sp, side, "kid_sf", "mean"), scale=1e3))
    bb = {"tf-inception": "TF", "torchvision-inception": "TV"}.get((result.get("inception") or {}).get("backbone"), "")
    row(f"FID ({bb}-Inc.)", lambda sp, side: _num(dig(sp, "inception", side, "fid")))
    row(f"KID {bb} (x1e3)", lambda sp, side: _num(dig(sp, "inception", side, "kid", "mean"), scale=1e3))
    row(f"IS ({bb}-Inc.)", lambda sp, side: _num(dig(sp, "inception", side, "is", "mean"), ".2f"))
    row("CMMD", lambda sp, side: _num(dig(sp, side, "cmmd", "value")))
    row("domain acc.", lambda sp, side: _pct(dig(sp, "inception_domain", side, "accuracy")))
    row("domain IS", lambda sp, side: _num(dig(sp, "inception_domain", side, "is", "mean"), ".2f"))
    row("domain FID", lambda sp, side: _num(dig(sp, "inception_domain", side, "fid")))
    row("R-precision", lambda sp, side: _pct({"accuracy": dig(sp, side, "r_precision", "mean")}))
    row("CLIP score", lambda sp, side: _num(dig(sp, side, "clip_score", "mean"), ".2f"))
    row("CLIP R-prec.", lambda sp, side: _pct({"accuracy": dig(sp, side, "clip_r_precision", "mean")}))
    row("diversity", lambda sp, side: _num(dig(sp, side, "diversity", "mean")))
    # face metrics: one value per split (generated vs its ground-truth real face), in the generated column
    row("FSD", lambda sp, side: _num(dig(sp, "face", "FSD")) if side == "generated" else "-")
    row("FSS", lambda sp, side: _num(dig(sp, "face", "FSS")) if side == "generated" else "-")
    # retrieval (emoji): generated column = hit rate, real column = chance level (no real ceiling)
    has_retrieval = any(dig(result["splits"][s], "generated", "retrieval") for s in splits)

    def ret(*keys, chance):
        def get(sp, side):
            r = dig(sp, "generated", "retrieval")
            if r is None:
                return "-"
            v = dig(r, *keys) if side == "generated" else dig(r, *chance)
            return "-" if v is None else (f"{100 * v:.1f}%" if side == "generated" else f"({100 * v:.1f}%)")
        return get

    if has_retrieval:
        row("NN hit@1", ret("hit@1", chance=("chance@1",)))
        row("NN hit@5", ret("hit@5", chance=("chance@5",)))
        names = []
        for s in splits:
            for k in (dig(result["splits"][s], "generated", "retrieval", "groups") or {}):
                if k not in names:
                    names.append(k)
        for k in names:
            row(f"NN {k}@1", ret("groups", k, "hit@1", chance=("groups", k, "chance")))
    counts = "; ".join(f"{s}: {result['splits'][s]['n_samples']} samples, {result['splits'][s]['n_images']} real images, "
                       f"{result['splits'][s].get('n_train_reference', 0)} train reference" for s in splits)
    fe = result.get("feature_extractor") or {}
    inc = result.get("inception") or {}
    lines.append(f"({counts}; 'real' = same captions on real images / real train vs real split; "
                 f"features: {fe.get('dir')} sha256 {str(fe.get('weights_sha256'))[:12]}"
                 + (f"; FID backbone {inc.get('backbone')} ({inc.get('quantisation')}; sha256 "
                    f"{str(inc.get('weights_sha256'))[:12]})" if inc else "")
                 + (f"; CLIP sha256 {str(result['clip'].get('weights_sha256'))[:12]}"
                    if isinstance(result.get("clip"), dict) else "") + ")")
    for s in splits:
        fm = result["splits"][s].get("face")
        if fm:
            lines.append(f"note: {s}: FSD / FSS over {fm.get('n_pairs')} (generated, ground-truth) pairs, embedder "
                         f"{fm.get('embedder')}" + (f", per embedder {fm['pairs_by_embedder']}" if fm.get("pairs_by_embedder") else ""))
        v = result["splits"][s].get("vocabulary")
        if v and v["with_unknown_words"]:
            lines.append(f"note: {s}: {v['with_unknown_words']} of {v['captions']} captions have words outside the "
                         f"model's vocabulary ({100 * v['dropped_word_fraction']:.1f}% of words dropped); "
                         f"{v['no_known_word']} have no known word (generated from the empty caption)")
    if has_retrieval:
        lines.append("note: NN rows: nearest-neighbour retrieval of the caption's own image among the split's real "
                     "images (evaluator features, cosine); the 'real' column holds the chance level, in brackets")
    for n in result.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
