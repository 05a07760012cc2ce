"""GALIP and LAFITE on a tiny random CLIP in each file format the project reads (a Hugging Face CLIP
folder, an open_clip checkpoint file): two training steps each, the CLIP's image tower frozen
(bit-identical weights, no gradients) and the generator trained; the saved model runs again."""
from __future__ import annotations

import pytest
import torch

from t2igan.config import load_config
from t2igan.pipeline import Pipeline
from t2igan.train.run import build_training

from clip_fixture import tiny_clip_dir
from conftest import tiny_overrides

pytest.importorskip("transformers")

SMALL = {
    "galip": {"model.ngf": 4, "model.ndf": 4, "model.nz": 8, "model.code_ch": 8, "model.mid_ch": 8, "model.map_num": 2},
    "lafite": {"model.z_dim": 16, "model.w_dim": 16, "model.map_num": 2, "model.channel_base": 128,
               "model.channel_max": 8, "model.fts_dim": 16},
}


@pytest.fixture(scope="module", params=["hf-folder", "open_clip-file"])
def clip_source(request, tmp_path_factory) -> str:
    """What ``clip:`` is given: a Hugging Face CLIP folder, or ARCH:FILE of an open_clip checkpoint."""
    d = tmp_path_factory.mktemp("clip")
    if request.param == "hf-folder":
        return str(tiny_clip_dir(d, image_size=32, patch_size=8, width=32, layers=2, proj=16))
    pytest.importorskip("open_clip")
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = CLIP(embed_dim=16, quick_gelu=True,
             vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
             text_cfg={"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2})
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(d / "tiny_open_clip.safetensors"))
    return f"t2igan-tiny-quickgelu:{d / 'tiny_open_clip.safetensors'}"


@pytest.mark.parametrize("task", ["galip", "lafite"])
def test_two_steps_on_each_clip_format_keep_the_image_tower_frozen(task, clip_source, tiny_data, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_data, tmp_path / "run", clip=clip_source, **SMALL[task]), task=task)
    tr = build_training(cfg, resume=False)
    clip = tr.task.clip
    tower = {k: v.clone() for k, v in clip.model.vision_model.state_dict().items()}
    proj = clip.model.visual_projection.weight.clone()
    g = tr.task.modules["netG" if task == "galip" else "G"]
    trainable = {n: p.detach().clone() for n, p in g.named_parameters() if p.requires_grad}
    assert tr.fit()["step"] == 2
    for k, v in clip.model.vision_model.state_dict().items():
        assert torch.equal(v, tower[k]), k  # frozen, as both methods say
    assert torch.equal(clip.model.visual_projection.weight, proj)
    assert all(not p.requires_grad and p.grad is None for p in clip.model.parameters())
    assert any(not torch.equal(p, trainable[n]) for n, p in g.named_parameters() if p.requires_grad)
    pipe = Pipeline.from_pretrained(tmp_path / "run")
    img = pipe.generate(["this flower has red petals"], seed=0, n=2)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    assert pipe.text_encoder.spec == f"clip:{clip_source}"
