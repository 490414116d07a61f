"""The generic output fields and config names tools read (pipelines, attribution code, transformers' common model
tests) on every family that returns maps and states: what transformers' ``test_attention_outputs`` and
``test_hidden_states_output`` check (counts from ``config.num_hidden_layers``, shapes from ``num_attention_heads``
and ``hidden_size``, each flag adding its fields to the tuple once, the config's flags working as the call's), with
values: the tuple's entries are the fields, ``return_dict=False`` computes what ``return_dict=True`` does, each
state is what the next layer sees. CrossViT's generic fields are its small-patch stream; both streams stay whole."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor, pipeline

from families import FAMILIES, TABLE, families, tiny_inputs, tiny_model, tiny_pixels
from modeling_vitx import VitxLayer

WITH_MAPS = families(maps=True)  # every family but the user's module, which returns tokens only

# The fields each flag adds where it is not one: transformers' tests call CrossViT's two hidden-state fields
# ``num_hidden_states_types = 2`` (as an encoder-decoder's); its attention flag fills both streams' and the cross maps.
FLAG_FIELDS = {"crossvit": {"output_hidden_states": ("hidden_states", "lg_hidden_states"),
                            "output_attentions": ("attentions", "lg_attentions", "sm_cross_attentions",
                                                  "lg_cross_attentions")}}


def flag_fields(family, flag):
    return FLAG_FIELDS.get(family, {}).get(flag, (flag.removeprefix("output_"),))


def tokens(family, config):
    """The token count of the generic fields: the small-patch stream's (CrossViT), the visible patches (MAE)."""
    if family == "crossvit":
        return 1 + config.sm_num_patches
    patches = config.num_patches
    if TABLE[family].auto == "AutoModelForPreTraining":
        patches = int(patches * (1 - config.masking_ratio))
    return int(config.pool == "cls") + patches


def assert_same(actual, expected):
    """Equal element-wise: tensors, or (nested) tuples of them."""
    if torch.is_tensor(expected):
        assert torch.is_tensor(actual) and torch.equal(actual, expected)
        return
    assert isinstance(actual, tuple) and len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert_same(a, e)


def run(model, inputs, **flags):
    with torch.no_grad():
        torch.manual_seed(0)  # MAE without noise, dropout: the same draw in every call
        return model(**inputs, **flags)


@pytest.mark.parametrize("family", WITH_MAPS)
def test_counts_and_shapes_follow_the_config(family):
    """transformers' common checks: ``config.num_hidden_layers`` maps of (``num_attention_heads``, tokens, tokens),
    one state more of (tokens, ``hidden_size``), asked for by the call or by the config."""
    model, inputs = tiny_model(family), tiny_inputs(family)
    config, n = model.config, tokens(family, model.config)
    for flags in ({"output_attentions": True, "output_hidden_states": True}, {}):
        if not flags:  # the config's flags (transformers 5 takes output_attentions there with eager attention only)
            model.set_attn_implementation("eager")
            config.output_attentions = config.output_hidden_states = True
        out = run(model, inputs, **flags)
        assert len(out.attentions) == config.num_hidden_layers > 0
        assert [tuple(a.shape) for a in out.attentions] == [(2, config.num_attention_heads, n, n)] * len(out.attentions)
        assert len(out.hidden_states) == config.num_hidden_layers + 1
        assert [tuple(h.shape) for h in out.hidden_states] == [(2, n, config.hidden_size)] * len(out.hidden_states)


@pytest.mark.parametrize("family", WITH_MAPS)
def test_each_flag_adds_its_fields_once_and_the_tuple_is_the_fields(family):
    """Each flag adds its fields to ``to_tuple()``, each once (one for a one-stream model); every entry of the tuple
    is a field, in order; ``return_dict=False`` returns the same values; no tensor is two entries."""
    model, inputs = tiny_model(family), tiny_inputs(family)
    plain = run(model, inputs)
    for flag in ("output_attentions", "output_hidden_states"):
        out = run(model, inputs, **{flag: True})
        added = [name for name in out.keys() if name not in plain.keys()]
        assert added == list(flag_fields(family, flag)), flag
        assert len(out.to_tuple()) == len(plain.to_tuple()) + len(added)
    both = run(model, inputs, output_attentions=True, output_hidden_states=True)
    assert len(both.to_tuple()) == len(plain.to_tuple()) + sum(
        len(flag_fields(family, flag)) for flag in ("output_attentions", "output_hidden_states"))
    entries = both.to_tuple()
    assert_same(entries, tuple(both.values()))
    assert_same(run(model, inputs, output_attentions=True, output_hidden_states=True, return_dict=False), entries)
    assert_same(run(model.vitx, {"pixel_values": inputs["pixel_values"]}, output_attentions=True,
                    output_hidden_states=True, return_dict=False), run(model.vitx, {"pixel_values":
                    inputs["pixel_values"]}, output_attentions=True, output_hidden_states=True).to_tuple())
    # no field repeats another (CrossViT's generic fields once were copies of its small-patch stream's fields)
    firsts = [entry[0] if isinstance(entry, tuple) else entry for entry in entries]
    assert len({id(t) for t in firsts}) == len(firsts)


@pytest.mark.parametrize("family", FAMILIES)
def test_states_are_what_each_layer_sees_and_the_head_passes_them_on(family):
    """``hidden_states[i]`` is the input of the generic stream's i-th transformer layer (a pre-hook records it) and
    ``attentions[i]`` that layer's map; the classifier's ``hidden_states`` / ``attentions`` are its base model's."""
    classifier, pixels = tiny_model(family), tiny_pixels(family)
    layers = [module for name, module in classifier.named_modules()
              if isinstance(module, VitxLayer) and ".lg_encoder." not in name]
    seen = []
    handles = [layer.register_forward_pre_hook(lambda module, args: seen.append(args[0])) for layer in layers]
    with torch.no_grad():
        base = classifier.vitx(pixels, output_hidden_states=True, output_attentions=True)
    for handle in handles:
        handle.remove()
    assert len(seen) == len(base.hidden_states) - 1 == classifier.config.num_hidden_layers
    assert_same(base.hidden_states[:-1], tuple(seen))
    out = run(classifier, {"pixel_values": pixels}, output_hidden_states=True, output_attentions=True)
    assert_same(out.hidden_states, base.hidden_states)
    assert_same(out.attentions, base.attentions)


def test_crossvit_generic_fields_are_the_small_patch_stream():
    """CrossViT: ``last_hidden_state`` / ``hidden_states`` / ``attentions`` are the small-patch stream's (whose
    width ``hidden_size`` names; its output tokens end ``hidden_states``), ``pooler_output`` both CLS tokens side
    by side; the ``sm_*`` names read the generic fields; the large-patch stream's and the cross maps stay, and the
    classifier passes every one of them on."""
    classifier, pixels = tiny_model("crossvit"), tiny_pixels("crossvit")
    config = classifier.config
    assert (config.hidden_size, config.num_attention_heads) == (config.sm_dim, config.sm_enc_heads)
    assert config.num_hidden_layers == config.depth * config.sm_enc_depth
    out = run(classifier.vitx, {"pixel_values": pixels}, output_hidden_states=True, output_attentions=True)
    assert_same(out.hidden_states[-1], out.last_hidden_state)
    assert_same(out.lg_hidden_states[-1], out.lg_last_hidden_state)
    assert out.pooler_output.shape == (2, config.sm_dim + config.lg_dim)
    assert_same(out.pooler_output, torch.cat((out.last_hidden_state[:, 0], out.lg_last_hidden_state[:, 0]), dim=-1))
    for old, generic in (("sm_last_hidden_state", "last_hidden_state"), ("sm_hidden_states", "hidden_states"),
                         ("sm_attentions", "attentions")):
        assert getattr(out, old) is getattr(out, generic), old
    assert_same(out.sm_pooler_output, out.last_hidden_state[:, 0])
    assert_same(out.lg_pooler_output, out.lg_last_hidden_state[:, 0])
    assert len(out.lg_hidden_states) == config.depth * config.lg_enc_depth + 1
    assert len(out.lg_attentions) == config.depth * config.lg_enc_depth
    assert len(out.sm_cross_attentions) == len(out.lg_cross_attentions) == config.depth * config.cross_attn_depth
    head_out = run(classifier, {"pixel_values": pixels}, output_hidden_states=True, output_attentions=True)
    for name in ("hidden_states", "attentions", "lg_hidden_states", "lg_attentions", "sm_cross_attentions",
                 "lg_cross_attentions"):
        assert_same(head_out[name], out[name])
    expected = classifier.sm_classifier(out.sm_pooler_output) + classifier.lg_classifier(out.lg_pooler_output)
    torch.testing.assert_close(head_out.logits, expected, rtol=0, atol=0)


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
