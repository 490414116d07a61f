"""Forward hooks and the attribution tools built on them (captum) see what each module returned, in every grad mode."""

import contextlib

import pytest
import torch
from captum.attr import LayerActivation, LayerGradCam

from families import BUILT_OF_BLOCKS, FAMILIES, tiny_inputs, tiny_model, tiny_pixels
from modeling_vitx import VitxLayer


def tensors_in(value):
    """Every tensor in a module's output: a tensor, a (nested) tuple or list, or a ``ModelOutput``."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):  # ModelOutput is an OrderedDict of its non-None fields
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in tensors_in(item)]
    return []


def first_block(model):
    """The first transformer block (``VitxLayer``) of any family: the layer attribution tools hook."""
    return next(module for module in model.modules() if isinstance(module, VitxLayer))


GRAD_MODES = ("grad", "no_grad", "inference_mode", "frozen")


def grad_mode(model, mode):
    """The context a forward runs in: autograd on, ``no_grad``, ``inference_mode``, or on with frozen parameters."""
    if mode == "frozen":
        model.requires_grad_(False)
    return {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode, contextlib.nullcontext)()


def record_outputs(model, inputs, mode):
    """Run ``model`` on ``inputs`` (with its loss) in grad ``mode`` with a hook on every submodule; returns
    {module name: [(tensor it returned, copy taken when it returned), ...]} for the modules whose forward ran."""
    names = {module: name or "<model>" for name, module in model.named_modules()}
    recorded = {}

    def record(module, inputs, output):
        recorded.setdefault(names[module], []).extend((t, t.detach().clone()) for t in tensors_in(output))

    handles = [module.register_forward_hook(record) for module in model.modules()]
    with grad_mode(model, mode):
        model(**inputs, output_attentions=True, output_hidden_states=True)
    for handle in handles:
        handle.remove()
    return recorded


@pytest.mark.parametrize("mode", GRAD_MODES)
@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_no_module_output_is_modified_after_it_returns(family, mode):
    """A hook on every submodule keeps each returned tensor and a copy; after the forward they must still agree
    (in-place residual sums or activations on a returned tensor would make feature extraction read wrong values)."""
    recorded = record_outputs(tiny_model(family), tiny_inputs(family), mode)
    changed = [f"{name}[{i}]: max change {(kept - copy).abs().max().item():.3g}"
               for name, pairs in recorded.items() for i, (kept, copy) in enumerate(pairs) if not torch.equal(kept, copy)]
    assert not changed, f"{len(changed)} module outputs changed after they were returned: {changed[:8]}"


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_every_module_runs_its_own_forward(family):
    """Each module's parameters are used through its forward, so its hooks (PEFT's, accelerate's offload) see them:
    every module but the containers runs."""
    model = tiny_model(family)
    containers = {name for name, module in model.named_modules()
                  if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict))}
    ran = set(record_outputs(model, tiny_inputs(family), "grad"))
    never_ran = {name or "<model>" for name, _ in model.named_modules()} - containers - ran
    assert not never_ran, f"modules whose forward never ran: {sorted(never_ran)}"


@pytest.mark.parametrize("family", FAMILIES)
def test_captum_layer_activation_is_the_blocks_output(family):
    """captum's ``LayerActivation`` on a block (run without autograd) and a plain hook during an ordinary forward both
    give what the block computes on its input, recomputed without hooks from the model's ``hidden_states[0]``; the
    hooks change no output."""
    model = tiny_model(family)
    block, pixels, seen = first_block(model), tiny_pixels(family), []
    handle = block.register_forward_hook(lambda module, inputs, output: seen.append(output))
    hooked = model(pixels).logits
    handle.remove()
    activation = LayerActivation(lambda x: model(x).logits, block).attribute(pixels)
    with torch.no_grad():
        plain = model(pixels, output_hidden_states=True)
        recomputed = block(plain.hidden_states[0])
    assert torch.is_tensor(seen[0]) and torch.is_tensor(activation)
    torch.testing.assert_close(hooked.detach(), plain.logits, rtol=0, atol=0)
    torch.testing.assert_close(seen[0].detach(), recomputed, rtol=0, atol=0)
    torch.testing.assert_close(activation, recomputed, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_captum_layer_grad_cam_on_a_block(family):
    """``LayerGradCam`` on a block works because the block returns a tensor; its attribution is Grad-CAM's
    sum over tokens of (block output x mean over width of d logit / d block output)."""
    model = tiny_model(family)
    block, pixels, target = first_block(model), tiny_pixels(family), 3
    attribution = LayerGradCam(lambda x: model(x).logits, block).attribute(pixels, target=target)

    kept = []
    handle = block.register_forward_hook(lambda module, inputs, output: kept.append(output))
    logits = model(pixels).logits
    handle.remove()
    (grad,) = torch.autograd.grad(logits[:, target].sum(), kept[0])
    expected = (grad.mean(dim=2, keepdim=True) * kept[0]).sum(dim=1, keepdim=True)
    assert attribution.shape == (pixels.shape[0], 1, kept[0].shape[-1])
    torch.testing.assert_close(attribution, expected.detach(), rtol=1e-5, atol=1e-6)


def stream_attentions(model, stream):
    """The self-attention modules of one token stream's blocks, in the order they run: the generic stream's
    (``"attentions"``) or CrossViT's large-patch stream's (``"lg_attentions"``)."""
    return [module.attention for name, module in model.named_modules()
            if isinstance(module, VitxLayer) and (".lg_encoder." in name) == (stream == "lg_attentions")]


@pytest.mark.parametrize("family", FAMILIES)
def test_output_attentions_returns_the_map_each_layer_used(family):
    """With blocks returning tensors, ``output_attentions=True`` still gives each layer's map, in order: the softmax
    of the scaled query-key products recomputed from the input a hook saw (the landmark encoder's Nystrom maps
    approximate that, so there only the next check holds), and applied to the values, the attention output the hook
    saw."""
    model, pixels = tiny_model(family), tiny_pixels(family)
    streams = ("attentions", "lg_attentions") if family == "crossvit" else ("attentions",)
    modules = {stream: stream_attentions(model, stream) for stream in streams}
    seen = {}

    def record(module, args, output):  # returns None: a hook's return value would replace the output
        seen[module] = (args[0], output[0])

    handles = [module.register_forward_hook(record) for stream in streams for module in modules[stream]]
    with torch.no_grad():
        out = model(pixels, output_attentions=True)
        for handle in handles:
            handle.remove()
        for stream in streams:
            assert len(out[stream]) == len(modules[stream]) > 0
            for attention, attn in zip(modules[stream], out[stream]):
                x, output = seen[attention]
                q, k, v = (t.transpose(1, 2) for t in attention.to_qkv(attention.norm(x)).unflatten(
                    -1, (3, attention.heads, -1)).unbind(2))
                if family != "landmark":
                    expected = (q @ k.transpose(-1, -2) * attention.scale).softmax(dim=-1)
                    torch.testing.assert_close(attn, expected, rtol=1e-5, atol=1e-6)
                values = attn @ v
                if getattr(attention, "res_conv", None) is not None:
                    values = values + attention.res_conv(v)
                torch.testing.assert_close(attention.to_out(values.transpose(1, 2).flatten(2)), output,
                                           rtol=1e-4, atol=1e-5)
