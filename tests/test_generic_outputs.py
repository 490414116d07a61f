"""The generic output fields and config names tools read (pipelines, attribution code, transformers' test
conventions) on every family; CrossViT's generic fields name its small-patch stream, both streams stay reachable."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor, pipeline

from families import FAMILIES, tiny_model, tiny_pixels


def assert_same_tensors(actual, expected):
    assert actual is not None and len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_generic_fields_follow_the_config(family):
    """``last_hidden_state`` is (batch, tokens, ``config.hidden_size``), ``pooler_output`` one vector per image,
    ``hidden_states`` and ``attentions`` one entry per block (maps with ``config.num_attention_heads`` heads);
    the classifier's ``hidden_states`` / ``attentions`` are its base model's."""
    classifier, pixels = tiny_model(family), tiny_pixels(family)
    config = classifier.config
    base = classifier.vitx(pixels, output_hidden_states=True, output_attentions=True)
    assert base.last_hidden_state.shape[::2] == (2, config.hidden_size)
    assert base.pooler_output.dim() == 2 and base.pooler_output.shape[0] == 2
    assert len(base.hidden_states) > len(base.attentions) > 0
    assert all(h.shape == base.hidden_states[0].shape for h in base.hidden_states)
    assert all(a.shape[:2] == (2, config.num_attention_heads) for a in base.attentions)
    out = classifier(pixels, output_hidden_states=True, output_attentions=True)
    assert_same_tensors(out.hidden_states, base.hidden_states)
    assert_same_tensors(out.attentions, base.attentions)


def test_crossvit_generic_fields_are_the_small_patch_stream():
    """CrossViT: ``last_hidden_state`` / ``hidden_states`` / ``attentions`` are the small-patch stream's (whose
    width ``hidden_size`` names), ``pooler_output`` both CLS tokens side by side; every per-stream field stays."""
    classifier, pixels = tiny_model("crossvit"), tiny_pixels("crossvit")
    config = classifier.config
    assert (config.hidden_size, config.num_attention_heads) == (config.sm_dim, config.sm_enc_heads)
    out = classifier.vitx(pixels, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(out.last_hidden_state, out.sm_last_hidden_state, rtol=0, atol=0)
    assert out.pooler_output.shape == (2, config.sm_dim + config.lg_dim)
    torch.testing.assert_close(out.pooler_output, torch.cat((out.sm_pooler_output, out.lg_pooler_output), dim=-1),
                               rtol=0, atol=0)
    assert_same_tensors(out.hidden_states, out.sm_hidden_states)
    assert_same_tensors(out.attentions, out.sm_attentions)
    for name in ("lg_last_hidden_state", "lg_pooler_output", "lg_hidden_states", "lg_attentions",
                 "sm_cross_attentions", "lg_cross_attentions"):
        assert out[name] is not None, name
    head_out = classifier(pixels, output_hidden_states=True, output_attentions=True)
    for name in ("sm_hidden_states", "lg_hidden_states", "sm_attentions", "lg_attentions", "sm_cross_attentions",
                 "lg_cross_attentions"):
        assert_same_tensors(head_out[name], out[name])
    assert_same_tensors(head_out.hidden_states, out.sm_hidden_states)
    assert_same_tensors(head_out.attentions, out.sm_attentions)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_feature_extraction_pipeline_pools(family, tmp_path):
    """``pipeline("image-feature-extraction", pool=True)`` on a saved folder (model + image processor) returns the
    base model's ``pooler_output`` for the processed image."""
    model = tiny_model(family, head=False)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    features = pipeline("image-feature-extraction", model=str(tmp_path), pool=True)(image)
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).pooler_output
    torch.testing.assert_close(torch.tensor(features).reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)
