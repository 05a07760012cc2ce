"""Paraphrase caption set (words never seen in training) and caption-set evaluation (`t2igan eval --captions`)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from t2igan import T2IError
from t2igan.data import synth
from t2igan.data.caption_set import load_caption_set, resolve_caption_set
from t2igan.data.folder import load_folder
from t2igan.data.paraphrase import (BACKGROUND_PREPS, CENTRE_NOUNS, FRAME_WORDS, LEXICON, build_paraphrase_set,
                                    check_vocabulary, lexicon_words, make_paraphrase, write_paraphrase_set)
from t2igan.data.text import Vocabulary, tokenize


def grammar_vocabulary(n: int = 1500) -> set[str]:
    """Every word the SynthFlowers grammar emits in 10 * n captions (79 words; all appear well before this)."""
    words = set()
    for i in range(n):
        rng = np.random.default_rng([7, i])
        caps, _ = synth.make_captions(synth.sample_attributes(rng), rng)
        for c in caps:
            words.update(tokenize(c))
    return words


def grammar_attribute_words() -> set[str]:
    """The words the SynthFlowers grammar uses to state attributes (its constants) and its nouns."""
    words = {v for vals in synth.ATTRIBUTES.values() for v in vals} | set(synth.COUNT_WORDS.values())
    for table in (synth.SHAPE_WORDS, synth.SIZE_WORDS, synth.BACKGROUND_NOUNS):
        words |= {w for opts in table.values() for p in opts for w in tokenize(p)}
    words |= set(synth.CENTRE_WORDS) | {"petal", "petals", "flower", "color", "colour", "background", "sized"}
    return words - {"a", "the"}


@pytest.fixture(scope="module")
def data(tiny_data, tmp_path_factory):
    """A private copy of the tiny SynthFlowers folder (paraphrase files are written into it)."""
    return shutil.copytree(tiny_data, tmp_path_factory.mktemp("para") / "sf32")


# ----------------------------------------------------------------------------- the set
def test_lexicon_never_in_training_captions(data):
    lex = lexicon_words()
    vocab = grammar_vocabulary()
    assert len(vocab) >= 75 and {"red", "petals", "center", "sky"} <= vocab
    assert not lex & vocab, sorted(lex & vocab)
    train = {w for caps in load_folder(data, "train").captions for c in caps for w in tokenize(c)}
    assert not lex & train
    check_vocabulary(c for caps in load_folder(data, "train").captions for c in caps)
    with pytest.raises(T2IError, match="scarlet"):
        check_vocabulary(["this flower has scarlet petals"])
    # the connecting words name no attribute value of the grammar, and lexicon and frame are apart
    assert not FRAME_WORDS & grammar_attribute_words()
    assert not FRAME_WORDS & lex
    # every value of every attribute has a phrase; one word never names two values of an attribute
    for k, vals in synth.ATTRIBUTES.items():
        assert set(LEXICON[k]) == set(vals)
        owners: dict[str, str] = {}
        for v, phrases in LEXICON[k].items():
            for p in phrases:
                for w in set(tokenize(p)) - {"a", "the"}:
                    assert owners.setdefault(w, v) == v, (k, w)


def _values_stated(caption: str, attr: str) -> set[str]:
    words = set(tokenize(caption))
    return {v for v, phrases in LEXICON[attr].items()
            if any(set(tokenize(p)) - {"a", "the"} <= words for p in phrases)}


def test_paraphrases_state_exactly_the_named_attributes():
    rng = np.random.default_rng(0)
    lex = lexicon_words()
    for _ in range(400):
        attrs = synth.sample_attributes(rng)
        named = {"petal_colour"} | {k for k in synth.ATTRIBUTES if rng.random() < 0.5}
        cap = make_paraphrase(attrs, named, rng)
        words = set(tokenize(cap))
        assert words <= lex | FRAME_WORDS, words - lex - FRAME_WORDS
        assert attrs["petal_colour"] in _values_stated(cap, "petal_colour"), cap
        for k in ("petal_count", "petal_shape", "size", "background"):
            assert _values_stated(cap, k) == ({attrs[k]} if k in named else set()), (k, cap)
        if "centre_colour" in named:
            assert attrs["centre_colour"] in _values_stated(cap, "centre_colour"), cap
        else:  # no centre word, and no colour word other than the petals'
            assert not words & set(CENTRE_NOUNS), cap
            assert _values_stated(cap, "centre_colour") <= {attrs["petal_colour"]} | _colour_twins(attrs["petal_colour"])
    with pytest.raises(ValueError, match="petal_colour"):
        make_paraphrase(synth.sample_attributes(rng), {"size"}, rng)
    assert set(BACKGROUND_PREPS) == set(synth.ATTRIBUTES["background"])


def _colour_twins(petal: str) -> set[str]:
    """Centre colours sharing a word with the petal colour's phrases (e.g. 'golden' for yellow)."""
    words = {w for p in LEXICON["petal_colour"][petal] for w in tokenize(p)}
    return {v for v, ps in LEXICON["centre_colour"].items() if words & {w for p in ps for w in tokenize(p)}}


def test_set_is_deterministic_and_built_from_the_test_split(data):
    ds = load_folder(data, "test")
    a = build_paraphrase_set(ds.ids, ds.attributes, ds.named, per_image=2, seed=0)
    b = build_paraphrase_set(ds.ids, ds.attributes, ds.named, per_image=2, seed=0)
    c = build_paraphrase_set(ds.ids, ds.attributes, ds.named, per_image=2, seed=1)
    assert a == b and a[0] != c[0]
    paras, controls = a
    assert len(paras) == len(controls) == 2 * len(ds)
    by_id = dict(zip(ds.ids, zip(ds.attributes, ds.named)))
    vocab = grammar_vocabulary(300)
    for p, q in zip(paras, controls):
        attrs, named = by_id[p["id"]]
        assert p["attributes"] == attrs == q["attributes"] and p["named"] == q["named"]
        assert p["named"] == sorted(set(named[p["source_caption"]]) | {"petal_colour"})
        assert set(tokenize(q["caption"])) <= vocab  # the control speaks the training grammar
        assert p["caption"] != q["caption"]

    out = write_paraphrase_set(data, per_image=2)
    first = (data / "paraphrase.jsonl").read_bytes()
    assert out["n"] == len(paras)
    assert [json.loads(x) for x in first.decode().splitlines()] == paras
    from t2igan.cli import main

    assert main(["data", "paraphrase", str(data)]) == 0
    assert (data / "paraphrase.jsonl").read_bytes() == first
    cs = load_caption_set(resolve_caption_set("paraphrase", data), synth.ATTRIBUTES)
    assert cs.name == "paraphrase" and len(cs) == len(paras) and cs.ids[0] == ds.ids[0]


# ----------------------------------------------------------------------------- file checks
@pytest.mark.parametrize("record, message", [
    ({"attributes": {"petal_colour": "red"}}, "missing or empty 'caption'"),
    ({"caption": "a red flower"}, "'attributes' must be"),
    ({"caption": "a flower", "attributes": {"petal_colour": "vermilion"}}, "petal_colour='vermilion' is not one of"),
    ({"caption": "a flower", "attributes": {"petal_colour": "red"}, "named": ["size"]}, "gives no value"),
    ({"caption": "a flower", "attributes": {"hue": "red"}}, "does not predict"),
    ({"caption": "a flower", "attributes": {"petal_colour": "red"}, "colour": 1}, "unknown field"),
    ("not json", "not valid JSON"),
])
def test_bad_caption_set_is_one_line_error(tmp_path, record, message):
    good = json.dumps({"caption": "a red flower", "attributes": {"petal_colour": "red"}})
    bad = record if isinstance(record, str) else json.dumps(record)
    p = tmp_path / "set.jsonl"
    p.write_text(good + "\n" + bad + "\n")
    with pytest.raises(T2IError, match=message) as e:
        load_caption_set(p, synth.ATTRIBUTES)
    assert "\n" not in str(e.value) and f"{p}:2" in str(e.value)


def test_empty_caption_policy_of_the_vocabulary():
    v = Vocabulary(["<end>", "a", "red"])
    with pytest.raises(T2IError, match="no word known"):
        v.batch(["scarlet florets"], 5)
    tokens, lengths, dropped = v.batch(["scarlet florets", "a red one"], 5, empty="pad")
    assert tokens[0].tolist() == [0] * 5 and lengths.tolist() == [1, 2] and dropped == ["florets", "one", "scarlet"]


# ----------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def evaluator_dir(tmp_path_factory):
    """An untrained evaluator over the SynthFlowers attributes (the tests check the bookkeeping, not its skill)."""
    from t2igan.eval.evaluator import AttributeEvaluator

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ev") / "evaluator"
    AttributeEvaluator(synth.ATTRIBUTES, width=8, feature_dim=16, image_size=32).eval().save_pretrained(out)
    return out


def test_eval_caption_sets_on_a_damsm_run(data, tiny_dfgan, evaluator_dir, tmp_path, capsys):
    from t2igan.cli import main

    write_paraphrase_set(data, per_image=2)
    odd = tmp_path / "odd.jsonl"  # no known word at all / one known word; no ids: no real ceiling
    odd.write_text(json.dumps({"caption": "scarlet florets", "attributes": {"petal_colour": "red"}}) + "\n"
                   + json.dumps({"caption": "a red flower", "attributes": {"petal_colour": "red", "size": "small"},
                                 "named": ["petal_colour"]}) + "\n")
    out = tmp_path / "metrics.json"
    argv = ["eval", str(tiny_dfgan), "--data-root", str(data), "--evaluator", str(evaluator_dir), "--splits", "none",
            "--captions", "paraphrase", "--captions", "paraphrase_control", "--captions", str(odd),
            "--damsm", "none", "--device", "cpu", "--batch-size", "8", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["splits"]) == {"paraphrase", "paraphrase_control", "odd"}
    assert "padding token alone" in res["protocol"]["caption_sets"]
    n = sum(1 for _ in (data / "paraphrase.jsonl").open())
    p, c, o = (res["splits"][k] for k in ("paraphrase", "paraphrase_control", "odd"))
    for e in (p, c):
        assert e["n_samples"] == n and e["kind"] == "captions"
        assert e["generated"]["attributes"]["petal_colour"]["count"] == n  # every paraphrase names the petal colour
    # same images, same named attributes: the real ceiling is identical; only the wording differs
    assert p["real"]["attributes"] == c["real"]["attributes"]
    assert p["vocabulary"]["with_unknown_words"] == n  # every paraphrase loses its attribute words
    assert p["vocabulary"]["dropped_word_fraction"] > 0.5
    assert o["vocabulary"]["no_known_word"] == 1 and o["real"] == {}
    assert o["generated"]["attributes"]["all_named"]["count"] == 2
    assert o["generated"]["attributes_known_words_only"]["all_named"]["count"] == 1
    from t2igan.eval.run import format_table

    table = format_table(res)
    assert "paraphrase_control" in table and "odd: 1 of 2 captions have words outside" in table

    # bad files and missing sets: one error line, exit 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"caption": "a flower", "attributes": {"size": "gigantic"}}) + "\n")
    for spec, msg in ((str(bad), "size='gigantic' is not one of"), ("nosuchset", "nosuchset.jsonl")):
        argv2 = argv[:argv.index("--captions")] + ["--captions", spec, "--out", str(tmp_path / "x.json")]
        capsys.readouterr()
        assert main(argv2) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


def test_evaluate_pipeline_restores_empty_caption_policy(data, tiny_dfgan, evaluator_dir):
    from t2igan.data.caption_set import CaptionSet
    from t2igan.eval.run import evaluate_pipeline
    from t2igan.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tiny_dfgan)
    cs = CaptionSet("words", data / "none.jsonl", ["ebony hub, scarlet florets", "a red flower"],
                    [{"petal_colour": "red"}] * 2, [["petal_colour"]] * 2, None)
    res = evaluate_pipeline(pipe, data, evaluator_dir, splits=(), n_samples=10, batch_size=4, progress=False,
                            caption_sets=[cs])
    assert res["splits"]["words"]["vocabulary"]["no_known_word"] == 1
    assert pipe.empty_captions == "error"
    with pytest.raises(T2IError, match="no word known"):
        pipe.generate(["ebony hub"])
    with pytest.raises(T2IError, match="also a split"):
        evaluate_pipeline(pipe, data, evaluator_dir, splits=("words",), caption_sets=[cs], progress=False)


def test_eval_split_with_a_caption_of_unseen_words(data, tiny_dfgan, evaluator_dir, tmp_path):
    """A split caption whose words are all outside the DAMSM vocabulary (an unseen emoji name, say)
    is generated, and encoded for R-precision, from the padding token, not an error."""
    from t2igan.cli import main
    from t2igan.data.folder import load_folder

    root = shutil.copytree(data, tmp_path / "sf32")
    first = load_folder(root, "test").ids[0]
    cap_file = root / "captions" / f"{first}.txt"
    lines = cap_file.read_text(encoding="utf-8").splitlines()
    cap_file.write_text("\n".join(["scarlet florets"] + lines[1:]) + "\n", encoding="utf-8")
    out = tmp_path / "metrics.json"
    assert main(["eval", str(tiny_dfgan), "--data-root", str(root), "--evaluator", str(evaluator_dir), "--splits", "test",
                 "--n-samples", "12", "--diversity-captions", "2", "--diversity-k", "2", "--device", "cpu",
                 "--batch-size", "6", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sp = res["splits"]["test"]
    assert sp["vocabulary"]["no_known_word"] == 1 and "mean" in sp["generated"]["r_precision"]
    assert "padding token alone" in res["protocol"]["samples"] and "padding token" in res["protocol"]["r_precision"]
