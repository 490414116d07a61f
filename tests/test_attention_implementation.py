"""Which attention path runs: SDPA by default in every dtype and grad mode, the explicit softmax where maps are
asked for or ``eager`` is configured (``set_attn_implementation``), the same numbers on both; attention maps
that gradients reach."""

import collections
import copy

import pytest
import torch

from families import FAMILIES, tiny_model, tiny_pixels
from modeling_vitx import VitxAttention, VitxLandmarkAttention

# SDPA calls per forward of each attention module on its default path (landmark attention: both outer products)
SDPA_CALLS = {VitxAttention: 1, VitxLandmarkAttention: 2}


def spy_on_sdpa(monkeypatch, model):
    """Record the calls of ``F.scaled_dot_product_attention`` from now on, each as the name of ``model``'s
    attention module that made it (None: outside any); returns that list."""
    calls, running, real = [], [None], torch.nn.functional.scaled_dot_product_attention
    for name, module in model.named_modules():
        if isinstance(module, VitxAttention):
            module.register_forward_pre_hook(lambda module, args, name=name: running.__setitem__(0, name))
            module.register_forward_hook(lambda module, args, out: running.__setitem__(0, None))

    def spy(*args, **kwargs):
        calls.append(running[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


def default_path_calls(model):
    """What ``spy_on_sdpa`` records for one forward of ``model`` on the default path: each attention module's
    calls, by name."""
    return collections.Counter({name: SDPA_CALLS[type(module)] for name, module in model.named_modules()
                                if isinstance(module, VitxAttention)})


@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_by_default_explicit_softmax_for_maps(family, monkeypatch):
    """Every attention module runs SDPA by default (and nothing else does); with ``output_attentions=True`` none
    does, and the logits are the same."""
    model, pixels = tiny_model(family), tiny_pixels(family)
    calls = spy_on_sdpa(monkeypatch, model)
    sdpa = model(pixels).logits
    assert collections.Counter(calls) == default_path_calls(model)
    with_maps = model(pixels, output_attentions=True).logits
    assert collections.Counter(calls) == default_path_calls(model), "output_attentions=True called SDPA"
    torch.testing.assert_close(sdpa, with_maps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype, grad", [(torch.bfloat16, True), (torch.bfloat16, False), (torch.float32, True)])
def test_attention_path_is_the_configured_one_in_every_mode(monkeypatch, dtype, grad):
    """SDPA in every dtype and grad mode unless `eager` is named (no machine-specific switch)."""
    model = tiny_model("vit").to(dtype).train()
    calls = spy_on_sdpa(monkeypatch, model)
    img = torch.randn(2, 3, 32, 32, dtype=dtype)
    with torch.set_grad_enabled(grad):
        logits = model(img).logits
        assert collections.Counter(calls) == default_path_calls(model)
        model.set_attn_implementation("eager")
        eager = model(img).logits
        assert collections.Counter(calls) == default_path_calls(model), "eager attention called SDPA"
    with torch.no_grad():
        reference = copy.deepcopy(model).float()(img.float()).logits  # float32, the same weights
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    for result in (logits, eager):
        torch.testing.assert_close(result.float(), reference, atol=tolerance, rtol=tolerance)
    if grad:
        eager.float().sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_set_attn_implementation_switches_the_path(family, monkeypatch):
    """``set_attn_implementation("eager")`` runs the explicit softmax (no SDPA call), ``("sdpa")`` SDPA, as loading
    with ``attn_implementation=`` does; both compute the same logits."""
    model, pixels = tiny_model(family), tiny_pixels(family)
    calls = spy_on_sdpa(monkeypatch, model)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    eager = model(pixels).logits
    assert not calls, f"eager attention called SDPA {len(calls)} times"
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    sdpa = model(pixels).logits
    assert collections.Counter(calls) == default_path_calls(model)
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
