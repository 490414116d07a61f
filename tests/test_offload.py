"""accelerate's big-model loading: a model offloaded to disk computes what the in-memory model computes; the
modules a device map must not split exist."""

import pytest
import torch

from families import BUILT_OF_BLOCKS, FAMILIES, model_class, tiny_model, tiny_pixels


@pytest.mark.parametrize("family", FAMILIES)
def test_disk_offloaded_logits_equal_in_memory_logits(family, tmp_path):
    """``from_pretrained(device_map="auto")`` with almost no memory puts the weights on disk; accelerate's hooks
    bring each module's weights in for its forward, so every parameter must be used inside its module."""
    model, pixels = tiny_model(family), tiny_pixels(family)
    model.save_pretrained(tmp_path / "model")
    offloaded = model_class(family).from_pretrained(tmp_path / "model", device_map="auto", max_memory={"cpu": 20_000},
                                                    offload_folder=tmp_path / "offload").eval()
    assert set(offloaded.hf_device_map.values()) == {"disk"}
    assert all(p.device.type == "meta" for p in offloaded.parameters())  # the weights really are elsewhere
    with torch.no_grad():
        expected, logits = model(pixels).logits, offloaded(pixels).logits
    assert not logits.isnan().any()
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_no_split_modules_name_real_modules(family):
    model = tiny_model(family)
    present = {type(m).__name__ for m in model.modules()}
    assert set(model._no_split_modules) <= present
