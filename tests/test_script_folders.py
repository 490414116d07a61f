"""The folders scripts/train.py and scripts/pretrain.py write (here, those of the shared torchrun launch) load as a
Hub user loads them: through each Auto class the folder names, and AutoConfig and AutoImageProcessor, each in a
process of its own that cannot import the project and has loaded nothing before (the scripts' own tests load them
in this process, where vitx is imported)."""

import json
import shutil

import torch

import modeling_vitx
from helpers import REMOTE_LOAD, TESTS, run_isolated_each


def inputs_for(config):
    """A batch the folder's saved model takes: pixels, and for a masked autoencoder its masking noise."""
    size = config["image_size"] if isinstance(config["image_size"], list) else [config["image_size"]] * 2
    inputs = {"pixel_values": torch.randn(2, config["channels"], *size)}
    if config["architectures"] == ["VitxForPreTraining"]:
        inputs["noise"] = torch.rand(2, (size[0] // config["patch_size"]) * (size[1] // config["patch_size"]))
    return inputs


def test_script_folders_load_as_remote_code_in_fresh_processes(torchrun_launch, tmp_path):
    out, _, _ = torchrun_launch
    cases, expected, configs = [], {}, {}
    for name in ("train", "pretrain"):
        folder = tmp_path / name  # a copy: the launch's folders stay as the scripts left them
        shutil.copytree(out / name, folder)
        config = configs[name] = json.loads((folder / "config.json").read_text())
        inputs = inputs_for(config)
        torch.save(inputs, folder / "inputs.pt")
        model = getattr(modeling_vitx, config["architectures"][0]).from_pretrained(folder).eval()
        with torch.no_grad():
            expected[name] = {"head": model(**inputs).to_tuple(),
                              "base": model.base_model(inputs["pixel_values"]).to_tuple()}
        for auto, target in {**config["auto_map"], "AutoImageProcessor": None}.items():
            cases.append({"name": name, "folder": str(folder), "auto": auto, "tests": str(TESTS),
                          "module_encoder": False, "class": target,
                          "saved": target == f"modeling_vitx.{config['architectures'][0]}"})
    assert {case["auto"] for case in cases} >= {"AutoConfig", "AutoModel", "AutoModelForImageClassification",
                                                 "AutoModelForPreTraining", "AutoImageProcessor"}
    for case, result in zip(cases, run_isolated_each(REMOTE_LOAD, cases, tmp_path)):
        if case["auto"] == "AutoImageProcessor":
            assert result["class"].startswith("ViTImageProcessor"), case
            continue
        assert result["class"] == case["class"].split(".")[-1], case
        assert result["module"].startswith("transformers_modules."), case
        assert result["config_module"].startswith("transformers_modules."), case
        assert result["label"] == configs[case["name"]]["id2label"]["3"], case
        if case["auto"] != "AutoConfig":
            computed = torch.load(f"{case['folder']}/{case['auto']}.pt", weights_only=True)
            parts = ("base", "head") if case["saved"] else ("base",)
            for part in parts:
                assert len(computed[part]) == len(expected[case["name"]][part])
                for a, e in zip(computed[part], expected[case["name"]][part]):
                    assert torch.equal(a, e), (case, part)
