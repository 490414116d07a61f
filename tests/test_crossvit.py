"""CrossVitxConfig / CrossVitxModel / CrossVitxForImageClassification: vit-pytorch README's "Two Stream ViT" through the HF
API: config defaults, names and checks; each stream's outputs and maps; the two heads; rectangular and resized
images. What every classifier shares (losses, saving, remote code, bfloat16, checkpointing, the Trainer,
attention paths): the family-parametrized suite (families.py); parity with vit-pytorch: test_parity_vit_pytorch.py."""

import inspect

import pytest
import torch
from vit_pytorch.cross_vit import CrossViT

from configuration_vitx import CrossVitxConfig
from helpers import tiny_cross_vit_kwargs
from modeling_vitx import CrossVitxForImageClassification, CrossVitxModel, CrossVitxModelOutput
from transformers import AutoConfig
from transformers.modeling_outputs import ImageClassifierOutput

SEED_KWARGS = dict(image_size=256, num_classes=1000, depth=4, sm_dim=192, sm_patch_size=16, sm_enc_depth=2,
                   sm_enc_heads=8, sm_enc_mlp_dim=2048, lg_dim=384, lg_patch_size=64, lg_enc_depth=3, lg_enc_heads=8,
                   lg_enc_mlp_dim=2048, cross_attn_depth=2, cross_attn_heads=8, dropout=0.1, emb_dropout=0.1)


def tiny(**overrides):
    return CrossVitxConfig(**tiny_cross_vit_kwargs(**overrides))


# config


def test_config_defaults_are_vit_pytorchs():
    config = CrossVitxConfig()
    defaults = {name: p.default for name, p in inspect.signature(CrossViT).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert len(defaults) == 17
    for name, default in defaults.items():
        assert getattr(config, name) == default, name
    # vit-pytorch requires these four; the defaults are the CrossViT paper's 240x240 images and vit-pytorch README's widths
    assert (config.image_size, config.num_classes, config.sm_dim, config.lg_dim) == (240, 1000, 192, 384)


def test_config_hf_names_and_label_maps():
    config = CrossVitxConfig(**SEED_KWARGS)
    # num_hidden_layers: the small-patch stream's transformer layers (depth x sm_enc_depth), one map each in attentions
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_channels) == \
        (192, 4 * 2, 8, 3)
    with pytest.raises(AttributeError, match=r"`num_hidden_layers` is `depth` \* `sm_enc_depth` \(4 \* 2\); set those"):
        config.num_hidden_layers = 3
    assert config.num_labels == config.num_classes == 1000
    assert (config.sm_num_patches, config.lg_num_patches) == (256, 16)
    config.hidden_size = 96
    assert config.sm_dim == 96
    by_id = CrossVitxConfig(id2label={0: "cat", 1: "dog"})
    assert by_id.num_classes == 2 and by_id.label2id == {"cat": 0, "dog": 1}


def test_config_json_round_trip(tmp_path):
    config = tiny(image_size=(32, 48), sm_patch_size=(4, 8), lg_patch_size=(8, 16), qkv_bias=True)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is CrossVitxConfig
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.lg_patch_size == [8, 16] and loaded.sm_num_patches == 8 * 6


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=250), "`image_size` 250 must be divisible by `sm_patch_size` 12"),
    (dict(image_size=36, sm_patch_size=4, lg_patch_size=8), "`image_size` 36 must be divisible by `lg_patch_size` 8"),
    (dict(sm_patch_size=16, lg_patch_size=16), "`sm_patch_size` 16 must be smaller than `lg_patch_size` 16"),
    (dict(sm_patch_size=24, lg_patch_size=12), "`sm_patch_size` 24 must be smaller than `lg_patch_size` 12"),
    (dict(image_size=(48, 48), sm_patch_size=(8, 16), lg_patch_size=(16, 8)),
     "`sm_patch_size` (8, 16) must be smaller than `lg_patch_size` (16, 8) in both height and width"),
    (dict(dropout=1.5), "`dropout` must be a float in [0, 1], got 1.5"),
    (dict(emb_dropout=-0.1), "`emb_dropout` must be a float in [0, 1], got -0.1"),
    (dict(sm_dim=0), "`sm_dim` must be a positive int, got 0"),
    (dict(lg_enc_depth=-1), "`lg_enc_depth` must be a positive int, got -1"),
    (dict(cross_attn_heads=2.5), "`cross_attn_heads` must be a positive int, got 2.5"),
    (dict(depth=0), "`depth` must be a positive int, got 0"),
    (dict(num_classes=0), "`num_classes` must be a positive int, got 0"),
    (dict(lg_patch_size="16"), "`lg_patch_size` must be a positive int or a (height, width) pair"),
    (dict(qkv_bias=1), "`qkv_bias` must be a bool, got 1"),
    (dict(layer_norm_eps=-1e-5), "`layer_norm_eps` must be a positive float, got -1e-05"),
])
def test_config_invalid_values_name_parameter(kwargs, message):
    with pytest.raises(ValueError) as error:
        CrossVitxConfig(**kwargs)
    assert message in str(error.value)


# models


def test_seed_example_shapes():
    """vit-pytorch README's CrossViT and Extractor examples: logits (1, 1000), embeddings (1, 257, 192) and (1, 17, 384)."""
    model = CrossVitxForImageClassification(CrossVitxConfig(**SEED_KWARGS)).eval()
    img = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out = model(img, output_attentions=True)
        embeddings = model.vitx(img)
    assert isinstance(out, ImageClassifierOutput) and out.logits.shape == (1, 1000)
    assert embeddings.sm_last_hidden_state.shape == (1, 257, 192)
    assert embeddings.lg_last_hidden_state.shape == (1, 17, 384)
    assert [a.shape for a in out.sm_attentions] == [(1, 8, 257, 257)] * (4 * 2)
    assert [a.shape for a in out.lg_attentions] == [(1, 8, 17, 17)] * (4 * 3)
    assert [a.shape for a in out.sm_cross_attentions] == [(1, 8, 1, 17)] * (4 * 2)
    assert [a.shape for a in out.lg_cross_attentions] == [(1, 8, 1, 257)] * (4 * 2)


def test_model_outputs_follow_the_docstring():
    config = tiny()
    model = CrossVitxModel(config).eval()
    img = torch.randn(2, 3, 32, 32)
    out = model(img, output_hidden_states=True, output_attentions=True)
    assert isinstance(out, CrossVitxModelOutput)
    assert out.sm_last_hidden_state.shape == (2, 65, 16) and out.lg_last_hidden_state.shape == (2, 17, 24)
    torch.testing.assert_close(out.sm_pooler_output, out.sm_last_hidden_state[:, 0])
    torch.testing.assert_close(out.lg_pooler_output, out.lg_last_hidden_state[:, 0])
    # the tokens entering each transformer layer (depth x enc_depth), then the stream's output tokens
    assert [h.shape for h in out.sm_hidden_states] == [(2, 65, 16)] * (2 * 1 + 1) == \
        [(2, 65, 16)] * (config.num_hidden_layers + 1)
    assert [h.shape for h in out.lg_hidden_states] == [(2, 17, 24)] * (2 * 2 + 1)
    torch.testing.assert_close(out.sm_hidden_states[0], model.sm_embeddings(img))
    torch.testing.assert_close(out.lg_hidden_states[0], model.lg_embeddings(img))
    torch.testing.assert_close(out.sm_hidden_states[-1], out.sm_last_hidden_state)
    torch.testing.assert_close(out.lg_hidden_states[-1], out.lg_last_hidden_state)
    # the second block's first layers see the first block's fused output
    first = model.encoder.layers[0](model.sm_embeddings(img), model.lg_embeddings(img))
    torch.testing.assert_close(out.sm_hidden_states[1], first.last_hidden_state)
    torch.testing.assert_close(out.lg_hidden_states[2], first.lg_last_hidden_state)
    # within a block, a layer sees the layer before it
    first_layer = model.encoder.layers[0].lg_encoder.layers[0]
    torch.testing.assert_close(out.lg_hidden_states[1], first_layer(out.lg_hidden_states[0]))
    assert [a.shape for a in out.sm_attentions] == [(2, 2, 65, 65)] * 2
    assert [a.shape for a in out.lg_attentions] == [(2, 3, 17, 17)] * 4
    assert [a.shape for a in out.sm_cross_attentions] == [(2, 2, 1, 17)] * 4
    assert [a.shape for a in out.lg_cross_attentions] == [(2, 2, 1, 65)] * 4
    for attn in out.sm_attentions + out.lg_attentions + out.sm_cross_attentions + out.lg_cross_attentions:
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    plain = model(img)
    assert plain.sm_hidden_states is None and plain.sm_attentions is None and plain.lg_cross_attentions is None


def test_cross_attention_projections_only_when_widths_differ():
    projected = CrossVitxModel(tiny()).encoder.layers[0].cross_layers[0]
    assert projected.sm_attend_lg.project_in.weight.shape == (24, 16)
    assert projected.lg_attend_sm.project_out.weight.shape == (24, 16)
    same = CrossVitxModel(tiny(lg_dim=16)).encoder.layers[0].cross_layers[0]
    assert isinstance(same.sm_attend_lg.project_in, torch.nn.Identity)
    assert isinstance(same.lg_attend_sm.project_out, torch.nn.Identity)


def test_classifier_sums_the_two_heads_and_return_dict_false():
    model = CrossVitxForImageClassification(tiny()).eval()
    img, labels = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    out = model(img, labels=labels, output_attentions=True, output_hidden_states=True)
    base = model.vitx(img)
    expected = model.sm_classifier(base.sm_pooler_output) + model.lg_classifier(base.lg_pooler_output)
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(expected, labels))
    assert out.hidden_states is out.sm_hidden_states and out.attentions is out.sm_attentions  # generic fields
    assert len(out.sm_hidden_states) == 3 and len(out.lg_cross_attentions) == 4
    as_tuple = model(img, labels=labels, output_attentions=True, return_dict=False)
    # loss, logits, attentions (the small-patch stream's), then the large-patch stream's and the cross maps
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 6
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    torch.testing.assert_close(as_tuple[5][0], out.lg_cross_attentions[0])
    base_tuple = model.vitx(img, return_dict=False)
    # last_hidden_state (the small-patch stream's tokens), pooler_output, the large-patch stream's tokens
    assert len(base_tuple) == 3
    torch.testing.assert_close(base_tuple[2], base.lg_last_hidden_state)


def test_rectangular_images_and_interpolated_positions():
    config = tiny(image_size=(32, 48), sm_patch_size=(4, 8), lg_patch_size=(8, 16))
    model = CrossVitxModel(config).eval()
    out = model(torch.randn(1, 3, 32, 48), output_attentions=True)
    assert out.sm_last_hidden_state.shape == (1, 1 + 8 * 6, 16) and out.lg_last_hidden_state.shape == (1, 1 + 4 * 3, 24)
    square = CrossVitxForImageClassification(tiny()).eval()
    img = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(square(img, interpolate_pos_encoding=True).logits, square(img).logits)
    bigger = square(torch.randn(1, 3, 48, 64), interpolate_pos_encoding=True, output_attentions=True)
    assert bigger.logits.shape == (1, 10)
    assert bigger.sm_cross_attentions[0].shape[-1] == 1 + 6 * 8 and bigger.lg_cross_attentions[0].shape[-1] == 1 + 12 * 16
    with pytest.raises(ValueError, match="size 36x36 is not divisible by the patch size 8x8"):
        square(torch.randn(1, 3, 36, 36), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="has size 64x64; the model expects 32x32"):
        square(torch.randn(1, 3, 64, 64))
