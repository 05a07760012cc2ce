import pytest

from t2igan import T2IError
from t2igan.data.text import MAX_CAPTION_CHARS, Vocabulary, tokenize


def test_tokenize_and_vocab(tmp_path):
    assert tokenize("This flower's petals, RED!") == ["this", "flower", "s", "petals", "red"]
    v = Vocabulary.build(["a red flower", "a blue flower", "red red"], min_count=2)
    assert v.words == ["<end>", "a", "flower", "red"]
    tokens, lengths, dropped = v.batch(["a blue flower", "red"], max_words=4)
    assert tokens.tolist() == [[1, 2, 0, 0], [3, 0, 0, 0]] and lengths.tolist() == [2, 1]
    assert dropped == ["blue"]
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").words == v.words


def test_truncates_to_max_words():
    v = Vocabulary.build(["a b c d e"])
    tokens, lengths, _ = v.batch(["a b c d e"], max_words=3)
    assert lengths.tolist() == [3] and v.decode(tokens[0].tolist()) == "a b c"


@pytest.mark.parametrize("caption, msg", [
    ("", "caption 0 is empty"),
    ("   ", "caption 0 is empty"),
    ("zzz qqq", "no word known"),
    ("x" * (MAX_CAPTION_CHARS + 1), "characters long"),
    (None, "not a string"),
])
def test_bad_captions(caption, msg):
    v = Vocabulary.build(["a red flower"])
    with pytest.raises(T2IError, match=msg):
        v.batch([caption], 18)


def test_strict_unknown_words():
    v = Vocabulary.build(["a red flower"])
    with pytest.raises(T2IError, match="not in the vocabulary: blue"):
        v.batch(["a blue flower"], 18, strict=True)


def test_bad_vocab_file(tmp_path):
    p = tmp_path / "v.json"
    p.write_text("{not json")
    with pytest.raises(T2IError, match="not a t2igan vocabulary"):
        Vocabulary.load(p)
