"""A CLIP-format byte-level BPE tokenizer learnt from a list of captions.

CLIP's tokenizer (Radford et al. 2021) is a byte-level BPE with the word-end marker ``</w>``,
lower-cased text and two special tokens, ``<|startoftext|>`` and ``<|endoftext|>``, the last two
ids. :func:`build_clip_bpe` learns the merges of such a tokenizer from captions (the ``tokenizers``
library's BPE trainer, with CLIP's normaliser and pre-tokeniser) and lays the vocabulary out as
CLIP's ``vocab.json`` does::

    ids 0..255      the 256 byte symbols
    ids 256..511    the same symbols with ``</w>`` (a word's last symbol)
    ids 512..       one token per merge, in merge order
    last two        <|startoftext|>, <|endoftext|>

:func:`write_clip_bpe` writes ``vocab.json`` + ``merges.txt`` (``#version: 0.2`` header), the two
files ``transformers.CLIPTokenizer`` reads. With no vocabulary limit the trainer merges until every
caption word is one token.

    vocab, merges = build_clip_bpe(captions)
    write_clip_bpe(directory, vocab, merges)

:func:`save_hf_clip` writes a complete Hugging Face CLIP folder around a ``transformers.CLIPModel``
(weights, these tokenizer files, ``preprocessor_config.json``); :func:`open_clip_vocab` gives
OpenAI's BPE (the one open_clip ships) in this layout.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from t2igan import T2IError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
WORD_END = "</w>"
# CLIP's pre-tokenisation: specials, English contractions, letter runs, single digits, other symbol runs
SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
MAX_VOCAB = 49408  # OpenAI CLIP's vocabulary size
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise T2IError('CLIP needs the transformers package: pip install "t2igan[clip]"') from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def _pipeline(tok):
    """CLIP's normaliser and pre-tokeniser on a ``tokenizers.Tokenizer``."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    return tok


def byte_symbols() -> list[str]:
    """The 256 byte symbols in CLIP/GPT-2 order (printable bytes first, the others shifted to 256+)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_clip_bpe(captions: Iterable[str], vocab_size: int = MAX_VOCAB,
                   min_frequency: int = 1) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a CLIP-format BPE learnt from ``captions``; ``vocab_size``: at most this many
    tokens (bytes, merges and the two specials; 514 at least)."""
    try:
        from tokenizers import Tokenizer, models, trainers
    except ImportError:
        raise T2IError('the CLIP tokenizer needs the tokenizers package: pip install "t2igan[clip]"') from None
    if vocab_size < 514:
        raise T2IError(f"CLIP BPE vocab_size={vocab_size}: at least 514 (256 bytes, 256 word ends, 2 specials)")
    texts = [c for c in captions if isinstance(c, str) and c.strip()]
    if not texts:
        raise T2IError("CLIP BPE: no captions to learn the tokenizer from")
    symbols = byte_symbols()
    tok = _pipeline(Tokenizer(models.BPE(end_of_word_suffix=WORD_END, continuing_subword_prefix="")))
    n_merges = vocab_size - 514
    # the trainer's vocabulary: its alphabet (bytes seen, with and without </w>) + merges; give it room
    # for every byte form so that the merge budget is n_merges
    trainer = trainers.BpeTrainer(vocab_size=n_merges + 512, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=symbols, end_of_word_suffix=WORD_END, special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]][:n_merges]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + WORD_END: 256 + i for i, s in enumerate(symbols)})
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, [(a, b) for a, b in merges]


def write_clip_bpe(directory: str | os.PathLike, vocab: dict[str, int], merges: list[tuple[str, str]]) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP's layout) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return d


def clip_tokenizer(directory: str | os.PathLike, model_max_length: int = 77):
    """``transformers.CLIPTokenizer`` of the ``vocab.json`` + ``merges.txt`` in ``directory``."""
    d = Path(directory)
    return import_transformers().CLIPTokenizer(vocab=str(d / "vocab.json"), merges=str(d / "merges.txt"),
                                      model_max_length=model_max_length)


# ----------------------------------------------------------------------------- a Hugging Face CLIP folder
def open_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """OpenAI CLIP's vocab/merges, from the BPE file open_clip ships (49408 tokens)."""
    import gzip

    try:
        from open_clip.tokenizer import default_bpe
    except ImportError:
        raise T2IError('writing the open_clip tokenizer needs the open_clip package: pip install "t2igan[clip]"') from None
    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in lines]
    sym = byte_symbols()
    vocab = {s: i for i, s in enumerate(sym)}
    vocab.update({s + WORD_END: 256 + i for i, s in enumerate(sym)})
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    return vocab, merges


def save_hf_clip(directory: str | os.PathLike, model, image_mean, image_std, vocab: dict | None = None,
                 merges: list | None = None, open_clip_bpe: bool = False) -> Path:
    """Write a complete Hugging Face CLIP folder: ``save_pretrained`` + vocab.json/merges.txt (given, or
    open_clip's CLIP BPE) + tokenizer files + preprocessor_config.json."""
    tr = import_transformers()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if open_clip_bpe:
        vocab, merges = open_clip_vocab()
    if vocab is None or merges is None:
        raise T2IError("save_hf_clip: give vocab and merges (or open_clip_bpe=True)")
    model.save_pretrained(str(d))
    write_clip_bpe(d, vocab, merges)
    tok = tr.CLIPTokenizer(vocab=str(d / "vocab.json"), merges=str(d / "merges.txt"),
                           model_max_length=int(model.config.text_config.max_position_embeddings))
    tok.save_pretrained(str(d))
    S = int(model.config.vision_config.image_size)
    tr.CLIPImageProcessor(size={"shortest_edge": S}, crop_size={"height": S, "width": S},
                          image_mean=[float(x) for x in image_mean],
                          image_std=[float(x) for x in image_std]).save_pretrained(str(d))
    return d
