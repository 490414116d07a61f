"""CrossVitxConfig / CrossVitxModel / CrossVitxForImageClassification: the seed's "Two Stream ViT" through the HF API."""

import inspect
import json

import pytest
import torch
from safetensors.torch import load_file
from vit_pytorch.cross_vit import CrossViT

from helpers import assert_checkpointing_keeps_gradients, run_isolated, tiny_cross_vit_kwargs
from configuration_vitx import CrossVitxConfig
from modeling_vitx import CrossVitxForImageClassification, CrossVitxModel, CrossVitxModelOutput
from transformers import (AutoConfig, AutoModel, AutoModelForImageClassification, Trainer, TrainingArguments)
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
    # vit-pytorch requires these four; the defaults are the CrossViT paper's 240x240 images and the seed's widths
    assert (config.image_size, config.num_classes, config.sm_dim, config.lg_dim) == (240, 1000, 192, 384)


def test_config_hf_names_and_label_maps():
    config = CrossVitxConfig(**SEED_KWARGS)
    assert (config.hidden_size, config.num_hidden_layers, config.num_channels) == (192, 4, 3)
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
    """The seed's CrossViT and Extractor examples: logits (1, 1000), embeddings (1, 257, 192) and (1, 17, 384)."""
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
    # per block: its input and each layer's output, then the final tokens
    assert [h.shape for h in out.sm_hidden_states] == [(2, 65, 16)] * (2 * (1 + 1) + 1)
    assert [h.shape for h in out.lg_hidden_states] == [(2, 17, 24)] * (2 * (2 + 1) + 1)
    torch.testing.assert_close(out.sm_hidden_states[0], model.sm_embeddings(img))
    torch.testing.assert_close(out.lg_hidden_states[0], model.lg_embeddings(img))
    torch.testing.assert_close(out.sm_hidden_states[-1], out.sm_last_hidden_state)
    torch.testing.assert_close(out.lg_hidden_states[-1], out.lg_last_hidden_state)
    # the second block's input is the first block's fused output
    first = model.encoder.layers[0](model.sm_embeddings(img), model.lg_embeddings(img))
    torch.testing.assert_close(out.sm_hidden_states[2], first.sm_last_hidden_state)
    torch.testing.assert_close(out.lg_hidden_states[3], first.lg_last_hidden_state)
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
    assert len(out.sm_hidden_states) == 5 and len(out.lg_cross_attentions) == 4
    as_tuple = model(img, labels=labels, output_attentions=True, return_dict=False)
    # loss, logits, attentions, then the four per-stream map tuples
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 7
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    torch.testing.assert_close(as_tuple[6][0], out.lg_cross_attentions[0])
    base_tuple = model.vitx(img, return_dict=False)
    # last_hidden_state, pooler_output, then each stream's tokens and CLS token
    assert len(base_tuple) == 6
    torch.testing.assert_close(base_tuple[3], base.lg_last_hidden_state)


def test_regression_and_multi_label_losses():
    img = torch.randn(4, 3, 32, 32)
    regression = CrossVitxForImageClassification(tiny(num_classes=1))
    values = torch.randn(4)
    out = regression(img, labels=values)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), values))
    multi = CrossVitxForImageClassification(tiny())
    targets = torch.randint(0, 2, (4, 10)).float()
    out = multi(img, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))


def test_sdpa_by_default_eager_for_maps(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model = CrossVitxForImageClassification(tiny()).eval()
    img = torch.randn(3, 3, 32, 32)
    sdpa = model(img).logits
    assert len(calls) == 2 * (1 + 2 + 2 * 2)  # every self- and cross-attention of both blocks
    with_maps = model(img, output_attentions=True).logits
    model.config._attn_implementation = "eager"
    eager = model(img).logits
    assert len(calls) == 14
    torch.testing.assert_close(sdpa, with_maps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)


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


def test_gradient_checkpointing_same_gradients():
    model = CrossVitxForImageClassification(tiny(dropout=0.0, emb_dropout=0.0))
    assert_checkpointing_keeps_gradients(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))


def test_no_split_modules_name_real_modules():
    model = CrossVitxForImageClassification(tiny())
    present = {type(m).__name__ for m in model.modules()}
    assert set(model._no_split_modules) <= present


def test_trainer_trains_and_predicts(tmp_path):
    model = CrossVitxForImageClassification(tiny(dropout=0.0, emb_dropout=0.0))
    data = [{"pixel_values": torch.randn(3, 32, 32), "labels": i % 10} for i in range(8)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             max_steps=2, learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=data)
    assert trainer.train().training_loss > 0
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert {"sm_classifier.1.weight", "lg_classifier.1.weight", "vitx.sm_embeddings.cls_token"} <= changed
    predictions = trainer.predict(data)
    assert predictions.predictions.shape == (8, 10) and predictions.metrics["test_loss"] > 0


# saving and loading


def saved_classifier(tmp_path, **overrides):
    config = tiny(**overrides, id2label={i: f"digit {i}" for i in range(10)})
    model = CrossVitxForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_exact_round_trip_and_auto_classes_in_process(tmp_path):
    model, folder = saved_classifier(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "crossvitx"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vitx.CrossVitxConfig",
        "AutoModel": "modeling_vitx.CrossVitxModel",
        "AutoModelForImageClassification": "modeling_vitx.CrossVitxForImageClassification",
    }
    stored = load_file(folder / "model.safetensors")
    assert stored.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(stored[name], tensor), name
    assert type(AutoConfig.from_pretrained(folder)) is CrossVitxConfig
    classifier = AutoModelForImageClassification.from_pretrained(folder).eval()
    base = AutoModel.from_pretrained(folder).eval()
    assert type(classifier) is CrossVitxForImageClassification and type(base) is CrossVitxModel
    img = torch.randn(2, 3, 32, 32)
    assert torch.equal(classifier(img).logits, model(img).logits)
    reference = model.vitx(img)
    loaded = base(img)
    assert torch.equal(loaded.sm_last_hidden_state, reference.sm_last_hidden_state)
    assert torch.equal(loaded.lg_last_hidden_state, reference.lg_last_hidden_state)
    assert type(AutoModelForImageClassification.from_config(tiny())) is CrossVitxForImageClassification


def test_remote_code_in_fresh_process(tmp_path):
    model, folder = saved_classifier(tmp_path)
    img = torch.randn(2, 3, 32, 32)
    torch.save(img, tmp_path / "img.pt")
    expected = model(img).logits
    result = run_isolated(f"""
        import json, torch
        from transformers import AutoModelForImageClassification, AutoModel
        model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        img = torch.load({str(tmp_path / "img.pt")!r}, weights_only=True)
        with torch.no_grad():
            logits = model(img).logits
            lg_tokens = base(img).lg_last_hidden_state
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        print(json.dumps({{"module": type(model).__module__, "class": type(model).__name__,
                          "base": type(base).__name__, "lg_tokens": list(lg_tokens.shape),
                          "label": model.config.id2label[3]}}))
    """, tmp_path)
    assert result["module"].startswith("transformers_modules.")
    assert (result["class"], result["base"]) == ("CrossVitxForImageClassification", "CrossVitxModel")
    assert result["lg_tokens"] == [2, 17, 24] and result["label"] == "digit 3"
    assert torch.equal(torch.load(tmp_path / "logits.pt", weights_only=True), expected)


def test_bfloat16_loading(tmp_path):
    model, folder = saved_classifier(tmp_path)
    loaded = CrossVitxForImageClassification.from_pretrained(folder, torch_dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    img = torch.randn(2, 3, 32, 32)
    out = loaded(img.bfloat16(), output_attentions=True)
    assert out.logits.dtype == torch.bfloat16 and out.sm_cross_attentions[0].dtype == torch.bfloat16
    torch.testing.assert_close(out.logits.float(), model(img).logits, atol=0.1, rtol=0.1)
