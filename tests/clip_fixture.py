"""A tiny random Hugging Face CLIP folder for tests (both towers tiny, fixed seed).

    d = tiny_clip_dir(tmp_path)            # config.json, model.safetensors, vocab.json, merges.txt,
    clip = load_clip(d)                    # preprocessor_config.json, tokenizer_config.json

The tokenizer is a CLIP-format BPE learnt from a few flower captions (every word of
:data:`CAPTIONS` is one token).
"""
from __future__ import annotations

from pathlib import Path

import torch

CAPTIONS = [
    "this flower has red petals and a yellow center",
    "the petals are pink with white stamen",
    "a purple flower with five round petals",
    "this blue flower has thin pointed petals and a green stem",
    "an orange flower with many small petals",
]
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_clip_dir(tmp_path, image_size: int = 32, patch_size: int = 8, width: int = 32, layers: int = 4,
                  proj: int = 32, seed: int = 0, name: str = "tiny_clip", context: int = 77) -> Path:
    """Write a random ``transformers.CLIPModel`` with tokenizer and image processor to ``tmp_path/name``."""
    import transformers

    from t2igan.text.clip_bpe import BOS, EOS, build_clip_bpe, write_clip_bpe

    d = Path(tmp_path) / name
    vocab, merges = build_clip_bpe(CAPTIONS)
    write_clip_bpe(d, vocab, merges)
    heads = max(1, width // 16)
    common = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers,
              "num_attention_heads": heads}
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=context, bos_token_id=vocab[BOS],
                         eos_token_id=vocab[EOS], pad_token_id=vocab[EOS], **common),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
        projection_dim=proj)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(cfg).eval()
    model.save_pretrained(str(d))
    tok = transformers.CLIPTokenizer.from_pretrained(str(d))
    tok.model_max_length = context
    tok.save_pretrained(str(d))
    transformers.CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_MEAN, image_std=OPENAI_STD).save_pretrained(str(d))
    return d
