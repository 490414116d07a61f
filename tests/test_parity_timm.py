"""Parity with timm's VisionTransformer on the same weights, converted by scripts/convert_vit.py: logits, every
hidden state and attention map (class token or mean pooling, rectangular, no embedded class position), and a
headless checkpoint as the base model."""

import pytest
import torch

import convert_vit
from modeling_vitx import VitxModel
from references import timm_vit


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def timm_trace(model, img):
    """Logits, the blocks' input and outputs, and each block's post-softmax attention map."""
    hidden_states, attentions = [], []
    handles = [model.blocks[0].register_forward_pre_hook(lambda module, args: hidden_states.append(args[0]))]
    for block in model.blocks:
        block.attn.fused_attn = False  # the explicit path, whose softmaxed map is what attn_drop receives
        handles.append(block.register_forward_hook(lambda module, args, out: hidden_states.append(out)))
        handles.append(block.attn.attn_drop.register_forward_hook(lambda module, args, out: attentions.append(out)))
    logits = model(img)
    for handle in handles:
        handle.remove()
    return logits, hidden_states, attentions


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(img_size=(32, 48), patch_size=(4, 8), embed_dim=48, depth=3, num_heads=3, mlp_ratio=2.0, qkv_bias=False,
         no_embed_class=True, num_classes=5),
    dict(class_token=False, global_pool="avg", fc_norm=False, num_heads=2, num_classes=7),
], ids=["square", "rectangular-no-qkv-bias-no-embed-class", "no-class-token-mean-pool"])
def test_timm_parity_logits_hidden_states_attentions(overrides):
    reference = timm_vit(**overrides)
    model = convert_vit.convert_timm_vit(reference)
    assert model.config.pool == ("mean" if reference.cls_token is None else "cls")
    assert model.config.layer_norm_eps == 1e-6
    img = torch.randn(2, 3, *reference.patch_embed.img_size)
    with torch.no_grad():
        ref_logits, ref_hidden, ref_attentions = timm_trace(reference, img)
        out = model(img, output_hidden_states=True, output_attentions=True)
        assert_close(out.logits, ref_logits)
        assert_close(model(img).logits, ref_logits)
        assert len(out.hidden_states) == len(ref_hidden) == len(reference.blocks) + 1
        assert len(out.attentions) == len(ref_attentions) == len(reference.blocks)
        for ours, theirs in zip(out.hidden_states + out.attentions, ref_hidden + ref_attentions):
            assert_close(ours, theirs)
        assert_close(model.vitx(img).last_hidden_state, reference.forward_features(img))


def test_timm_headless_checkpoint_converts_to_base_model():
    reference = timm_vit(num_classes=0)
    model = convert_vit.convert_timm_vit(reference)
    assert type(model) is VitxModel
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(img).pooler_output, reference(img))
