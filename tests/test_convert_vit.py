"""scripts/convert_vit.py: transformers ViT and timm VisionTransformer folders and checkpoints -> vitx folders
(model, config, image processor, remote code) that load, run in the pipeline and fine-tune; what it refuses.
Numeric parity on the same weights: test_parity_transformers.py and test_parity_timm.py."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.layers import SwiGLU
from timm.models.deit import VisionTransformerDistilled
from transformers import (AutoImageProcessor, DeiTConfig, Trainer, TrainingArguments, ViTConfig,
                          ViTForImageClassification, ViTImageProcessor, ViTModel)

import convert_vit
from helpers import assert_runs_in_pipeline, run_isolated
from modeling_vitx import VitxForImageClassification
from references import hf_vit, randomized, timm_vit

TIMM_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # its pretrained tag sets ImageNet-1k labels, mean/std 0.5


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


# transformers 4 names, which checkpoints on the Hub (google/vit-base-patch16-224) still carry
OLD_NAMES = [(r"\.layers\.", ".encoder.layer."), (r"attention\.([qkv])_proj",
             lambda m: "attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(1)]),
             (r"attention\.o_proj", "attention.output.dense"), (r"mlp\.fc1", "intermediate.dense"),
             (r"mlp\.fc2", "output.dense")]


def saved_hf_classifier(tmp_path, **overrides):
    """A ViTForImageClassification folder with label names, old weight names and its own ViTImageProcessor."""
    reference = hf_vit(id2label={i: f"class {i}" for i in range(10)}, **overrides)
    folder = tmp_path / "hf"
    reference.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    for pattern, name in OLD_NAMES:
        weights = {re.sub(pattern, name, key): value for key, value in weights.items()}
    assert "vit.encoder.layer.1.attention.attention.value.weight" in weights
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    size = reference.config.image_size
    ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.1, 0.2, 0.3],
                      image_std=[0.4, 0.5, 0.6]).save_pretrained(folder)
    return reference, folder


def test_hf_script_writes_model_config_and_processor(tmp_path):
    reference, folder = saved_hf_classifier(tmp_path)
    convert_vit.main(["--source", str(folder), "--output", str(tmp_path / "out")])
    names = {path.name for path in (tmp_path / "out").iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "configuration_vitx.py",
            "modeling_vitx.py"} <= names
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "ViTImageProcessor"
    assert (processor["image_mean"], processor["image_std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert processor["size"] == {"height": 32, "width": 32}
    model = VitxForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert model.config.id2label[7] == "class 7" and model.config.label2id["class 7"] == 7
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(img).logits, reference(img).logits)
    assert_runs_in_pipeline(tmp_path / "out", lambda pixel_values: reference(pixel_values).logits)


def test_converted_folder_loads_as_remote_code(tmp_path):
    reference, folder = saved_hf_classifier(tmp_path, image_size=(32, 48), patch_size=(4, 8))
    convert_vit.main(["--source", str(folder), "--output", str(tmp_path / "out")])
    img = torch.randn(2, 3, 32, 48)
    torch.save(img, tmp_path / "img.pt")
    result = run_isolated(f"""
        import json, torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path / "out")!r}, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained({str(tmp_path / "out")!r})
        with torch.no_grad():
            logits = model.eval()(torch.load({str(tmp_path / "img.pt")!r}, weights_only=True)).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        print(json.dumps({{"module": type(model).__module__, "patch_norm": model.config.patch_norm,
                          "label": model.config.id2label[2], "mean": list(processor.image_mean)}}))
    """, tmp_path)
    assert result["module"].startswith("transformers_modules.")
    assert result == {**result, "patch_norm": False, "label": "class 2", "mean": [0.1, 0.2, 0.3]}
    with torch.no_grad():
        assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), reference(img).logits)


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_timm_script_from_state_dict(tmp_path, suffix):
    import timm

    sizes = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    reference = randomized(timm.create_model(TIMM_NAME, pretrained=False, **sizes))
    checkpoint = tmp_path / f"vit.{suffix}"
    if suffix == "safetensors":
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, checkpoint)
    else:
        torch.save(reference.state_dict(), checkpoint)
    convert_vit.main(["--timm-model", TIMM_NAME, "--checkpoint", str(checkpoint), "--timm-kwargs", json.dumps(sizes),
                      "--output", str(tmp_path / "out")])
    model = VitxForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert model.config.id2label[1] == "goldfish, Carassius auratus" and model.config.num_labels == 1000
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert (processor["image_mean"], processor["image_std"]) == ([0.5] * 3, [0.5] * 3)
    assert processor["size"] == {"height": 32, "width": 32} and processor["resample"] == 3  # bicubic
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(img).logits, reference(img))
    assert_runs_in_pipeline(tmp_path / "out", reference)


@pytest.mark.parametrize("build, feature", [
    (lambda: timm_vit(init_values=1e-5), "layer scale (init_values)"),
    (lambda: timm_vit(reg_tokens=4), "4 register tokens"),
    (lambda: timm_vit(global_pool="avg"), "fc_norm (a LayerNorm after pooling)"),
    (lambda: timm_vit(global_pool="map"), "attention pooling (global_pool='map')"),
    (lambda: timm_vit(class_token=False, global_pool="max", fc_norm=False), "no class token with global_pool='max'"),
    (lambda: timm_vit(qk_norm=True), "qk norm"),
    (lambda: timm_vit(pre_norm=True), "a norm before the blocks (pre_norm)"),
    (lambda: timm_vit(final_norm=False), "no final norm"),
    (lambda: timm_vit(act_layer="gelu_tanh"), "activation GELUTanh()"),
    (lambda: timm_vit(mlp_layer=SwiGLU), "MLP type SwiGLU"),
    (lambda: timm_vit(drop_path_rate=0.1), "stochastic depth (drop_path_rate)"),
    (lambda: timm_vit(attn_drop_rate=0.1), "different attention and projection dropout rates"),
    (lambda: VisionTransformerDistilled(img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2),
     "a distillation token"),
    (lambda: hf_vit(hidden_act="gelu_new"), "activation hidden_act='gelu_new'"),
    (lambda: hf_vit(hidden_dropout_prob=0.1), "hidden_dropout_prob=0.1 differing from attention_probs_dropout_prob"),
])
def test_refuses_features_vitx_cannot_express(build, feature):
    source = build()
    convert = convert_vit.convert_hf_vit if isinstance(source, ViTForImageClassification) \
        else convert_vit.convert_timm_vit
    with pytest.raises(ValueError, match="features vitx cannot express") as error:
        convert(source)
    assert feature in str(error.value)


def test_load_hf_vit_refuses_partial_or_foreign_checkpoints(tmp_path):
    ViTModel(ViTConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="a pooler"):
        convert_vit.load_hf_vit(str(tmp_path / "base"))
    assert convert_vit.load_hf_vit(str(tmp_path / "base"), drop_pooler=True).pooler is None
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    (tmp_path / "base" / "config.json").write_text(json.dumps({**config, "architectures": ["ViTForImageClassification"]}))
    with pytest.raises(ValueError, match="missing \\['classifier.bias', 'classifier.weight'\\]"):
        convert_vit.load_hf_vit(str(tmp_path / "base"), drop_pooler=True)
    DeiTConfig().save_pretrained(tmp_path / "deit")
    with pytest.raises(ValueError, match="has model_type 'deit'; only transformers ViT"):
        convert_vit.load_hf_vit(str(tmp_path / "deit"))
    with pytest.raises(ValueError, match="expected a transformers ViTModel or ViTForImageClassification, got Linear"):
        convert_vit.convert_hf_vit(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="expected a timm VisionTransformer, got Linear"):
        convert_vit.convert_timm_vit(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="pass exactly one of --source"):
        convert_vit.main(["--output", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="--timm-model 'vit_tiny_patch16_224' needs --checkpoint"):
        convert_vit.main(["--timm-model", "vit_tiny_patch16_224", "--output", str(tmp_path / "out")])


def test_hf_folder_without_processor_gets_vit_defaults(tmp_path):
    hf_vit().save_pretrained(tmp_path / "hf")
    with pytest.warns(UserWarning, match="has no preprocessor_config.json"):
        convert_vit.main(["--source", str(tmp_path / "hf"), "--output", str(tmp_path / "out")])
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5] * 3 and processor["size"] == {"height": 32, "width": 32}


def test_fine_tune_converted_model_with_trainer(tmp_path):
    _, folder = saved_hf_classifier(tmp_path)
    convert_vit.main(["--source", str(folder), "--output", str(tmp_path / "out")])
    processor = AutoImageProcessor.from_pretrained(tmp_path / "out")
    model = VitxForImageClassification.from_pretrained(tmp_path / "out", num_labels=2, ignore_mismatched_sizes=True,
                                                       id2label={0: "dark", 1: "bright"})
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 96, (40, 40, 3), dtype=np.uint8) + 160 * (i % 2)) for i in range(16)]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    dataset = [{"pixel_values": pixel_values[i], "labels": i % 2} for i in range(16)]
    encoder_before = model.vitx.encoder.layers[0].attention.to_qkv.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path / "train"), per_device_train_batch_size=8, max_steps=12,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    before = trainer.evaluate(dataset)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(dataset)["eval_loss"]
    assert after < before
    assert not torch.equal(model.vitx.encoder.layers[0].attention.to_qkv.weight, encoder_before)
