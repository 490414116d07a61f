"""Saving and loading every model vitx saves (each family and encoder, the MAE pretraining model): the folder
and its ``auto_map``, exact safetensors round trips, the Auto classes in process, Hub remote code through each
Auto class in a fresh process of its own, bfloat16 loading."""

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import ViTImageProcessor

from families import MODELS, TABLE, encoder_kwargs, load, tiny_config, tiny_inputs, tiny_model
from helpers import REMOTE_LOAD, TESTS, run_isolated_each

LABELS = {i: f"digit {i}" for i in range(10)}


def saved(family, folder):
    """``family``'s tiny model with label names, saved into ``folder``; returns the model (eval mode)."""
    model = tiny_model(family, id2label=LABELS)
    model.save_pretrained(folder)
    return model


# What ``auto_map`` names, by config class: the config and every model class an Auto class maps it to (a ViT
# folder names the pretraining, classification and segmentation models alike, whichever was saved).
AUTO_MAPS = {
    "VitxConfig": {"AutoConfig": "configuration_vitx.VitxConfig", "AutoModel": "modeling_vitx.VitxModel",
                   "AutoModelForImageClassification": "modeling_vitx.VitxForImageClassification",
                   "AutoModelForPreTraining": "modeling_vitx.VitxForPreTraining",
                   "AutoModelForSemanticSegmentation": "modeling_vitx.VitxForSemanticSegmentation"},
    "CrossVitxConfig": {"AutoConfig": "configuration_vitx.CrossVitxConfig", "AutoModel": "modeling_vitx.CrossVitxModel",
                        "AutoModelForImageClassification": "modeling_vitx.CrossVitxForImageClassification"},
}


def outputs(model, inputs):
    """The head model's outputs on ``inputs`` and its bare model's on their pixels, as two tuples of tensors."""
    with torch.no_grad():
        return model(**inputs).to_tuple(), model.vitx(inputs["pixel_values"]).to_tuple()


def assert_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize("family", MODELS)
def test_folder_layout_and_exact_round_trip(family, tmp_path):
    model = saved(family, tmp_path)
    assert {"config.json", "model.safetensors", "configuration_vitx.py", "modeling_vitx.py"} <= \
        {p.name for p in tmp_path.iterdir()}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == model.config.model_type
    assert config["auto_map"] == AUTO_MAPS[type(model.config).__name__]
    assert config["id2label"]["3"] == "digit 3"
    stored = load_file(tmp_path / "model.safetensors")
    assert stored.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(stored[name], tensor), name
    loaded = load(family, tmp_path).eval()
    assert type(loaded) is type(model)
    inputs = tiny_inputs(family)
    assert_equal(outputs(loaded, inputs)[0], outputs(model, inputs)[0])


@pytest.mark.parametrize("family", MODELS)
def test_auto_classes_in_process(family, tmp_path):
    model = saved(family, tmp_path)
    entry = TABLE[family]
    assert type(transformers.AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    head = getattr(transformers, entry.auto).from_pretrained(tmp_path, **encoder_kwargs(family)).eval()
    base = transformers.AutoModel.from_pretrained(tmp_path, **encoder_kwargs(family)).eval()
    assert type(head) is entry.head and type(base) is entry.base
    inputs = tiny_inputs(family)
    expected_head, expected_base = outputs(model, inputs)
    with torch.no_grad():
        assert_equal(head(**inputs).to_tuple(), expected_head)
        assert_equal(base(inputs["pixel_values"]).to_tuple(), expected_base)
    fresh = getattr(transformers, entry.auto).from_config(tiny_config(family), **encoder_kwargs(family))
    assert type(fresh) is entry.head


# Each saved folder, by config class: the Auto classes it loads through as remote code (AutoConfig among them).
# The checks per family: every one for the ViT (standard and landmark encoders), CrossViT and a folder saved by
# the masked autoencoder (scripts/pretrain.py's); the head's Auto class for the other encoders.
PROCESSOR_FAMILIES = ("vit", "landmark", "crossvit")


def remote_auto_classes(family, config_class):
    every = list(AUTO_MAPS[config_class])
    if family in ("vit", "landmark", "crossvit", "mae"):
        return every + (["AutoImageProcessor"] if family in PROCESSOR_FAMILIES else [])
    return [TABLE[family].auto]


def test_each_auto_class_loads_each_folder_as_remote_code_in_a_fresh_process(tmp_path):
    """Each model's folder, loaded as a Hub user loads it: in a process that cannot import the project (so the code
    comes from the folder) and has loaded nothing before, through one Auto class with ``trust_remote_code=True``.
    Every Auto class of the folder gets a process of its own: a config module run for AutoConfig and again for the
    model must still be the model's config, whatever was loaded first. The base model computes exactly what the
    saved model's did, and the whole model too where it is the class that was saved."""
    cases, expected = [], {}
    for family in MODELS:
        folder = tmp_path / family.replace("-", "_")  # a folder's name becomes a Python module name
        inputs, model = tiny_inputs(family), saved(family, folder)
        if family in PROCESSOR_FAMILIES:
            ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
        torch.save(inputs, folder / "inputs.pt")
        expected[family] = dict(zip(("head", "base"), outputs(model, inputs)))
        for auto in remote_auto_classes(family, type(model.config).__name__):
            cases.append({"family": family, "folder": str(folder), "auto": auto, "tests": str(TESTS),
                          "module_encoder": TABLE[family].encoder is not None, "saved": auto == TABLE[family].auto})
    results = run_isolated_each(REMOTE_LOAD, cases, tmp_path)
    for case, result in zip(cases, results):
        family, auto = case["family"], case["auto"]
        if auto == "AutoImageProcessor":
            assert result["class"].startswith("ViTImageProcessor") and result["size"] == {"height": 32, "width": 32}
            continue
        config_class = type(tiny_config(family)).__name__
        expected_class = AUTO_MAPS[config_class][auto].split(".")[-1]
        assert result["class"] == expected_class, case
        assert result["module"].startswith("transformers_modules."), case
        assert result["config_module"].startswith("transformers_modules."), case
        # a model built around an encoder module records it as encoder "module" in the folder's config
        encoder = "module" if TABLE[family].encoder is not None else getattr(tiny_config(family), "encoder", None)
        assert (result["label"], result["encoder"]) == ("digit 3", encoder), case
        if auto != "AutoConfig":
            computed = torch.load(Path(case["folder"]) / f"{auto}.pt", weights_only=True)
            assert_equal(computed["base"], expected[family]["base"])
            if case["saved"]:
                assert_equal(computed["head"], expected[family]["head"])
    assert len(results) == len(cases) and {case["family"] for case in cases} == set(MODELS)


@pytest.mark.parametrize("family", MODELS)
def test_bfloat16_loading(family, tmp_path):
    """Every weight loads as bfloat16; outputs (and attention maps) are bfloat16 and near float32's, also at
    another image size."""
    model = saved(family, tmp_path)
    loaded = load(family, tmp_path, torch_dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    inputs = tiny_inputs(family)
    as_bfloat16 = {**inputs, "pixel_values": inputs["pixel_values"].bfloat16()}
    with torch.no_grad():
        out = loaded(**as_bfloat16, output_attentions=TABLE[family].maps)
        expected = model(**inputs).logits
    assert out.logits.dtype == torch.bfloat16
    torch.testing.assert_close(out.logits.float(), expected, atol=0.1, rtol=0.1)
    maps = [a for name, value in out.items() if name.endswith("attentions") for a in value]
    assert bool(maps) == TABLE[family].maps and all(a.dtype == torch.bfloat16 for a in maps)
    if TABLE[family].resizes:
        interpolated = loaded(torch.randn(1, 3, 48, 48, dtype=torch.bfloat16), interpolate_pos_encoding=True)
        assert interpolated.logits.dtype == torch.bfloat16
