"""Saving and loading every model vitx saves (each family and encoder, the MAE pretraining model): the folder
and its ``auto_map``, exact safetensors round trips, the Auto classes in process, Hub remote code in one fresh
process for all of them, bfloat16 loading."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from families import MODELS, TABLE, encoder_kwargs, load, tiny_config, tiny_inputs, tiny_model
from helpers import TESTS, run_isolated

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


def test_every_model_loads_as_remote_code_in_one_fresh_process(tmp_path):
    """Each model's folder, loaded in a fresh process that cannot import the project (so the code comes from the
    folder, as from the Hub) through its Auto class and ``AutoModel`` with ``trust_remote_code=True``, computes
    exactly what the model computed before saving. One process for all: starting one costs ~10 s."""
    cases, expected, encoders = [], {}, {}
    for family in MODELS:
        folder = tmp_path / family.replace("-", "_")  # a folder's name becomes a Python module name
        inputs, model = tiny_inputs(family), saved(family, folder)
        expected[family], encoders[family] = outputs(model, inputs), getattr(model.config, "encoder", None)
        torch.save(inputs, folder / "inputs.pt")
        cases.append({"family": family, "folder": str(folder), "auto": TABLE[family].auto,
                      "module_encoder": TABLE[family].encoder is not None})
    results = run_isolated(f"""
        import json, sys, torch, transformers
        sys.path.insert(0, {str(TESTS)!r})
        import user_encoders  # a user's encoder module is the user's code, importable where they load the model
        results = {{}}
        for case in {cases!r}:
            kwargs = {{"encoder": user_encoders.Mixer()}} if case["module_encoder"] else {{}}
            head = getattr(transformers, case["auto"]).from_pretrained(case["folder"], trust_remote_code=True,
                                                                       **kwargs).eval()
            base = transformers.AutoModel.from_pretrained(case["folder"], trust_remote_code=True, **kwargs).eval()
            inputs = torch.load(case["folder"] + "/inputs.pt", weights_only=True)
            with torch.no_grad():
                torch.save((head(**inputs).to_tuple(), base(inputs["pixel_values"]).to_tuple()),
                           case["folder"] + "/outputs.pt")
            results[case["family"]] = {{"module": type(head).__module__, "base_module": type(base).__module__,
                                       "classes": [type(head).__name__, type(base).__name__],
                                       "label": head.config.id2label[3],
                                       "encoder": getattr(head.config, "encoder", None)}}
        print(json.dumps(results))
    """, tmp_path)
    assert results.keys() == expected.keys()
    for family, result in results.items():
        assert result["module"].startswith("transformers_modules."), family
        assert result["base_module"] == result["module"], family
        assert result["classes"] == [TABLE[family].head.__name__, TABLE[family].base.__name__], family
        assert result["label"] == "digit 3", family
        assert result["encoder"] == encoders[family], family
        head, base = torch.load(tmp_path / family.replace("-", "_") / "outputs.pt", weights_only=True)
        assert_equal(head, expected[family][0])
        assert_equal(base, expected[family][1])


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
