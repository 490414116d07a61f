"""Pluggable encoders: the registry, the landmark (Nystrom) encoder, x-transformers, and any module. Parity of the
landmark encoder with nystrom-attention: test_parity_nystrom_attention.py."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import Trainer, TrainingArguments

from helpers import assert_checkpointing_keeps_gradients, run_isolated, tiny_vit_kwargs
from user_encoders import Mixer
from configuration_vitx import VitxConfig
import modeling_vitx
from modeling_vitx import LandmarkEncoder, VitxEncoder, VitxForImageClassification, VitxModel, register_encoder

LANDMARK = dict(encoder="landmark", encoder_kwargs={"num_landmarks": 16, "residual_conv_kernel": 5})
XTRANSFORMERS = dict(encoder="x-transformers", encoder_kwargs={"ff_glu": True, "residual_attn": True})


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


# the landmark encoder

def landmark_encoder(**options):
    """A standalone landmark encoder of the tiny ViT's sizes."""
    config = config_for(dict(encoder="landmark", encoder_kwargs=options))
    return LandmarkEncoder.from_config(config)


def test_landmark_encoder_from_config():
    encoder = landmark_encoder(num_landmarks=8)
    out = encoder(torch.randn(2, 65, 32), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 65, 32) and len(out.hidden_states) == 3
    attention = encoder.layers[0].attention
    assert (attention.num_landmarks, attention.pinv_iterations, attention.res_conv.kernel_size) == (8, 6, (33, 1))
    assert not encoder.normalizes_output and encoder.returns_attentions and encoder.returns_hidden_states


@pytest.mark.parametrize("encoder", ["vit", "landmark"])
@pytest.mark.parametrize("autocast", [False, True])
def test_same_numbers_with_and_without_autograd(encoder, autocast):
    """One path in every grad mode: the same logits and the same dtypes with and without autograd, also under
    bfloat16 autocast (whose low-precision branches join a float32 residual stream)."""
    kwargs = {"encoder": "landmark", "encoder_kwargs": {"num_landmarks": 16}} if encoder == "landmark" else {}
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(**kwargs, qkv_bias=True))).eval()
    img = torch.randn(3, 3, 32, 32)  # 65 tokens: 15 of landmark padding
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            untracked = model(img, output_hidden_states=True)
        tracked = model(img, output_hidden_states=True)
    assert [h.dtype for h in untracked.hidden_states] == [h.dtype for h in tracked.hidden_states]
    torch.testing.assert_close(untracked.logits, tracked.logits.detach(), atol=1e-6, rtol=1e-6)
    tracked.logits.float().sum().backward()
    assert model.vitx.encoder.layers[0].attention.to_qkv.weight.grad.abs().sum() > 0


def test_landmark_attention_takes_no_context():
    attention = landmark_encoder(num_landmarks=8).layers[0].attention
    with pytest.raises(ValueError, match="self-attention only"):
        attention(torch.randn(1, 65, 32), context=torch.randn(1, 9, 32))


class _LargestTensor(TorchFunctionMode):
    """Records the largest number of elements any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                self.largest = max(self.largest, t.numel())
        return out


def test_landmark_never_builds_a_tokens_by_tokens_tensor():
    config = VitxConfig(image_size=(32, 256), patch_size=4, num_classes=10, dim=16, depth=1, heads=2, mlp_dim=32,
                        dim_head=8, encoder="landmark", encoder_kwargs={"num_landmarks": 16})
    model = VitxForImageClassification(config).eval()
    tokens = 1 + 8 * 64
    img = torch.randn(1, 3, 32, 256)
    with torch.no_grad(), _LargestTensor() as probe:
        model(img)
    assert probe.largest < 2 * 16 * tokens * 8  # linear in tokens: (heads, tokens, landmarks or dim) at most
    with torch.no_grad():
        maps = model(img, output_attentions=True).attentions
    assert [m.shape for m in maps] == [(1, 2, tokens, tokens)]


def test_landmark_seed_example_2048_in_under_3gb(tmp_path):
    """The seed's D2F example: 2048x2048, patch 32 (4,096 tokens), dim 512, depth 12, heads 8, 256 landmarks."""
    result = run_isolated("""
        import json, resource, torch
        from configuration_vitx import VitxConfig
        from modeling_vitx import VitxForImageClassification
        config = VitxConfig(image_size=2048, patch_size=32, num_classes=1000, dim=512, depth=12, heads=8,
                            mlp_dim=2048, encoder="landmark", encoder_kwargs={"num_landmarks": 256})
        model = VitxForImageClassification(config).eval()
        with torch.inference_mode():
            logits = model(torch.randn(1, 3, 2048, 2048)).logits
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(json.dumps({"shape": list(logits.shape), "peak_gb": peak_gb}))
    """, tmp_path, hide_project=False)
    assert result["shape"] == [1, 1000]
    assert result["peak_gb"] < 3.0


def test_landmark_gradient_checkpointing_same_gradients():
    model = VitxForImageClassification(config_for(LANDMARK))
    assert_checkpointing_keeps_gradients(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))


# x-transformers

def test_x_transformers_encoder_from_config():
    model = VitxForImageClassification(config_for(XTRANSFORMERS)).eval()
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
        VitxModel(config_for(XTRANSFORMERS))


# any module

def test_any_module_keeps_its_weights_and_round_trips(tmp_path):
    mixer = Mixer()
    before = mixer.mix.weight.clone()
    model = VitxForImageClassification(config_for({}), encoder=mixer).eval()
    assert torch.equal(model.vitx.encoder.module.mix.weight, before)
    assert model.config.encoder == "module" and model.config.encoder_kwargs["class"].endswith("Mixer")
    img = torch.randn(2, 3, 32, 32)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"saved with a user-supplied encoder module \(.*Mixer\); pass an instance"):
        VitxForImageClassification.from_pretrained(tmp_path)
    loaded = VitxForImageClassification.from_pretrained(tmp_path, encoder=Mixer()).eval()
    assert torch.equal(loaded(img).logits, model(img).logits)
    with pytest.raises(ValueError, match="`output_attentions=True` cannot be served: the encoder module .*Mixer"):
        model(img, output_attentions=True)
    with pytest.raises(ValueError, match="`output_hidden_states=True` cannot be served"):
        model(img, output_hidden_states=True)


def test_any_module_with_wrong_shape_is_named():
    model = VitxModel(config_for({}), encoder=nn.Linear(32, 16))
    with pytest.raises(ValueError, match=r"must map \(batch, tokens, dim\) \(1, 65, 32\) to the same shape, "
                                         r"got \(1, 65, 16\)"):
        model(torch.randn(1, 3, 32, 32))


def test_seed_x_transformers_instance_as_module():
    from x_transformers import Encoder
    model = VitxForImageClassification(config_for({}), encoder=Encoder(dim=32, depth=2, heads=4, ff_glu=True,
                                                                         residual_attn=True)).eval()
    out = model(torch.randn(1, 3, 32, 32), output_attentions=True)
    assert out.logits.shape == (1, 10) and len(out.attentions) == 2


def test_seed_landmark_instance_as_module(tmp_path):
    model = VitxForImageClassification(config_for({}), encoder=landmark_encoder(num_landmarks=8)).eval()
    assert isinstance(model.head_norm, nn.LayerNorm)  # no final norm in the landmark encoder: the head has one
    out = model(torch.randn(1, 3, 32, 32), output_attentions=True)
    assert out.attentions[0].shape == (1, 4, 65, 65)


# every encoder: save/load in process and as remote code, bf16, the Trainer

@pytest.mark.parametrize("name", ["landmark", "x-transformers", "module"])
def test_every_encoder_round_trips_as_remote_code(name, tmp_path):
    options = {"landmark": LANDMARK, "x-transformers": XTRANSFORMERS, "module": {}}[name]
    encoder = Mixer() if name == "module" else None
    model = VitxForImageClassification(config_for(options), encoder=encoder).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    img = torch.randn(2, 3, 32, 32)
    torch.save(img, tmp_path / "img.pt")
    kwargs = "encoder=user_encoders.Mixer()" if name == "module" else ""
    result = run_isolated(f"""
        import json, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import user_encoders
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True,
                                                                {kwargs}).eval()
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / "img.pt")!r})).logits, {str(tmp_path / "logits.pt")!r})
        print(json.dumps({{"module": type(model).__module__, "encoder": model.config.encoder}}))
    """, tmp_path)
    assert result["module"].startswith("transformers_modules.")
    assert result["encoder"] == ("module" if name == "module" else name)
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "logits.pt"), model(img).logits)
    again = VitxForImageClassification.from_pretrained(folder, encoder=encoder and Mixer()).eval()
    with torch.no_grad():
        assert torch.equal(again(img).logits, model(img).logits)
    bf16 = VitxForImageClassification.from_pretrained(folder, torch_dtype=torch.bfloat16, encoder=encoder and Mixer()).eval()
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    with torch.no_grad():
        torch.testing.assert_close(bf16(img.bfloat16()).logits.float(), model(img).logits, atol=0.15, rtol=0.1)


class _RandomImages(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return {"pixel_values": torch.randn(3, 32, 32, generator=generator), "labels": index % 10}


@pytest.mark.parametrize("name", ["landmark", "x-transformers", "module"])
def test_every_encoder_trains_with_the_trainer(name, tmp_path):
    options = {"landmark": LANDMARK, "x-transformers": XTRANSFORMERS, "module": {}}[name]
    model = VitxForImageClassification(config_for(options), encoder=Mixer() if name == "module" else None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8,
                             learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    result = Trainer(model=model, args=args, train_dataset=_RandomImages()).train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any(n.startswith("vitx.encoder.") for n in changed) and "classifier.weight" in changed
