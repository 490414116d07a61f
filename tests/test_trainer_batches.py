"""The Trainer's gradient accumulation and data parallelism train as one big batch, for every head.

With plain SGD (no momentum, decay, clipping or schedule) and no dropout, one optimizer step of the Trainer
over 8 samples must log the loss of those 8 samples as one batch and move the weights as one SGD step on that
batch does (computed by hand), whether the Trainer takes them as 2 accumulated micro-batches of 4 or as 4 on
each of 2 processes (DistributedDataParallel, gloo on CPU, in the shared torchrun launch). One class id is -100 (ignored), so the
micro-batches and processes hold different numbers of labels. With the Trainer's label smoothing too.
"""

import functools

import pytest
import torch

from distributed_run import TRAINER_CASES, build_model, make_samples, one_batch_sgd_step, parameters, trainer_sgd_step


@functools.cache
def reference(head, smoothing):
    """The weights before the step, the batch's loss and the weights after one SGD step on it."""
    return parameters(build_model(head)), *one_batch_sgd_step(build_model(head), make_samples(head), smoothing)


def assert_one_big_batch(result, head, smoothing):
    """``result`` (logged loss, weights after the step) is one SGD step on all the samples as one batch."""
    logged_loss, weights = result
    initial, loss, expected = reference(head, smoothing)
    assert logged_loss == pytest.approx(loss, rel=1e-5, abs=5e-5)  # transformers 4.x logs 4 decimals
    assert weights.keys() == expected.keys()
    # the step itself is compared, and is far larger than the tolerance
    assert max((expected[name] - initial[name]).abs().max() for name in expected) > 1e-2
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor - initial[name], expected[name] - initial[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("head, smoothing", TRAINER_CASES)
def test_gradient_accumulation_trains_as_one_batch(head, smoothing):
    result = trainer_sgd_step(build_model(head), make_samples(head), batch_size=4, accumulation=2,
                              smoothing=smoothing)
    assert_one_big_batch(result, head, smoothing)


@pytest.mark.parametrize("head, smoothing", TRAINER_CASES)
def test_two_processes_train_as_one_batch(head, smoothing, torchrun_launch):
    _, results, _ = torchrun_launch
    assert results["world_size"] == 2
    assert_one_big_batch(results["trainer"][head, smoothing], head, smoothing)
