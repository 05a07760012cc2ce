"""DAMSM and DF-GAN networks and losses."""
import pytest
import torch
import torch.nn.functional as F

from t2igan.models import dfgan
from t2igan.text import damsm


def _words_loss_reference(img, words, lens, g1, g2, g3):
    """The official per-caption loop of AttnGAN's words_loss/func_attention, for parity."""
    B = img.size(0)
    sims = []
    for i in range(B):
        n = int(lens[i])
        w = words[i, :, :n].unsqueeze(0).repeat(B, 1, 1)
        ctx = img.view(B, img.size(1), -1)
        attn = torch.bmm(ctx.transpose(1, 2), w).softmax(-1).transpose(1, 2) * g1  # softmax over words
        attn = attn.softmax(-1)  # over regions
        wc = torch.bmm(ctx, attn.transpose(1, 2))
        rs = F.cosine_similarity(w.transpose(1, 2).reshape(B * n, -1), wc.transpose(1, 2).reshape(B * n, -1), eps=1e-8)
        sims.append((rs.view(B, n) * g2).exp().sum(1, keepdim=True).log())
    s = torch.cat(sims, 1) * g3
    lab = torch.arange(B)
    return F.cross_entropy(s, lab), F.cross_entropy(s.t(), lab)


def test_words_loss_matches_official_loop():
    torch.manual_seed(0)
    B, D, T = 6, 16, 7
    img, words = torch.randn(B, D, 4, 4), torch.randn(B, D, T)
    lens = torch.tensor([7, 3, 5, 1, 7, 2])
    mask = torch.arange(T)[None] < lens[:, None]
    ref = _words_loss_reference(img, words, lens, 4.0, 5.0, 10.0)
    got = damsm.words_loss(img, words, mask, 4.0, 5.0, 10.0)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_sentence_loss_prefers_matching_pairs():
    code = torch.eye(4)
    good = damsm.sentence_loss(code, code.clone())[0]
    bad = damsm.sentence_loss(code, code.roll(1, 0))[0]
    assert good < 0.01 < 5 < bad


def test_text_encoder_shapes_and_padding_invariance():
    torch.manual_seed(0)
    enc = damsm.TextEncoder(ntoken=20, ninput=8, nhidden=12).eval()
    tok = torch.tensor([[3, 4, 5, 0, 0], [1, 2, 0, 0, 0]])
    words, sent, mask = enc(tok, torch.tensor([3, 2]))
    assert words.shape == (2, 12, 5) and sent.shape == (2, 12) and mask.tolist()[1] == [True, True, False, False, False]
    _, sent_short, _ = enc(tok[:, :3], torch.tensor([3, 2]))  # extra padding changes nothing
    torch.testing.assert_close(sent, sent_short)
    assert torch.all(words[1, :, 2:] == 0)


def test_image_encoder_shapes():
    regions, code = damsm.ImageEncoder(nef=32, width=8, image_size=32)(torch.randn(2, 3, 64, 64))
    assert regions.shape == (2, 32, 4, 4) and code.shape == (2, 32)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_dfgan_shapes(size):
    g, d, c = dfgan.NetG(ngf=4, nz=8, cond_dim=16, imsize=size), dfgan.NetD(ndf=4, imsize=size), dfgan.NetC(ndf=4, cond_dim=16)
    img = g(torch.randn(2, 8), torch.randn(2, 16))
    assert img.shape == (2, 3, size, size) and img.abs().max() <= 1
    feat = d(img)
    assert feat.shape == (2, 32, 4, 4)
    assert c(feat, torch.randn(2, 16)).shape == (2, 1, 1, 1)


def test_dfgan_parameter_names_follow_official_code():
    keys = set(dfgan.NetG(ngf=4, nz=8, cond_dim=16, imsize=64).state_dict())
    for k in ["fc.weight", "GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight", "GBlocks.3.c_sc.weight",
              "GBlocks.1.fuse2.affine1.fc_beta.linear2.bias", "to_rgb.1.weight"]:
        assert k in keys, k
    dkeys = set(dfgan.NetD(ndf=4, imsize=64).state_dict()) | set(dfgan.NetC(ndf=4, cond_dim=16).state_dict())
    for k in ["conv_img.weight", "DBlocks.0.conv_r.0.weight", "DBlocks.3.gamma", "DBlocks.0.conv_s.weight", "joint_conv.2.weight"]:
        assert k in dkeys, k


def test_affine_starts_as_identity():
    g = dfgan.NetG(ngf=4, nz=8, cond_dim=16, imsize=32)
    x = torch.randn(2, 32, 4, 4)
    torch.testing.assert_close(g.GBlocks[0].fuse1.affine0(x, torch.randn(2, 24)), x)


def test_ma_gp_value():
    # pred = sum(w * img) + sum(v * sent): gradient is (w, v) for every sample
    img = torch.randn(3, 2, 2, requires_grad=True)
    sent = torch.randn(3, 4, requires_grad=True)
    w, v = torch.full((2, 2), 0.5), torch.full((4,), 0.25)
    pred = (img * w).flatten(1).sum(1) + (sent * v).sum(1)
    norm = (4 * 0.25 + 4 * 0.0625) ** 0.5
    got = dfgan.matching_aware_gp(pred, img, sent, weight=2.0, power=6.0)
    torch.testing.assert_close(got, torch.tensor(2.0 * norm ** 6))
    # non-linear case: the penalty is differentiable (create_graph) with the right gradient
    x = torch.tensor([[1.0, 2.0]], requires_grad=True)
    s = torch.zeros(1, 1, requires_grad=True)
    gp = dfgan.matching_aware_gp((x ** 2).sum(1) + s.sum(1) * 0, x, s, weight=1.0, power=2.0)  # = |2x|^2 = 4|x|^2
    gp.backward()
    torch.testing.assert_close(x.grad, 8 * x.detach())


def test_hinge():
    p = torch.tensor([2.0, 0.0, -3.0])
    assert dfgan.hinge_d(p, True).item() == pytest.approx((0 + 1 + 4) / 3)
    assert dfgan.hinge_d(p, False).item() == pytest.approx((3 + 1 + 0) / 3)
