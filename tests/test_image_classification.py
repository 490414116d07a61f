"""What every image classifier does alike (each family and encoder in families.py): the loss of each problem
type, output tuples with ``return_dict=False``, dropout only in training, initial weights, and the Trainer trains
and predicts with it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from configuration_vitx import VitxConfig
from families import BUILT_OF_BLOCKS, CLASSIFIERS, MODELS, TABLE, tiny_inputs, tiny_model, tiny_pixels
from helpers import tiny_vit_kwargs
from modeling_vitx import (VitxAttention, VitxBackbone, VitxForImageClassification, VitxForSemanticSegmentation,
                           VitxLandmarkAttention)


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_loss_of_every_problem_type(family):
    """Class ids: cross-entropy (-100 ignored, out-of-range ids named); float targets of every class: binary
    cross-entropy; one output or ``problem_type="regression"``: mean squared error. The problem type is inferred
    per call, never written into the config."""
    img = tiny_pixels(family, batch=4)
    single = tiny_model(family)
    out = single(img, labels=torch.tensor([0, 1, 2, 9]))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 9])))
    assert single.config.problem_type is None
    out_of_range = r"`labels` must be class ids in \[0, 10\) or -100 \(ignored\), got \[-3, 12\]"
    with pytest.raises(ValueError, match=out_of_range):
        single(img, labels=torch.tensor([0, -3, -100, 12]))
    ignored = single(img, labels=torch.tensor([0, -100, 2, 9]))  # HF's ignore index drops a sample from the mean
    torch.testing.assert_close(ignored.loss, F.cross_entropy(ignored.logits[[0, 2, 3]], torch.tensor([0, 2, 9])))
    targets = torch.randint(0, 2, (4, 10)).float()
    out = tiny_model(family)(img, labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))
    out = tiny_model(family, problem_type="regression")(img, labels=targets)  # a set problem type wins
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits, targets))
    values = torch.randn(4)
    out = tiny_model(family, num_classes=1)(img, labels=values)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), values))


@pytest.mark.parametrize("family", MODELS)
def test_return_dict_false_gives_the_outputs_fields_as_a_tuple(family):
    """The head model's and the bare model's tuples are their output's non-empty fields in order (a classifier's:
    loss, logits, then the maps; CrossViT's per-stream fields follow, see test_crossvit.py)."""
    model, inputs = tiny_model(family), tiny_inputs(family)
    maps = {"output_attentions": TABLE[family].maps}
    as_dict = model(**inputs, **maps)
    as_tuple = model(**inputs, **maps, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict)
    assert list(as_dict.keys())[:2] == ["loss", "logits"]
    for name, value in zip(as_dict.keys(), as_tuple):
        torch.testing.assert_close(value, as_dict[name], msg=lambda m: f"{name}: {m}")
    base = model.vitx(inputs["pixel_values"], return_dict=False)
    expected = model.vitx(inputs["pixel_values"])
    assert isinstance(base, tuple) and len(base) == len(expected)
    for name, value in zip(expected.keys(), base):
        torch.testing.assert_close(value, expected[name], msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_dropout_only_in_training(family):
    model = tiny_model(family, dropout=0.5, emb_dropout=0.5)
    img = tiny_pixels(family)
    torch.testing.assert_close(model(img).logits, model(img).logits)
    model.train()
    assert not torch.allclose(model(img).logits, model(img).logits)


def _fan_in_bound(module):
    return module.weight[0].numel() ** -0.5


def _xavier_bound(module):
    fan_out, fan_in = module.weight.shape[0], module.weight[0].numel()
    return (6 / (fan_in + fan_out)) ** 0.5


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_init_weights(family):
    """vit-pytorch's initialization: every linear and convolution layer uniform in +-1/sqrt(fan_in) (std
    1/sqrt(3 fan_in), PyTorch's draw) but the landmark attention's, whose residual convolution starts at zero and
    whose projections start mimetic (test_mimetic_attention_init); positions, CLS and mask tokens normal with std
    ``position_init_std``; LayerNorms the identity. With ``linear_init="xavier_uniform"`` (what None means for a
    ViT with its patch norms, the segmentation model aside), the transformer's own linear layers (patch embedding,
    attention, feed-forward) Glorot-uniform in +-sqrt(6 / (fan_in + fan_out)), their biases and every other layer
    as before."""
    for linear_init in ("pytorch", "xavier_uniform") + ((None,) if family != "crossvit" else ()):
        _check_init_weights(family, linear_init)


def _check_init_weights(family, linear_init):
    model = TABLE[family].head(TABLE[family].config(dim=64, heads=2, dim_head=32, mlp_dim=128, linear_init=linear_init)
                               if family != "crossvit" else TABLE[family].config(linear_init=linear_init))
    if linear_init is None:
        assert model.config.patch_norm  # every ViT family of the table has the patch norms
        linear_init = "pytorch" if isinstance(model, VitxForSemanticSegmentation) else "xavier_uniform"
    landmark = getattr(model.config, "encoder", None) == "landmark"
    residual_convs = [m.res_conv for m in model.modules() if getattr(m, "res_conv", None) is not None]
    assert bool(residual_convs) == landmark
    assert all(not conv.weight.any() for conv in residual_convs)
    mimetic = [m for m in model.modules() if isinstance(m, VitxLandmarkAttention)]
    assert bool(mimetic) == landmark
    for attention in mimetic:
        assert _mimetic_products(attention) == pytest.approx((0.7, -0.4), abs=0.1)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
              and not any(m is conv for conv in residual_convs)
              and not any(m in (attention.to_qkv, attention.to_out) for attention in mimetic)]
    assert layers
    body = [layer for layer in layers if getattr(layer, "_vitx_body_linear", False)]
    assert body and len(body) < len(layers)  # heads and decoders keep PyTorch's draw
    for layer in layers:
        xavier = linear_init == "xavier_uniform" and any(layer is b for b in body)
        bound = _xavier_bound(layer) if xavier else _fan_in_bound(layer)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound, layer
        if layer.weight.numel() >= 2048:  # enough draws for the std to be within a few percent
            assert abs(layer.weight.std().item() / (bound / 3 ** 0.5) - 1) < 0.1, layer
        if layer.bias is not None:
            assert layer.bias.abs().max() <= _fan_in_bound(layer) and layer.bias.any()
    tokens = [p for name, p in model.named_parameters() if name.endswith(("position_embeddings", "cls_token",
                                                                           "mask_token"))]
    assert tokens and all(abs(p.std().item() - 1) < 0.25 for p in tokens if p.numel() >= 512)
    assert all(p.abs().sum() > 0 for p in tokens)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)


def _mimetic_products(attention):
    """(mean diagonal of each head's W_q^T W_k, mean diagonal of W_v W_o): 0.7 and -0.4 for a mimetic start,
    about 0 for a random one."""
    queries, keys, values = _projections(attention)
    value_output = values.transpose(0, 1).flatten(1) @ attention.to_out.weight.detach().T
    return ((queries.transpose(1, 2) @ keys).diagonal(dim1=1, dim2=2).mean().item(),
            value_output.diagonal().mean().item())


def _projections(attention):
    """W_q, W_k, W_v of each head: (heads, dim, dim_head) each."""
    weight = attention.to_qkv.weight.detach()
    return (w.T.unflatten(1, (attention.heads, -1)).transpose(0, 1) for w in weight.split(weight.shape[0] // 3))


def test_mimetic_attention_init():
    """``attention_init``: by default the landmark attention starts mimetic (each head's W_q orthonormal with
    W_q^T W_k = 0.7 I + noise, W_v W_o = -0.4 I + noise) and softmax attention random; ``"mimetic"`` and
    ``"random"`` choose for every attention of the model (CrossViT's cross-attention too), anything else is refused
    by name."""
    landmark = dict(tiny_vit_kwargs(dim=64, heads=2, dim_head=32, mlp_dim=128), encoder="landmark",
                    encoder_kwargs={"num_landmarks": 8})
    for options, start in (({}, "mimetic"), ({"attention_init": "random"}, "random"),
                           ({"encoder": "vit", "encoder_kwargs": {}, "attention_init": "mimetic"}, "mimetic"),
                           ({"encoder": "vit", "encoder_kwargs": {}}, "random")):
        model = VitxForImageClassification(VitxConfig(**{**landmark, **options}))
        for layer in model.vitx.encoder.layers:
            query_key, value_output = _mimetic_products(layer.attention)
            if start == "mimetic":
                queries, _, values = _projections(layer.attention)
                values = values.transpose(0, 1).flatten(1)  # the whole layer's W_v, 64 x 64
                for matrix in (*queries, values):  # orthonormal columns
                    torch.testing.assert_close(matrix.T @ matrix, torch.eye(matrix.shape[1]), atol=1e-5, rtol=0)
                assert query_key == pytest.approx(0.7, abs=0.1) and value_output == pytest.approx(-0.4, abs=0.05)
            else:
                assert abs(query_key) < 0.1 and abs(value_output) < 0.1
                bound = _xavier_bound(layer.attention.to_qkv)  # the default linear_init with the patch norms
                assert 0.9 * bound < layer.attention.to_qkv.weight.abs().max() <= bound
    crossvit = TABLE["crossvit"]
    for options, start in (({}, "random"), ({"attention_init": "mimetic"}, "mimetic")):
        attentions = [m for m in crossvit.head(crossvit.config(**options)).modules() if isinstance(m, VitxAttention)]
        assert any(a.to_qkv.in_features != attentions[0].to_qkv.in_features for a in attentions)  # both widths
        for attention in attentions:  # self- and cross-attention of both streams
            query_key, value_output = _mimetic_products(attention)
            if start == "mimetic":
                assert query_key == pytest.approx(0.7, abs=0.15) and value_output < -0.1
            else:
                assert abs(query_key) < 0.15 and abs(value_output) < 0.1
    with pytest.raises(ValueError, match=r"`attention_init` must be None, 'mimetic' or 'random', got 'eye'"):
        VitxConfig(**landmark, attention_init="eye")
    with pytest.raises(ValueError, match=r"`linear_init` must be None, 'pytorch' or 'xavier_uniform', got 'he'"):
        VitxConfig(**landmark, linear_init="he")
    with pytest.raises(ValueError, match=r"`linear_init` must be 'pytorch' or 'xavier_uniform', got None"):
        TABLE["crossvit"].config(linear_init=None)


def test_default_linear_init_follows_the_patch_embedding(tmp_path):
    """``linear_init=None``: Glorot's draw for a ViT with the patch norms, PyTorch's for the classic ViT
    (``patch_norm=False``); the config keeps None through a save, so a loaded folder's new head is drawn the same
    way again."""
    bounds = {}
    for patch_norm in (True, False):
        torch.manual_seed(0)
        model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(dim=64, heads=2, dim_head=32, mlp_dim=256),
                                                      patch_norm=patch_norm))
        assert model.config.linear_init is None
        fc2 = model.vitx.encoder.layers[0].feed_forward.fc2  # 256 -> 64: the two draws' bounds differ by 1.6x
        bounds[patch_norm] = fc2.weight.abs().max().item()
        expected = _xavier_bound(fc2) if patch_norm else _fan_in_bound(fc2)
        assert 0.95 * expected < bounds[patch_norm] <= expected
    model.save_pretrained(tmp_path)
    assert VitxConfig.from_pretrained(tmp_path).linear_init is None


@pytest.mark.parametrize("model_class", [VitxForSemanticSegmentation, VitxBackbone])
def test_dense_prediction_models_take_none_as_pytorchs_draw(model_class, tmp_path):
    """``linear_init=None`` in a segmentation model or a backbone: PyTorch's draw with the patch norms too (Glorot's
    holds segmentation back), recorded in the model's config, a copy: the caller's config stays None. A value
    given is kept."""
    for given, draw in ((None, "pytorch"), ("pytorch", "pytorch"), ("xavier_uniform", "xavier_uniform")):
        config = VitxConfig(**tiny_vit_kwargs(dim=64, heads=2, dim_head=32, mlp_dim=256), linear_init=given)
        torch.manual_seed(0)
        model = model_class(config)
        assert config.linear_init == given and model.config.linear_init == draw
        fc2 = model.vitx.encoder.layers[0].feed_forward.fc2
        expected = _xavier_bound(fc2) if draw == "xavier_uniform" else _fan_in_bound(fc2)
        assert 0.95 * expected < fc2.weight.abs().max().item() <= expected
    model.save_pretrained(tmp_path)
    assert VitxConfig.from_pretrained(tmp_path).linear_init == "xavier_uniform"


def test_init_weights_follow_the_config():
    """``initializer_range=0.02`` gives transformers' truncated normal and zero biases; ``position_init_std``
    scales the positions and the CLS token."""
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(dim=64, heads=2, dim_head=32, mlp_dim=128),
                                                  initializer_range=0.02, position_init_std=0.25))
    for layer in (m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))):
        assert layer.weight.abs().max() <= 6 * 0.02 and (layer.bias is None or not layer.bias.any())
        if layer.weight.numel() >= 2048:
            assert abs(layer.weight.std().item() / 0.02 - 1) < 0.1
    positions = model.vitx.embeddings.position_embeddings
    assert abs(positions.std().item() - 0.25) < 0.05


def test_fresh_weights_are_drawn_like_vit_pytorchs():
    """A fresh vitx ViT with ``linear_init="pytorch"`` and a fresh vit-pytorch ViT of the same sizes: each weight
    drawn from the same law (compared through the converter's name mapping)."""
    vit_pytorch = pytest.importorskip("vit_pytorch")
    from convert_vit_pytorch import convert
    kwargs = dict(image_size=32, patch_size=4, num_classes=10, dim=128, depth=2, heads=4, dim_head=32, mlp_dim=256)
    torch.manual_seed(0)
    peer = vit_pytorch.ViT(**kwargs)
    converted = convert("vit", peer.state_dict(), kwargs).state_dict()
    fresh = VitxForImageClassification(VitxConfig(**kwargs, linear_init="pytorch")).state_dict()
    assert converted.keys() == fresh.keys()
    for name, value in fresh.items():
        expected = converted[name]
        if expected.numel() < 1024 or expected.std() == 0:
            continue
        assert abs(value.std().item() / expected.std().item() - 1) < 0.1, name
        assert abs(value.abs().max().item() / expected.abs().max().item() - 1) < 0.35, name


def test_a_new_head_gets_the_init_and_loaded_weights_stay(tmp_path):
    """A folder loaded under new labels: every saved weight as saved, the new head drawn by ``_init_weights``."""
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(dim=64, heads=2, dim_head=32, mlp_dim=128)))
    model.save_pretrained(tmp_path)
    reloaded = VitxForImageClassification.from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True)
    saved = model.state_dict()
    for name, value in reloaded.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(value, saved[name]), name
    head, bound = reloaded.classifier, _fan_in_bound(reloaded.classifier)
    assert head.weight.shape == (3, 64) and 0.8 * bound < head.weight.abs().max() <= bound
    assert head.bias.abs().max() <= bound and head.bias.any()


def test_trained_landmark_attention_is_not_drawn_again(tmp_path):
    """The landmark attention's residual convolution starts at zero and its projections mimetic in a fresh model
    only: loaded under new labels, a folder's trained convolution and projections stay as saved."""
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(), encoder="landmark",
                                                  encoder_kwargs={"num_landmarks": 8}))
    convolutions = [layer.attention.res_conv for layer in model.vitx.encoder.layers]
    assert convolutions and not any(conv.weight.any() for conv in convolutions)
    with torch.no_grad():
        for conv in convolutions:
            conv.weight.uniform_(0.5, 1.0)  # as training leaves it
        for layer in model.vitx.encoder.layers:
            for projection in (layer.attention.to_qkv, layer.attention.to_out):
                projection.weight.normal_()
    model.save_pretrained(tmp_path)
    reloaded = VitxForImageClassification.from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True)
    saved = model.vitx.encoder.state_dict()
    assert any(".to_qkv." in name for name in saved) and any(".res_conv." in name for name in saved)
    for name, value in reloaded.vitx.encoder.state_dict().items():
        assert torch.equal(value, saved[name]), name


class _RandomImages(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return {"pixel_values": torch.randn(3, 32, 32, generator=generator), "labels": index % 10}


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_trainer_trains_and_predicts(family, tmp_path):
    """Two steps of the Trainer move every weight (encoder, embeddings and head alike); ``predict`` gives one row
    of logits per image and the loss."""
    model = tiny_model(family).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             max_steps=2, learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
                             logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=_RandomImages())
    loss = trainer.train().training_loss
    assert loss > 0 and torch.isfinite(torch.tensor(loss))
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p)]
    assert not unchanged, f"weights the Trainer did not move: {unchanged}"
    predictions = trainer.predict(_RandomImages())
    assert predictions.predictions.shape == (8, 10) and predictions.metrics["test_loss"] > 0
