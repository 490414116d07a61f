"""VitxConfig: vit-pytorch's names and defaults, HF's names, label maps, validation, JSON round trip."""

import pytest

from configuration_vitx import VitxConfig
from transformers import AutoConfig


def test_seed_defaults_and_hf_names():
    config = VitxConfig(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048)
    assert (config.channels, config.dropout, config.emb_dropout, config.pool, config.dim_head) == (3, 0.0, 0.0, "cls", 64)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.num_channels) == (1024, 6, 16, 2048, 3)
    assert config.num_labels == config.num_classes == 1000
    assert config.num_patches == 64
    config.hidden_size = 512
    assert config.dim == 512


def test_num_classes_and_label_maps():
    assert VitxConfig(num_classes=7).id2label == {i: f"LABEL_{i}" for i in range(7)}
    by_id = VitxConfig(id2label={0: "cat", 1: "dog", 2: "owl"})
    assert by_id.num_classes == 3 and by_id.label2id == {"cat": 0, "dog": 1, "owl": 2}
    by_name = VitxConfig(label2id={"cat": 0, "dog": 1})
    assert by_name.num_labels == 2 and by_name.id2label == {0: "cat", 1: "dog"}


def test_rectangular_sizes_round_trip(tmp_path):
    config = VitxConfig(image_size=(64, 96), patch_size=(16, 8), num_classes=3, dim=32, depth=1, heads=2, mlp_dim=64)
    assert config.num_patches == 4 * 12
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is VitxConfig
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.image_size == [64, 96] and loaded.id2label == config.id2label


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=250, patch_size=32), "`image_size` 250 must be divisible by `patch_size` 32"),
    (dict(image_size=64, patch_size=16), "gives 16 patches; the number of patches must be greater than 16"),
    (dict(pool="max"), "`pool` must be 'cls' or 'mean', got 'max'"),
    (dict(dropout=1.5), "`dropout` must be a float in [0, 1], got 1.5"),
    (dict(emb_dropout=-0.1), "`emb_dropout` must be a float in [0, 1], got -0.1"),
    (dict(dim=0), "`dim` must be a positive int, got 0"),
    (dict(depth=-2), "`depth` must be a positive int, got -2"),
    (dict(heads=2.5), "`heads` must be a positive int, got 2.5"),
    (dict(mlp_dim="big"), "`mlp_dim` must be a positive int, got 'big'"),
    (dict(num_classes=0), "`num_classes` must be a positive int, got 0"),
    (dict(image_size="224"), "`image_size` must be a positive int or a (height, width) pair"),
    (dict(patch_size=(16, 16, 16)), "`patch_size` must be a positive int or a (height, width) pair"),
    (dict(channels=True), "`channels` must be a positive int, got True"),
    (dict(qkv_bias="yes"), "`qkv_bias` must be a bool, got 'yes'"),
    (dict(patch_norm="no"), "`patch_norm` must be a bool, got 'no'"),
    (dict(layer_norm_eps=0), "`layer_norm_eps` must be a positive float, got 0"),
])
def test_invalid_values_name_parameter_value_and_rule(kwargs, message):
    with pytest.raises(ValueError) as error:
        VitxConfig(**kwargs)
    assert message in str(error.value)
