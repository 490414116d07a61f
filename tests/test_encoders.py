"""Pluggable encoders: the registry (names, options checked at config construction, defaults completed,
registering a new one) and the built-in x-transformers encoder. The landmark encoder: test_landmark.py; modules
handed in: test_user_encoders.py; what every encoder's model does alike (save/load, remote code, bfloat16, the
Trainer): the family-parametrized suite (families.py)."""

import sys

import pytest
import torch
from torch import nn

import modeling_vitx
from configuration_vitx import VitxConfig
from families import tiny_config, tiny_model
from helpers import tiny_vit_kwargs
from modeling_vitx import VitxEncoder, VitxForImageClassification, VitxModel, register_encoder


def config_for(options, **overrides):
    return VitxConfig(**tiny_vit_kwargs(**overrides), **options)


# the registry

def test_unknown_encoder_lists_known_ones():
    with pytest.raises(ValueError, match=r"`encoder` 'nope' is not registered; known encoders: \['landmark', 'vit', "
                                         r"'x-transformers'"):
        VitxModel(config_for(dict(encoder="nope")))


@pytest.mark.parametrize("options, message", [
    (dict(encoder="landmark", encoder_kwargs={"landmarks": 4}), r"unknown `encoder_kwargs` \['landmarks'\] for the "
                                                                r"'landmark' encoder; allowed: \['num_landmarks'"),
    (dict(encoder="landmark", encoder_kwargs={"residual_conv_kernel": 4}), "`residual_conv_kernel` must be 0 \\(off\\) "
                                                                           "or a positive odd int, got 4"),
    (dict(encoder="landmark", encoder_kwargs={"num_landmarks": 0}), "`num_landmarks` must be a positive int, got 0"),
    (dict(encoder="vit", encoder_kwargs={"num_landmarks": 4}), r"unknown `encoder_kwargs` \['num_landmarks'\] for the "
                                                               r"'vit' encoder; allowed: none"),
])
def test_bad_encoder_options_fail_at_config_construction(options, message):
    with pytest.raises(ValueError, match=message):
        config_for(options)


def test_built_in_encoder_options_are_completed_with_their_defaults(tmp_path):
    config = config_for(dict(encoder="landmark", encoder_kwargs={"num_landmarks": 8}))
    assert config.encoder_kwargs == {"num_landmarks": 8, "pinv_iterations": 6, "residual_conv_kernel": 33}
    config.save_pretrained(tmp_path)
    assert VitxConfig.from_pretrained(tmp_path).encoder_kwargs == config.encoder_kwargs


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoder=""), "`encoder` must be the name of a registered encoder, got ''"),
    (dict(encoder_kwargs={"f": object()}), "`encoder_kwargs` must be a JSON-serializable dict"),
    (dict(encoder_kwargs=[1, 2]), "`encoder_kwargs` must be a JSON-serializable dict, got \\[1, 2\\]"),
])
def test_bad_encoder_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VitxConfig(**kwargs)


def test_register_a_new_encoder_round_trips(tmp_path):
    register_encoder("shallow", lambda config: VitxEncoder(config, dim=config.dim, depth=1, heads=2, dim_head=8,
                                                           mlp_dim=config.mlp_dim))
    try:
        model = VitxForImageClassification(config_for(dict(encoder="shallow"))).eval()
        assert len(model.vitx.encoder.layers) == 1
        assert isinstance(model.head_norm, nn.Identity)  # the encoder declares its final norm
        model.save_pretrained(tmp_path)
        loaded = VitxForImageClassification.from_pretrained(tmp_path).eval()
        img = torch.randn(2, 3, 32, 32)
        assert torch.equal(loaded(img).logits, model(img).logits)
    finally:
        del modeling_vitx._ENCODERS["shallow"]
    with pytest.raises(ValueError, match="encoder names must be non-empty strings other than 'module'"):
        register_encoder("module", lambda config: None)


def test_standard_encoder_layout_unchanged():
    model = VitxForImageClassification(config_for({}))
    assert isinstance(model.head_norm, nn.Identity)
    assert not any(k.startswith("head_norm") for k in model.state_dict())


# x-transformers

def test_x_transformers_encoder_from_config():
    model = tiny_model("x-transformers")
    transformer = model.vitx.encoder.transformer
    assert type(transformer).__name__ == "Encoder" and len(transformer.layers) == 2 * 2
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(img, output_attentions=True, output_hidden_states=True)
        tokens = model.vitx.embeddings(img)
        direct = transformer(tokens)
    pooled = model.vitx(img).pooler_output
    torch.testing.assert_close(pooled, direct[:, 0])
    torch.testing.assert_close(out.logits, model.classifier(model.head_norm(direct[:, 0])))
    assert [a.shape for a in out.attentions] == [(2, 4, 65, 65)] * 2
    for attn in out.attentions:
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 65))
    assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[0], tokens)


def test_x_transformers_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "x_transformers", None)
    with pytest.raises(ImportError, match="pip install 'vitx\\[x-transformers\\]'"):
        VitxModel(tiny_config("x-transformers"))
