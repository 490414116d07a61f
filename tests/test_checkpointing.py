"""Activation checkpointing through transformers' layer contract, on every model built of vitx blocks (the MAE
pretraining model's encoder and decoder included): blocks are ``GradientCheckpointingLayer``s, every block is
checkpointed, block hooks fire once per step, ``every_n_layers`` is honoured, and gradients stay exactly as
without it."""

import warnings

import pytest
import torch
from transformers import PreTrainedModel

from families import BUILT_OF_BLOCKS, tiny_inputs, tiny_model
from helpers import enable_activation_checkpointing
from modeling_vitx import GradientCheckpointingLayer, VitxLayer



def blocks(model):
    return [module for module in model.modules() if isinstance(module, VitxLayer)]


def training_step(model, inputs):
    """Forward with a loss (on class ids, or MAE's with fixed masking noise) and backward, counting calls of each
    block and of each block's attention; returns (gradients by parameter name, [block calls], [attention calls]),
    one count per block in module order."""
    model.train().zero_grad()
    block_calls, attention_calls, handles = [], [], []
    for block in blocks(model):
        for counts, module in ((block_calls, block), (attention_calls, block.attention)):
            counts.append(0)
            index = len(counts) - 1
            handles.append(module.register_forward_hook(
                lambda *args, counts=counts, index=index: counts.__setitem__(index, counts[index] + 1)))
    model(**inputs).loss.backward()
    for handle in handles:
        handle.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, block_calls, attention_calls


def assert_same_gradients(grads, expected):
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_blocks_are_gradient_checkpointing_layers(family):
    """Every block follows transformers' layer contract: its own class where transformers has one (4.52 on), else
    vitx's fallback of the same contract (the tests below hold both to it)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer as contract
    except ImportError:
        contract = GradientCheckpointingLayer
    assert GradientCheckpointingLayer is contract
    model = tiny_model(family)
    assert blocks(model) and all(isinstance(block, contract) for block in blocks(model))


@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_checkpointing_keeps_gradients_and_block_hooks_fire_once(family, reentrant):
    """Every block is recomputed in the backward (its attention runs twice), yet a hook on the block sees one call
    per step, no deprecated API is reached (FutureWarning is an error here), and every gradient is unchanged.
    (The non-reentrant recompute stops early, before the block returns; the reentrant one runs it to the end.)"""
    model, inputs = tiny_model(family), tiny_inputs(family)
    plain, block_calls, attention_calls = training_step(model, inputs)
    assert block_calls == attention_calls == [1] * len(blocks(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        enable_activation_checkpointing(model, {"use_reentrant": reentrant})
        checkpointed, block_calls, attention_calls = training_step(model, inputs)
    assert all(block.gradient_checkpointing for block in blocks(model))
    assert attention_calls == [2] * len(blocks(model)), "every block must be recomputed in the backward"
    assert block_calls == [1] * len(blocks(model)), "block hooks must fire once per step, not on the recompute"
    assert_same_gradients(checkpointed, plain)


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_every_second_layer_checkpointed(family):
    """``every_n_layers=2`` (transformers 5.x) checkpoints the 1st, 3rd, ... checkpointing layer in module order
    and no other: only those blocks are recomputed in the backward. Gradients are unchanged."""
    if not hasattr(PreTrainedModel, "activation_checkpointing_enable"):
        pytest.skip("transformers 4.x has no every_n_layers")
    model, inputs = tiny_model(family), tiny_inputs(family)
    plain, _, _ = training_step(model, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        enable_activation_checkpointing(model, every_n_layers=2)
        checkpointed, block_calls, attention_calls = training_step(model, inputs)
    contract_layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    expected_flags = {id(layer): index % 2 == 0 for index, layer in enumerate(contract_layers)}
    flags = [expected_flags.get(id(block)) for block in blocks(model)]
    assert None not in flags and True in flags and False in flags
    assert [block.gradient_checkpointing for block in blocks(model)] == flags
    assert attention_calls == [2 if flag else 1 for flag in flags], "only the checkpointed blocks are recomputed"
    assert block_calls == [1] * len(blocks(model))
    assert_same_gradients(checkpointed, plain)
