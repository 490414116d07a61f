"""VitxModel / VitxForImageClassification: the shapes of vit-pytorch's README, the base model's outputs per pooling, rectangular and
resized images, input errors. What every classifier shares (losses, tuples, dropout, initial weights, saving,
the Trainer, attention paths): the family-parametrized suite (families.py)."""

import pytest
import torch

from helpers import tiny_vit_kwargs
from configuration_vitx import VitxConfig
from modeling_vitx import VitxForImageClassification, VitxModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput


def tiny(**overrides):
    return VitxConfig(**tiny_vit_kwargs(**overrides))


def test_seed_examples_shapes():
    """vit-pytorch README's 'Accessing Attention' and 'Accessing Embeddings' model, through the HF API."""
    config = VitxConfig(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048,
                        dropout=0.1, emb_dropout=0.1)
    model = VitxForImageClassification(config).eval()
    img = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out = model(img, output_attentions=True)
        embeddings = model.vitx(img).last_hidden_state
    assert isinstance(out, ImageClassifierOutput)
    assert out.logits.shape == (1, 1000)
    assert torch.stack(out.attentions, dim=1).shape == (1, 6, 16, 65, 65)
    assert embeddings.shape == (1, 65, 1024)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_base_model_outputs(pool):
    config = tiny(pool=pool)
    model = VitxModel(config).eval()
    img = torch.randn(2, 3, 32, 32)
    out = model(img, output_hidden_states=True, output_attentions=True)
    tokens = 64 + (pool == "cls")
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.last_hidden_state.shape == (2, tokens, 32)
    expected_pool = out.last_hidden_state.mean(1) if pool == "mean" else out.last_hidden_state[:, 0]
    torch.testing.assert_close(out.pooler_output, expected_pool)
    assert len(out.hidden_states) == config.depth + 1
    assert all(h.shape == (2, tokens, 32) for h in out.hidden_states)
    assert [a.shape for a in out.attentions] == [(2, 4, tokens, tokens)] * config.depth
    for attn in out.attentions:  # post-softmax rows
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, tokens))
    assert model.embeddings.cls_token is None if pool == "mean" else model.embeddings.cls_token.shape == (1, 1, 32)


def test_rectangular_images_native():
    config = tiny(image_size=(32, 48), patch_size=(8, 4))
    model = VitxForImageClassification(config).eval()
    out = model(torch.randn(2, 3, 32, 48), output_attentions=True)
    assert out.logits.shape == (2, 10)
    assert out.attentions[0].shape == (2, 4, 1 + 4 * 12, 1 + 4 * 12)


def test_interpolate_pos_encoding():
    model = VitxForImageClassification(tiny()).eval()
    img = torch.randn(1, 3, 32, 32)
    same = model(img, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(same, model(img).logits)
    bigger = model(torch.randn(1, 3, 48, 64), interpolate_pos_encoding=True, output_attentions=True)
    assert bigger.logits.shape == (1, 10)
    assert bigger.attentions[0].shape[-1] == 1 + 12 * 16
    with pytest.raises(ValueError, match="size 30x32 is not divisible by the patch size 4x4"):
        model(torch.randn(1, 3, 30, 32), interpolate_pos_encoding=True)


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 64, 64), "has size 64x64; the model expects 32x32 \\(`image_size`\\). Pass `interpolate_pos_encoding=True`"),
    ((1, 1, 32, 32), "has 1 channels; the model expects `channels`=3"),
    ((3, 32, 32), "must be a \\(batch, channels, height, width\\) tensor, got \\(3, 32, 32\\)"),
])
def test_bad_pixel_values(shape, message):
    model = VitxForImageClassification(tiny()).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))
