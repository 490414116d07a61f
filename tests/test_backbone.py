"""VitxBackbone keeps transformers' backbone contract: stages, out_features / out_indices, feature maps (as maps,
as CLS-first tokens, normed or not, as ViTDet's feature pyramid), every encoder, any image size the patch divides,
classifier and masked autoencoder folders loading into it, AutoBackbone in process and as remote code, and
errors that name the parameter, the value and what is allowed."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoBackbone, AutoConfig

from configuration_vitx import CrossVitxConfig
from families import encoder_kwargs, tiny_config, tiny_model
from helpers import run_isolated
from modeling_vitx import VitxBackbone, VitxForImageClassification, VitxModel, _tokens_to_map

ALL_STAGES = ["stem", "stage1", "stage2"]  # the tiny models have two blocks


def backbone(family="vit", **overrides):
    """``family``'s tiny ViT as a backbone, in eval mode."""
    config = tiny_config(family, **overrides)
    return VitxBackbone(config, **encoder_kwargs(family, config)).eval()


def test_tokens_to_map_drops_the_prefix_and_lays_patches_out_row_major():
    tokens = torch.randn(2, 1 + 3 * 4, 5)
    feature_map = _tokens_to_map(tokens, 1, 3, 4)
    assert feature_map.shape == (2, 5, 3, 4)
    for row in range(3):
        for column in range(4):
            assert torch.equal(feature_map[:, :, row, column], tokens[:, 1 + row * 4 + column])
    assert torch.equal(_tokens_to_map(tokens[:, 1:], 0, 3, 4), feature_map)


def test_stages_default_to_the_last_and_channels_follow_out_features():
    model = backbone()
    assert model.stage_names == ALL_STAGES == model.config.stage_names
    assert (model.out_features, model.out_indices, model.channels) == (["stage2"], [2], [32])
    chosen = backbone(out_indices=[0, 2])
    assert (chosen.out_features, chosen.channels) == (["stem", "stage2"], [32, 32])
    assert backbone(out_features=["stage1"]).out_indices == [1]


@pytest.mark.parametrize("family", ["vit", "landmark", "x-transformers"])
def test_feature_maps_are_the_encoders_states(family):
    """Each stage's map is the encoder's state after that many blocks (the embeddings for "stem"), laid out as a
    (batch, dim, rows, columns) map; normed as the classifier norms the last one with ``apply_layernorm``."""
    raw = backbone(family, out_features=ALL_STAGES, apply_layernorm=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        states = VitxModel.forward(raw.vitx, x, output_hidden_states=True).hidden_states
        maps = raw(x).feature_maps
    assert len(maps) == 3
    for feature_map, state in zip(maps, states):
        assert feature_map.shape == (2, 32, 8, 8)
        assert torch.equal(feature_map, _tokens_to_map(state, 1, 8, 8))
    classifier = VitxForImageClassification(tiny_config(family)).eval()
    normed = backbone(family)
    normed.load_state_dict(classifier.state_dict(), strict=False)
    with torch.no_grad():
        tokens = classifier.head_norm(classifier.vitx(x).last_hidden_state)
        torch.testing.assert_close(normed(x).feature_maps[-1], _tokens_to_map(tokens, 1, 8, 8), rtol=0, atol=1e-6)


def test_token_maps_keep_the_cls_token_first():
    """``reshape_hidden_states=False``: what DPT and Depth Anything read, (batch, 1 + patches, dim)."""
    model = backbone(out_features=["stage1", "stage2"], reshape_hidden_states=False, apply_layernorm=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        states = model.vitx(x, output_hidden_states=True).hidden_states
        maps = model(x).feature_maps
    assert [m.shape for m in maps] == [(2, 65, 32)] * 2
    assert torch.equal(maps[0], states[1]) and torch.equal(maps[1], states[2])


def test_rectangular_and_other_image_sizes_interpolate_positions():
    model = backbone(out_features=["stage2"], apply_layernorm=False)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        feature_map = model(x).feature_maps[0]
        tokens = model.vitx(x, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states[-1]
    assert feature_map.shape == (1, 32, 10, 14)
    assert torch.equal(feature_map, _tokens_to_map(tokens, 1, 10, 14))
    rectangular = backbone(image_size=[32, 48])
    assert rectangular(torch.randn(1, 3, 32, 48)).feature_maps[0].shape == (1, 32, 8, 12)


def test_mean_pooled_vit_has_no_prefix_token():
    model = backbone(pool="mean", reshape_hidden_states=False)
    assert model(torch.randn(1, 3, 32, 32)).feature_maps[0].shape == (1, 64, 32)


def test_hidden_states_and_attentions_come_with_the_flags():
    model = backbone()
    x = torch.randn(1, 3, 32, 32)
    plain = model(x)
    assert plain.hidden_states is None and plain.attentions is None
    full = model(x, output_hidden_states=True, output_attentions=True)
    assert len(full.hidden_states) == 3 and len(full.attentions) == 2
    assert full.attentions[0].shape == (1, 4, 65, 65)
    torch.testing.assert_close(full.feature_maps[0], plain.feature_maps[0])  # the explicit softmax path, to rounding
    as_tuple = model(x, return_dict=False)
    assert torch.equal(as_tuple[0][0], plain.feature_maps[0])


def test_feature_pyramid_gives_four_scales_from_one_map():
    """ViTDet's simple feature pyramid: 4x, 2x, 1x and 1/2x the stage's map, each ``feature_pyramid_channels``
    wide; the coarsest level is the 2x2 max-pool of the stage's map, and every level trains."""
    model = backbone(image_size=64, patch_size=8, feature_pyramid=True, feature_pyramid_channels=24).train()
    assert model.channels == [24, 24, 24, 24]
    seen = []
    model.feature_pyramid.rescale[3].register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    maps = model(torch.randn(2, 3, 64, 64)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, 24, 32, 32), (2, 24, 16, 16), (2, 24, 8, 8), (2, 24, 4, 4)]
    stage_map, pooled = seen[0]
    assert stage_map.shape == (2, 32, 8, 8) and torch.equal(pooled, F.max_pool2d(stage_map, 2))
    sum(m.square().mean() for m in maps).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.feature_pyramid.parameters())


def test_user_module_encoder_gives_its_last_stage_only():
    model = backbone("module")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        tokens = model.head_norm(model.vitx(x).last_hidden_state)
        assert torch.equal(model(x).feature_maps[0], _tokens_to_map(tokens, 1, 8, 8))
    with pytest.raises(ValueError, match=r"returns no per-layer states.*`out_features` must be \['stage2'\], "
                                         r"got \['stage1', 'stage2'\]"):
        backbone("module", out_features=["stage1", "stage2"])
    with pytest.raises(ValueError, match="`output_hidden_states=True` cannot be served"):
        model(x, output_hidden_states=True)


@pytest.mark.parametrize("family", ["vit", "landmark", "mae"])
def test_classifier_and_mae_folders_load_with_identical_encoder_weights(family, tmp_path):
    """``VitxBackbone.from_pretrained`` of a classifier's or masked autoencoder's folder: every weight of the ViT
    (and the classifier's head norm) as saved; the classifier and decoder left out. The config's stages come
    with it; ``out_features`` / ``out_indices`` choose others at load time."""
    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    loaded = VitxBackbone.from_pretrained(tmp_path)
    saved = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert set(loaded.state_dict()) == {k for k in saved if not k.startswith(("classifier.", "decoder."))}
    assert loaded.out_features == ["stage2"]
    assert VitxBackbone.from_pretrained(tmp_path, out_indices=[0, 1]).out_features == ["stem", "stage1"]
    assert VitxBackbone.from_pretrained(tmp_path, out_features=ALL_STAGES).channels == [32, 32, 32]


def test_backbone_folder_loads_through_auto_backbone_and_as_remote_code(tmp_path):
    """A saved backbone's ``auto_map`` names AutoBackbone. It builds through AutoBackbone in process and loads
    (``from_pretrained``), and in a fresh process that cannot import the project, from the folder's own code,
    computing the same maps. (transformers 5's ``AutoBackbone.from_pretrained`` asks the Hub whether its argument
    is a repository and takes anything else for a timm model name, local folders included: the class the
    folder's ``auto_map`` names loads it instead, on every version.)"""
    model = backbone(out_features=["stage1", "stage2"])
    model.save_pretrained(tmp_path / "backbone")
    config = json.loads((tmp_path / "backbone" / "config.json").read_text())
    assert config["auto_map"]["AutoBackbone"] == "modeling_vitx.VitxBackbone"
    assert (config["out_features"], config["out_indices"]) == (["stage1", "stage2"], [1, 2])
    x = torch.randn(1, 3, 32, 32)
    assert type(AutoBackbone.from_config(AutoConfig.from_pretrained(tmp_path / "backbone"))) is VitxBackbone
    with torch.no_grad():
        expected = model(x).feature_maps
        in_process = VitxBackbone.from_pretrained(tmp_path / "backbone").eval()(x).feature_maps
    assert all(torch.equal(a, b) for a, b in zip(in_process, expected))
    torch.save(x, tmp_path / "x.pt")
    result = run_isolated(f"""
        import json, torch
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        folder = {str(tmp_path / "backbone")!r}
        backbone_class = get_class_from_dynamic_module(json.load(open(folder + "/config.json"))["auto_map"]["AutoBackbone"],
                                                       folder)
        model = backbone_class.from_pretrained(folder).eval()
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / "x.pt")!r})).feature_maps, {str(tmp_path / "maps.pt")!r})
        print(json.dumps({{"module": type(model).__module__, "out_features": model.out_features}}))
    """, tmp_path)
    assert result["module"].startswith("transformers_modules.") and result["out_features"] == ["stage1", "stage2"]
    assert all(torch.equal(a, b) for a, b in zip(torch.load(tmp_path / "maps.pt"), expected))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"out_features must be a subset of stage_names: "
                                         r"\['stem', 'stage1', 'stage2'\] got \['stage3'\]"):
        tiny_config("vit", out_features=["stage3"])
    with pytest.raises(ValueError, match=r"out_indices must be valid indices for stage_names "
                                         r"\['stem', 'stage1', 'stage2'\], got \[5\]"):
        tiny_config("vit", out_indices=[5])
    with pytest.raises(ValueError, match=r"`pixel_values` of size 30x32 is not divisible by the patch size 4x4"):
        backbone()(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"`out_features` must name one stage, got \['stage1', 'stage2'\]"):
        tiny_config("vit", feature_pyramid=True, out_features=["stage1", "stage2"])
    with pytest.raises(ValueError, match=r"needs `reshape_hidden_states=True`"):
        tiny_config("vit", feature_pyramid=True, reshape_hidden_states=False)
    with pytest.raises(ValueError, match="`feature_pyramid_channels` must be a positive int, got 0"):
        tiny_config("vit", feature_pyramid_channels=0)
    with pytest.raises(ValueError, match="VitxBackbone takes a VitxConfig.*got CrossVitxConfig"):
        VitxBackbone(CrossVitxConfig(image_size=32, sm_patch_size=4, lg_patch_size=8))
    model = backbone(feature_pyramid=True)
    model.out_features = ["stage1", "stage2"]  # chosen after construction: the forward checks again
    with pytest.raises(ValueError, match=r"`out_features` must name one stage, got \['stage1', 'stage2'\]"):
        model(torch.randn(1, 3, 32, 32))

