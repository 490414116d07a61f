"""What every image classifier does alike (each family and encoder in families.py): the loss of each problem
type, output tuples with ``return_dict=False``, dropout only in training, initial weights, and the Trainer trains
and predicts with it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from families import CLASSIFIERS, FAMILIES, MODELS, TABLE, tiny_inputs, tiny_model, tiny_pixels


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


@pytest.mark.parametrize("family", FAMILIES)
def test_init_weights(family):
    """Positions and the linear layers drawn small (truncated normal, std 0.02), never zero; LayerNorms the
    identity."""
    model = tiny_model(family)
    positions = [p for name, p in model.named_parameters() if name.endswith("position_embeddings")]
    assert positions and all(p.std() < 0.05 and p.abs().sum() > 0 for p in positions)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(m.weight.std() < 0.05 and m.weight.abs().sum() > 0 for m in linears)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)


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
