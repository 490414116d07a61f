"""VitxModel / VitxForImageClassification: the seed's shapes, outputs, attention paths, input errors, training plumbing."""

import copy

import pytest
import torch

from helpers import assert_checkpointing_keeps_gradients, tiny_vit_kwargs
from configuration_vitx import VitxConfig
from modeling_vitx import VitxForImageClassification, VitxModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput


def tiny(**overrides):
    return VitxConfig(**tiny_vit_kwargs(**overrides))


def test_seed_examples_shapes():
    """The seed's 'Accessing Attention' and 'Accessing Embeddings' model, through the HF API."""
    config = VitxConfig(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048,
                        dropout=0.1, emb_dropout=0.1)
    model = VitxForImageClassification(config).eval()
    img = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out = model(img, output_attentions=True)
        embeddings = model.vitx(img).last_hidden_state
    assert isinstance(out, ImageClassifierOutput)
    assert out.logits.shape == (1, 1000)
    assert torch.stack(out.attentions, dim=1).shape == (1, 6, 16, 65, 65)
    assert embeddings.shape == (1, 65, 1024)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_base_model_outputs(pool):
    config = tiny(pool=pool)
    model = VitxModel(config).eval()
    img = torch.randn(2, 3, 32, 32)
    out = model(img, output_hidden_states=True, output_attentions=True)
    tokens = 64 + (pool == "cls")
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.last_hidden_state.shape == (2, tokens, 32)
    expected_pool = out.last_hidden_state.mean(1) if pool == "mean" else out.last_hidden_state[:, 0]
    torch.testing.assert_close(out.pooler_output, expected_pool)
    assert len(out.hidden_states) == config.depth + 1
    assert all(h.shape == (2, tokens, 32) for h in out.hidden_states)
    assert [a.shape for a in out.attentions] == [(2, 4, tokens, tokens)] * config.depth
    for attn in out.attentions:  # post-softmax rows
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, tokens))
    assert model.embeddings.cls_token is None if pool == "mean" else model.embeddings.cls_token.shape == (1, 1, 32)


def test_return_dict_false_gives_tuples():
    model = VitxForImageClassification(tiny()).eval()
    img = torch.randn(1, 3, 32, 32)
    labels = torch.tensor([3])
    as_dict = model(img, labels=labels, output_attentions=True)
    as_tuple = model(img, labels=labels, output_attentions=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 3
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    base = model.vitx(img, return_dict=False)
    assert len(base) == 2 and base[0].shape == (1, 65, 32)


def test_sdpa_and_eager_agree():
    config = tiny()
    model = VitxForImageClassification(config).eval()
    img = torch.randn(3, 3, 32, 32)
    sdpa = model(img).logits
    with_maps = model(img, output_attentions=True).logits
    model.config._attn_implementation = "eager"
    eager = model(img).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa, with_maps, atol=1e-5, rtol=1e-5)


def test_sdpa_is_the_default_path(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model = VitxModel(tiny()).eval()
    model(torch.randn(1, 3, 32, 32))
    assert len(calls) == 2
    model(torch.randn(1, 3, 32, 32), output_attentions=True)
    assert len(calls) == 2


@pytest.mark.parametrize("dtype, grad", [(torch.bfloat16, True), (torch.bfloat16, False), (torch.float32, True)])
def test_attention_path_is_the_configured_one_in_every_mode(monkeypatch, dtype, grad):
    """SDPA in every dtype and grad mode unless `eager` is named (no machine-specific switch)."""
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model = VitxForImageClassification(tiny()).to(dtype).train()
    img = torch.randn(2, 3, 32, 32, dtype=dtype)
    with torch.set_grad_enabled(grad):
        logits = model(img).logits
        assert len(calls) == 2
        model.set_attn_implementation("eager")
        eager = model(img).logits
        assert len(calls) == 2
    with torch.no_grad():
        reference = copy.deepcopy(model).float()(img.float()).logits  # float32, the same weights
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    for result in (logits, eager):
        torch.testing.assert_close(result.float(), reference, atol=tolerance, rtol=tolerance)
    if grad:
        eager.float().sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_rectangular_images_native():
    config = tiny(image_size=(32, 48), patch_size=(8, 4))
    model = VitxForImageClassification(config).eval()
    out = model(torch.randn(2, 3, 32, 48), output_attentions=True)
    assert out.logits.shape == (2, 10)
    assert out.attentions[0].shape == (2, 4, 1 + 4 * 12, 1 + 4 * 12)


def test_interpolate_pos_encoding():
    model = VitxForImageClassification(tiny()).eval()
    img = torch.randn(1, 3, 32, 32)
    same = model(img, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(same, model(img).logits)
    bigger = model(torch.randn(1, 3, 48, 64), interpolate_pos_encoding=True, output_attentions=True)
    assert bigger.logits.shape == (1, 10)
    assert bigger.attentions[0].shape[-1] == 1 + 12 * 16
    with pytest.raises(ValueError, match="size 30x32 is not divisible by the patch size 4x4"):
        model(torch.randn(1, 3, 30, 32), interpolate_pos_encoding=True)


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 64, 64), "has size 64x64; the model expects 32x32 \\(`image_size`\\). Pass `interpolate_pos_encoding=True`"),
    ((1, 1, 32, 32), "has 1 channels; the model expects `channels`=3"),
    ((3, 32, 32), "must be a \\(batch, channels, height, width\\) tensor, got \\(3, 32, 32\\)"),
])
def test_bad_pixel_values(shape, message):
    model = VitxForImageClassification(tiny()).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_problem_types():
    img = torch.randn(4, 3, 32, 32)
    single = VitxForImageClassification(tiny())
    out = single(img, labels=torch.tensor([0, 1, 2, 9]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 9])))
    assert single.config.problem_type is None  # inferred per call, never written into the config
    with pytest.raises(ValueError, match=r"`labels` must be class ids in \[0, 10\) or -100 \(ignored\), got \[-3, 12\]"):
        VitxForImageClassification(tiny())(img, labels=torch.tensor([0, -3, -100, 12]))
    ignored = single(img, labels=torch.tensor([0, -100, 2, 9]))  # HF's ignore index drops a sample from the mean
    torch.testing.assert_close(ignored.loss, torch.nn.functional.cross_entropy(ignored.logits[[0, 2, 3]],
                                                                              torch.tensor([0, 2, 9])))
    multi = VitxForImageClassification(tiny())
    targets = torch.randint(0, 2, (4, 10)).float()
    out = multi(img, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))
    regression_of_ten = VitxForImageClassification(tiny(problem_type="regression"))  # a set problem type wins
    out = regression_of_ten(img, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits, targets))
    regression = VitxForImageClassification(tiny(num_classes=1))
    values = torch.randn(4)
    out = regression(img, labels=values)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), values))


def test_gradient_checkpointing_same_gradients():
    model = VitxForImageClassification(tiny(dropout=0.0))
    assert_checkpointing_keeps_gradients(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))


def test_dropout_only_in_training():
    model = VitxForImageClassification(tiny(dropout=0.5, emb_dropout=0.5))
    img = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(img).logits, model(img).logits)
    model.train()
    assert not torch.allclose(model(img).logits, model(img).logits)


def test_init_weights():
    model = VitxForImageClassification(tiny())
    assert model.vitx.embeddings.position_embeddings.std() < 0.05
    assert model.vitx.embeddings.position_embeddings.abs().sum() > 0
    assert torch.equal(model.vitx.encoder.norm.weight, torch.ones(32))
    assert model.classifier.weight.std() < 0.05
