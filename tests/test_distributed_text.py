"""The text-side families under torchrun: 2 gloo processes train the parameters of 1 on the same
global batch for ``clip`` (the small CLIP), ``sje`` (char-CNN-RNN with the SJE hinge) and ``distill``
(a DAMSM and a char-CNN-RNN student of a tiny MiniLM teacher), all in one torchrun.

What must be the global batch's for that: CLIP's and SJE's contrastive terms (every image against
every caption of both processes, with CLIP's identical-caption mask of the global batch and its
learnable temperature updated by the global loss's gradient), the loss normalisation (the global
``B``), the crops and flips (the data layer's) and the image encoder's BatchNorm statistics (SJE).
Distillation's losses are row means: its gradients need only the average. Dropout is off (its
masks are drawn per process). Tolerance as tests/test_distributed.py.

Step 0's gradients after the average (before any clip) are compared as well: Adam and RMSprop scale
each element by its own RMS, so the weights hardly show a gradient off by a constant factor (a CLIP
loss divided by the process count moved them by < 1e-4 of their travel), while those gradients then
differ by 2000 to 4500 times the allowance (float rounding: < 0.1 of it).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":  # the worker of test_text_families_two_processes_equal_one (under torchrun)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest
import torch

from conftest import tiny_overrides
from test_distributed import assert_same, initial_weights, torchrun, train_here, weights

CLIP = {"model.patch_size": 8, "model.vision_width": 32, "model.vision_layers": 1, "model.vision_heads": 2,
        "model.text_width": 32, "model.text_layers": 1, "model.text_heads": 2, "model.projection_dim": 16,
        "model.context_length": 24, "data.crop": False, "eval.max_images": 0, "schedule.kind": "constant",
        "schedule.warmup_steps": 0, "optim.grad_clip": 1.0}  # the clip acts on the averaged gradient
SJE = {"model.emb_dim": 16, "model.cnn_dim": 8, "model.doc_length": 60, "image.width": 4, "image.image_size": 32}
DISTILL = {"student.word_dim": 8, "student.dropout": 0.0, "loss.cosine_weight": 1.0, "eval_split": ""}
RUNS = {  # name -> (task, overrides)
    "clip": ("clip", CLIP),
    "sje": ("sje", SJE),
    "distill_damsm": ("distill", DISTILL),
    "distill_char": ("distill", {**DISTILL, "student.arch": "char_cnn_rnn", "student.cnn_dim": 8,
                                 "student.doc_length": 60}),
}

# Tensors whose gradient is zero up to float rounding: Adam's / RMSprop's division by the RMS of that
# rounding moves them by ~lr per step of random sign on either run, so they are compared only for
# being finite (as tests/test_distributed.py's BIAS_BEFORE_BATCHNORM). CLIP's key biases (a shift
# common to every key leaves the attention softmax unchanged) and SJE's two output biases while every
# pair violates the margin, as in these first steps (their gradient is then the sum of t_j - t_i,
# or v_i - v_j, over every pair: zero).
NO_GRADIENT = ("self_attn.k_proj.bias", "text_encoder/linear.bias", "image_encoder/emb_cnn_code.bias")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> dict[str, str]:
    from test_encoders import write_tiny_bert

    tmp = tmp_path_factory.mktemp("teacher")
    return {"teacher.source": f"minilm:{write_tiny_bert(tmp / 'minilm')}", "teacher.cache_dir": str(tmp / "cache")}


def overrides(name: str, data: Path, teacher: dict, out: Path) -> list[str]:
    task, o = RUNS[name]
    o = {**o, **(teacher if task == "distill" else {}), "train.max_steps": 3, "train.threads": 1}
    return tiny_overrides(data, out, **o)


def first_gradients(task: str, o: list[str]) -> dict[str, torch.Tensor]:
    """The gradients step 0 of a run hands its optimiser, averaged over the processes and before any
    clip (Adam's per-element scaling hides a wrong factor from the weights; these show it)."""
    from t2igan.config import load_config
    from t2igan.train.run import build_training

    tr = build_training(load_config(None, o, task=task), resume=False)
    for m in tr.task.modules.values():
        m.to(tr.device)
    tr.task.to_device(tr.device)
    tr.setup_fast_paths()
    grads, sync = {}, tr.task.sync_grads

    def record(params):
        sync(params)
        grads.update({f"{n}/{k}": p.grad.detach().clone() for n, m in tr.task.modules.items()
                      for k, p in m.named_parameters() if p.grad is not None})

    tr.task.sync_grads = record
    torch.manual_seed(0)
    tr.task.train_step(tr.to_batch(next(tr.batches()), 0), 0)
    return grads


def test_text_families_two_processes_equal_one(tiny_data, teacher, tmp_path):
    pytest.importorskip("transformers", reason="task clip and the MiniLM teacher need transformers")
    grad = lambda n, out: overrides(n, tiny_data, teacher, out) + ["optim.grad_clip=0"]  # noqa: E731
    listing = {"runs": {n: [task, overrides(n, tiny_data, teacher, tmp_path / f"{n}_two")] for n, (task, _) in RUNS.items()},
               "gradients": {n: [task, grad(n, tmp_path / f"{n}_g2"), str(tmp_path / f"{n}.pt")]
                             for n, (task, _) in RUNS.items()}}
    (tmp_path / "runs.json").write_text(json.dumps(listing))
    # the runs of ``runs.json`` (``runs``: name -> [task, overrides], trained one after the other, then
    # ``gradients``: name -> [task, overrides, file], step 0's gradients saved by rank 0) in 2 processes
    torchrun(None, [], worker=tmp_path / "runs.json", script=__file__)
    for n, (task, _) in RUNS.items():
        # the averaged gradient is the global batch's: every tensor, the temperature included
        one, two = first_gradients(task, grad(n, tmp_path / f"{n}_g1")), torch.load(tmp_path / f"{n}.pt")
        assert one.keys() == two.keys(), n
        scale = torch.stack([g.norm() for g in one.values()]).norm()  # float rounding: ~1e-7 of it
        for k in one:
            assert (one[k] - two[k]).norm() <= 1e-4 * one[k].norm() + 1e-5 * scale, (n, k)
        summary = json.loads((tmp_path / f"{n}_two" / "train_summary.json").read_text())
        assert summary["processes"] == 2 and summary["step"] == 3, n
        init = initial_weights(task, overrides(n, tiny_data, teacher, tmp_path / f"{n}_init"))
        train_here(task, overrides(n, tiny_data, teacher, tmp_path / f"{n}_one"))
        one, two = weights(tmp_path / f"{n}_one"), weights(tmp_path / f"{n}_two")
        noise = {k for k in one if k.endswith(NO_GRADIENT)}
        assert all(torch.isfinite(two[k]).all() for k in noise)
        keep = lambda w: {k: v for k, v in w.items() if k not in noise}  # noqa: E731
        assert_same(keep(one), keep(two), init)
        if task == "clip":  # the temperature trained, to the same value on both runs
            k = "clip/logit_scale"
            assert not torch.equal(one[k], init[k]) and torch.allclose(one[k], two[k], rtol=0, atol=1e-6)
        if task == "sje":  # BatchNorm statistics of the global batch are compared too
            assert any("running_var" in k for k in one)


def _worker(listing: Path) -> None:
    import torch.distributed as dist

    from t2igan.config import load_config
    from t2igan.train.run import build_training

    dist.init_process_group("gloo")  # one group for all the runs (the trainer leaves a group it did not make)
    todo = json.loads(listing.read_text())
    for task, o in todo["runs"].values():
        build_training(load_config(None, o, task=task), resume=False).fit()
    for task, o, out in todo["gradients"].values():
        grads = first_gradients(task, o)
        if dist.get_rank() == 0:
            torch.save(grads, out)
    dist.destroy_process_group()


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]))
