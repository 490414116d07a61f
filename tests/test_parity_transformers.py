"""Parity with transformers' ViT on the same weights, converted by scripts/convert_vit.py: logits, every hidden
state and attention map, at the trained and at another resolution; the base model and its pooler."""

import pytest
import torch
from transformers import ViTModel

import convert_vit
from modeling_vitx import VitxForImageClassification, VitxModel
from references import hf_vit


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(image_size=(32, 48), patch_size=(4, 8), hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
         intermediate_size=96, qkv_bias=False, layer_norm_eps=1e-6, num_labels=5),
    dict(image_size=40, patch_size=8, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
], ids=["square", "rectangular-no-qkv-bias", "one-layer"])
def test_hf_parity_logits_hidden_states_attentions(overrides):
    reference = hf_vit(**overrides)
    model = convert_vit.convert_hf_vit(reference)
    assert isinstance(model, VitxForImageClassification) and model.config.patch_norm is False
    height, width = reference.config.image_size if isinstance(reference.config.image_size, (list, tuple)) \
        else (reference.config.image_size,) * 2
    img = torch.randn(2, 3, height, width)
    with torch.no_grad():
        ref = reference(img, output_hidden_states=True, output_attentions=True)
        out = model(img, output_hidden_states=True, output_attentions=True)
        assert_close(out.logits, ref.logits)
        assert_close(model(img).logits, ref.logits)  # the SDPA path
        assert len(out.hidden_states) == len(ref.hidden_states) == reference.config.num_hidden_layers + 1
        for ours, theirs in zip(out.hidden_states + out.attentions, ref.hidden_states + ref.attentions):
            assert_close(ours, theirs)
        assert_close(model.vitx(img).last_hidden_state, reference.vit(img).last_hidden_state)


def test_hf_parity_at_another_resolution():
    reference = hf_vit()
    model = convert_vit.convert_hf_vit(reference)
    img = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert_close(model(img, interpolate_pos_encoding=True).logits,
                     reference(img, interpolate_pos_encoding=True).logits)


def test_hf_base_model_and_its_pooler():
    with_pooler = hf_vit(ViTModel)
    with pytest.raises(ValueError, match="a pooler \\(dense \\+ tanh"):
        convert_vit.convert_hf_vit(with_pooler)
    model = convert_vit.convert_hf_vit(with_pooler, drop_pooler=True)
    assert type(model) is VitxModel
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = with_pooler(img, output_hidden_states=True)
        out = model(img, output_hidden_states=True)
    assert_close(out.last_hidden_state, ref.last_hidden_state)
    assert_close(out.pooler_output, ref.last_hidden_state[:, 0])
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        assert_close(ours, theirs)
