"""The attention implementation switch (``set_attn_implementation``) and attention maps that gradients reach."""

import pytest
import torch

from families import FAMILIES, tiny_model, tiny_pixels


def spy_on_sdpa(monkeypatch):
    """Count calls of ``F.scaled_dot_product_attention`` from now on; returns the list of calls."""
    calls, real = [], torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("family", FAMILIES)
def test_set_attn_implementation_switches_the_path(family, monkeypatch):
    """``set_attn_implementation("eager")`` runs the explicit softmax (no SDPA call), ``("sdpa")`` SDPA, as loading
    with ``attn_implementation=`` does; both compute the same logits."""
    model, pixels = tiny_model(family), tiny_pixels(family)
    calls = spy_on_sdpa(monkeypatch)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    eager = model(pixels).logits
    assert not calls, f"eager attention called SDPA {len(calls)} times"
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    sdpa = model(pixels).logits
    assert calls, "sdpa attention never called SDPA"
    torch.testing.assert_close(eager, sdpa, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_attn_implementation_is_named(family):
    model = tiny_model(family)
    with pytest.raises(ValueError, match="no_such_attention"):
        model.set_attn_implementation("no_such_attention")


@pytest.mark.parametrize("family", FAMILIES)
def test_returned_attention_maps_are_in_the_autograd_graph(family):
    """Gradient attribution on attention maps: the logits are computed from the maps ``output_attentions=True``
    returns (the landmark encoder's Nystrom maps included), so each map gets a gradient."""
    model = tiny_model(family)
    out = model(tiny_pixels(family), output_attentions=True)
    names, maps = zip(*[(f"{name}[{i}]", a) for name, value in out.items() if name.endswith("attentions")
                        for i, a in enumerate(value)])
    grads = torch.autograd.grad(out.logits.sum(), maps, allow_unused=True)
    unreached = [name for name, grad in zip(names, grads) if grad is None or not grad.abs().sum()]
    assert not unreached, f"{len(unreached)} of {len(maps)} maps get no gradient from the logits: {unreached}"
