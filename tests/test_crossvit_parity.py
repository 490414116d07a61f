"""vit-pytorch CrossViT -> vitx: the converter, and numeric parity of logits, both streams' embeddings and every
attention map (self and cross) on the same weights, including the dense-fusion configuration."""

import pytest
import torch
from vit_pytorch.cross_vit import CrossViT
from vit_pytorch.extractor import Extractor

import convert_vit_pytorch
from helpers import assert_runs_in_pipeline, convert_with_script, tiny_cross_vit_kwargs
from modeling_vitx import CrossVitxForImageClassification


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


def assert_parity(kwargs, batch=2):
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
    assert_parity(tiny_cross_vit_kwargs(**overrides))


def test_dense_fusion_every_layer():
    """sm_enc_depth = lg_enc_depth = 1: the streams cross-attend after every transformer layer (D2F-style fusion)."""
    kwargs = tiny_cross_vit_kwargs(depth=3, sm_enc_depth=1, lg_enc_depth=1, cross_attn_depth=1)
    model, out = assert_parity(kwargs, batch=1)
    blocks = model.vitx.encoder.layers
    assert len(blocks) == 3
    assert all(len(b.sm_encoder.layers) == len(b.lg_encoder.layers) == len(b.cross_layers) == 1 for b in blocks)
    assert [a.shape for a in out.sm_attentions] == [(1, 2, 65, 65)] * 3
    assert [a.shape for a in out.lg_attentions] == [(1, 3, 17, 17)] * 3
    assert [a.shape for a in out.sm_cross_attentions] == [(1, 2, 1, 17)] * 3
    assert [a.shape for a in out.lg_cross_attentions] == [(1, 2, 1, 65)] * 3
    hidden = model.vitx(torch.randn(1, 3, 32, 32), output_hidden_states=True)
    assert [h.shape for h in hidden.sm_hidden_states] == [(1, 65, 16)] * (3 * 2 + 1)
    assert [h.shape for h in hidden.lg_hidden_states] == [(1, 17, 24)] * (3 * 2 + 1)


def test_script_writes_loadable_folder(tmp_path):
    kwargs = tiny_cross_vit_kwargs(dropout=0.2, emb_dropout=0.05)
    reference = CrossViT(**kwargs).eval()
    folder = convert_with_script(tmp_path, "cross_vit", reference, kwargs)
    model = CrossVitxForImageClassification.from_pretrained(folder).eval()
    assert (model.config.dropout, model.config.emb_dropout) == (0.2, 0.05)
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(img).logits, reference(img), atol=1e-5, rtol=1e-5)
    assert_runs_in_pipeline(folder, reference)


def test_bad_inputs_are_named():
    reference = CrossViT(**tiny_cross_vit_kwargs())
    with pytest.raises(ValueError, match="unknown vit-pytorch CrossViT kwargs \\['patch_size'\\]"):
        convert_vit_pytorch.convert("cross_vit", reference.state_dict(), {**tiny_cross_vit_kwargs(), "patch_size": 4})
    state = reference.state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="checkpoint keys that vitx cannot place: \\['extra.weight'\\]"):
        convert_vit_pytorch.convert("cross_vit", state, tiny_cross_vit_kwargs())
    with pytest.raises(KeyError, match="checkpoint has no `lg_mlp_head.1.weight`"):
        convert_vit_pytorch.convert("cross_vit", {k: v for k, v in reference.state_dict().items()
                                                  if k != "lg_mlp_head.1.weight"}, tiny_cross_vit_kwargs())
