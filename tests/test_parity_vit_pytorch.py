"""Parity with vit-pytorch on the same weights: its ViT (logits, every attention map, embeddings), its CrossViT
(logits, both streams' embeddings, every self- and cross-attention map, dense fusion too) and its efficient ViT
around a Nystromformer (logits), each converted by scripts/convert_vit_pytorch.py."""

import pytest
import torch
from vit_pytorch.cross_vit import CrossViT
from vit_pytorch.extractor import Extractor
from vit_pytorch.recorder import Recorder
from vit_pytorch.vit import ViT

import convert_vit_pytorch
from helpers import tiny_cross_vit_kwargs, tiny_vit_kwargs
from references import landmark_pair

# ViT


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_parity_logits_attentions_embeddings(pool):
    kwargs = tiny_vit_kwargs(pool=pool, image_size=(32, 48), patch_size=(4, 8))
    reference = ViT(**kwargs).eval()
    model = convert_vit_pytorch.convert("vit", reference.state_dict(), kwargs)
    img = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = model(img, output_attentions=True)
        ref_logits, ref_attns = Recorder(reference)(img)
        _, ref_embeddings = Extractor(reference)(img)
        embeddings = model.vitx(img).last_hidden_state
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(out.attentions, dim=1), ref_attns, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embeddings, ref_embeddings, atol=1e-5, rtol=1e-5)


def test_single_head_without_output_projection():
    """heads == 1 and dim_head == dim: vit-pytorch drops to_out; vitx uses an identity projection."""
    kwargs = tiny_vit_kwargs(heads=1, dim_head=32)
    reference = ViT(**kwargs).eval()
    assert "transformer.layers.0.0.to_out.0.weight" not in reference.state_dict()
    model = convert_vit_pytorch.convert("vit", reference.state_dict(), kwargs)
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(img).logits, reference(img), atol=1e-5, rtol=1e-5)


# CrossViT


def reference_attention_maps(reference, img):
    """vit-pytorch's post-softmax maps, from forward hooks on every ``cross_vit.Attention.attend`` Softmax, by name."""
    maps, hooks = {}, []
    for name, module in reference.named_modules():
        if isinstance(module, torch.nn.Softmax):
            hooks.append(module.register_forward_hook(lambda m, args, out, name=name: maps.setdefault(name, out)))
    try:
        with torch.no_grad():
            reference(img)
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def expected_maps(maps, kwargs):
    """vit-pytorch's maps in the order vitx returns them; pops each, so leftovers mean a map vitx does not return."""
    blocks = range(kwargs["depth"])
    layer = "multi_scale_encoder.layers"
    return {
        "sm_attentions": [maps.pop(f"{layer}.{b}.0.layers.{i}.0.attend")
                          for b in blocks for i in range(kwargs["sm_enc_depth"])],
        "lg_attentions": [maps.pop(f"{layer}.{b}.1.layers.{i}.0.attend")
                          for b in blocks for i in range(kwargs["lg_enc_depth"])],
        "sm_cross_attentions": [maps.pop(f"{layer}.{b}.2.layers.{c}.0.fn.attend")
                                for b in blocks for c in range(kwargs["cross_attn_depth"])],
        "lg_cross_attentions": [maps.pop(f"{layer}.{b}.2.layers.{c}.1.fn.attend")
                                for b in blocks for c in range(kwargs["cross_attn_depth"])],
    }


def assert_cross_vit_parity(kwargs, batch=2):
    """Convert a fresh vit-pytorch CrossViT; logits, both embeddings and all maps must match to 1e-5."""
    reference = CrossViT(**kwargs).eval()
    model = convert_vit_pytorch.convert("cross_vit", reference.state_dict(), kwargs)
    img = torch.randn(batch, 3, kwargs["image_size"], kwargs["image_size"])
    with torch.no_grad():
        out = model(img, output_attentions=True)
        embeddings = model.vitx(img)
        ref_logits, (ref_sm, ref_lg) = Extractor(reference, layer_name="multi_scale_encoder")(img)
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embeddings.sm_last_hidden_state, ref_sm, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embeddings.lg_last_hidden_state, ref_lg, atol=1e-5, rtol=1e-5)
    maps = reference_attention_maps(reference, img)
    expected = expected_maps(maps, kwargs)
    assert not maps, f"vit-pytorch maps without a vitx counterpart: {sorted(maps)}"
    for field, reference_maps in expected.items():
        ours = getattr(out, field)
        assert len(ours) == len(reference_maps), field
        for index, (mine, theirs) in enumerate(zip(ours, reference_maps)):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5, msg=lambda m: f"{field}[{index}]: {m}")
    return model, out


@pytest.mark.parametrize("overrides", [
    {},  # different widths: cross-attention projects in and out
    dict(lg_dim=16, cross_attn_heads=1, cross_attn_dim_head=16),  # same widths: no projections
])
def test_cross_vit_parity_logits_embeddings_attentions(overrides):
    assert_cross_vit_parity(tiny_cross_vit_kwargs(**overrides))


def test_cross_vit_dense_fusion_every_layer():
    """sm_enc_depth = lg_enc_depth = 1: the streams cross-attend after every transformer layer (D2F-style fusion)."""
    kwargs = tiny_cross_vit_kwargs(depth=3, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1)
    model, out = assert_cross_vit_parity(kwargs, batch=1)
    blocks = model.vitx.encoder.layers
    assert len(blocks) == 3
    assert all(len(b.sm_encoder.layers) == len(b.lg_encoder.layers) == len(b.cross_layers) == 1 for b in blocks)
    assert [a.shape for a in out.sm_attentions] == [(1, 2, 65, 65)] * 3
    assert [a.shape for a in out.lg_attentions] == [(1, 3, 17, 17)] * 3
    assert [a.shape for a in out.sm_cross_attentions] == [(1, 2, 1, 17)] * 3
    assert [a.shape for a in out.lg_cross_attentions] == [(1, 2, 1, 65)] * 3
    hidden = model.vitx(torch.randn(1, 3, 32, 32), output_hidden_states=True)
    # the tokens entering each of the 3 x 1 layers, then the output: config.num_hidden_layers + 1
    assert [h.shape for h in hidden.sm_hidden_states] == [(1, 65, 16)] * (3 * 1 + 1)
    assert [h.shape for h in hidden.lg_hidden_states] == [(1, 17, 24)] * (3 * 1 + 1)


# efficient ViT around a Nystromformer


def test_efficient_nystrom_conversion_logits():
    """nystrom-attention scales its pseudo-inverse over the whole batch; per sample, vitx's logits agree."""
    _, vit, model, _ = landmark_pair()
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = torch.cat([vit(img[i:i + 1]) for i in range(2)])
        torch.testing.assert_close(model(img).logits, expected, atol=1e-4, rtol=1e-4)
