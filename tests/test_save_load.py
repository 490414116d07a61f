"""Saving and loading: safetensors round trips, Auto classes in process, Hub remote code in a fresh process, bf16."""

import json

import torch
from safetensors.torch import load_file

from helpers import run_isolated, tiny_vit_kwargs
from configuration_vitx import VitxConfig
from modeling_vitx import VitxForImageClassification, VitxModel
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification


def saved_classifier(tmp_path, **overrides):
    config = VitxConfig(**tiny_vit_kwargs(**overrides), id2label={i: f"digit {i}" for i in range(10)})
    model = VitxForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_folder_layout_and_exact_round_trip(tmp_path):
    model, folder = saved_classifier(tmp_path)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_vitx.py", "modeling_vitx.py"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vitx.VitxConfig",
        "AutoModel": "modeling_vitx.VitxModel",
        "AutoModelForImageClassification": "modeling_vitx.VitxForImageClassification",
        "AutoModelForPreTraining": "modeling_vitx.VitxForPreTraining",
    }
    assert config["id2label"]["3"] == "digit 3"
    stored = load_file(folder / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(stored[name], tensor), name
    loaded = VitxForImageClassification.from_pretrained(folder).eval()
    img = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(img).logits, model(img).logits)


def test_auto_classes_in_process(tmp_path):
    model, folder = saved_classifier(tmp_path, pool="mean")
    assert type(AutoConfig.from_pretrained(folder)) is VitxConfig
    classifier = AutoModelForImageClassification.from_pretrained(folder).eval()
    base = AutoModel.from_pretrained(folder).eval()
    assert type(classifier) is VitxForImageClassification and type(base) is VitxModel
    img = torch.randn(1, 3, 32, 32)
    assert torch.equal(classifier(img).logits, model(img).logits)
    assert torch.equal(base(img).last_hidden_state, model.vitx(img).last_hidden_state)
    fresh = AutoModelForImageClassification.from_config(VitxConfig(**tiny_vit_kwargs()))
    assert type(fresh) is VitxForImageClassification


def test_remote_code_in_fresh_process(tmp_path):
    model, folder = saved_classifier(tmp_path, image_size=(32, 48), patch_size=(8, 4))
    img = torch.randn(2, 3, 32, 48)
    torch.save(img, tmp_path / "img.pt")
    expected = model(img).logits
    result = run_isolated(f"""
        import json, torch
        from transformers import AutoModelForImageClassification, AutoModel
        model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(base).__module__ == type(model).__module__
        img = torch.load({str(tmp_path / "img.pt")!r}, weights_only=True)
        with torch.no_grad():
            logits = model(img).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        print(json.dumps({{"module": type(model).__module__, "base": type(base).__name__,
                          "label": model.config.id2label[3]}}))
    """, tmp_path)
    assert result["module"].startswith("transformers_modules.")
    assert result["base"] == "VitxModel" and result["label"] == "digit 3"
    assert torch.equal(torch.load(tmp_path / "logits.pt", weights_only=True), expected)


def test_bfloat16_loading(tmp_path):
    model, folder = saved_classifier(tmp_path)
    loaded = VitxForImageClassification.from_pretrained(folder, torch_dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    img = torch.randn(2, 3, 32, 32)
    logits = loaded(img.bfloat16()).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), model(img).logits, atol=0.1, rtol=0.1)
    interpolated = loaded(torch.randn(1, 3, 48, 48, dtype=torch.bfloat16), interpolate_pos_encoding=True)
    assert interpolated.logits.dtype == torch.bfloat16
