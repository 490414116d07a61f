"""PEFT: LoRA reaches every adapted projection, trains, saves, reloads and merges exactly on every model built of
vitx blocks (the classifiers and the MAE pretraining model); the input embeddings let PEFT's recipe (frozen base
+ reentrant activation checkpointing) train every adapter."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from families import BUILT_OF_BLOCKS, model_class, tiny_config, tiny_inputs, tiny_model
from helpers import enable_activation_checkpointing

def lora_config():
    # init_lora_weights=False starts B random, not zero: every adapter changes the logits and gets a gradient in
    # both factors from the first step, so a bypassed adapter cannot hide.
    return LoraConfig(r=4, lora_alpha=8, target_modules=["to_qkv", "to_out", "fc1", "fc2"], init_lora_weights=False)


def lora_gradients(model, inputs):
    """One forward with a loss (``tiny_inputs``: class ids, or MAE's fixed masking noise) and its backward;
    returns {LoRA parameter name: gradient or None}."""
    model.zero_grad()
    model(**inputs).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if "lora_" in name}


def assert_every_adapter_trains(grads):
    dead = sorted(name for name, grad in grads.items() if grad is None or not grad.abs().sum())
    assert not dead, f"{len(dead)} of {len(grads)} LoRA parameters get no gradient: {dead[:6]}"


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_lora_reaches_every_adapted_projection(family):
    """Every to_qkv / to_out / fc1 / fc2 gets an adapter, and every adapter a nonzero gradient (CrossViT's
    cross-attention to_qkv included)."""
    base = tiny_model(family)
    adapted = sum(name.rsplit(".", 1)[-1] in ("to_qkv", "to_out", "fc1", "fc2") for name, _ in base.named_modules())
    model = get_peft_model(base, lora_config()).train()
    grads = lora_gradients(model, tiny_inputs(family))
    assert len(grads) == 2 * adapted  # lora_A and lora_B per adapted projection
    assert_every_adapter_trains(grads)


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_lora_trains_saves_reloads_and_merges(family, tmp_path):
    """A few SGD steps change the logits; ``save_pretrained`` + ``PeftModel.from_pretrained`` on the same base
    weights gives identical logits; ``merge_and_unload`` gives the unmerged logits to float tolerance."""
    config, inputs = tiny_config(family), tiny_inputs(family)
    base = model_class(family)(config).eval()
    base_weights = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    model = get_peft_model(base, lora_config())
    before = model(**inputs).logits.detach()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    trained = model.eval()(**inputs).logits.detach()
    assert (trained - before).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "adapter")

    fresh = model_class(family)(config)
    fresh.load_state_dict(base_weights)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    torch.testing.assert_close(reloaded(**inputs).logits, trained, rtol=0, atol=0)
    merged = reloaded.merge_and_unload()
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(merged(**inputs).logits, trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", [True, False], ids=["classifier", "base"])
@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_input_embeddings_are_the_patch_embedding(family, head):
    """``get_input_embeddings`` is the module the pixels enter through: the patch embedding (CrossViT: the
    small-patch stream's, the stream ``hidden_size`` names)."""
    model = tiny_model(family, head=head)
    base = model.vitx if head else model
    expected = base.sm_embeddings if family == "crossvit" else base.embeddings
    assert model.get_input_embeddings() is expected.patch_embeddings


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_peft_recipe_frozen_base_and_reentrant_checkpointing(family):
    """PEFT's recipe: frozen base, ``enable_input_require_grads()``, reentrant activation checkpointing. Every LoRA
    parameter gets the gradient it gets without checkpointing (CrossViT: through both streams)."""
    inputs = tiny_inputs(family)
    model = get_peft_model(tiny_model(family), lora_config()).train()
    plain = {name: grad.clone() for name, grad in lora_gradients(model, inputs).items()}
    assert_every_adapter_trains(plain)

    base = model.get_base_model()
    base.enable_input_require_grads()
    enable_activation_checkpointing(base, {"use_reentrant": True})
    checkpointed = lora_gradients(model, inputs)
    assert_every_adapter_trains(checkpointed)
    for name, grad in checkpointed.items():
        torch.testing.assert_close(grad, plain[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
