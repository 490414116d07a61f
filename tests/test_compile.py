"""torch.compile of a whole training step (forward with labels, loss, backward) in one graph, on every family.
(The label check, skipped while compiling, keeps its clear error in eager mode: test_image_classification.py.)"""

import pytest
import torch

from families import FAMILIES, ONE_BLOCK, tiny_model, tiny_pixels

LABELS = torch.tensor([1, 7])


def gradients(forward, model, pixels):
    model.zero_grad()
    loss = forward(pixels, labels=LABELS).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("family", FAMILIES)
def test_training_step_compiles_to_one_graph(family):
    """``fullgraph=True`` raises at any graph break. The second step must reuse the first one's graph (a training
    loop recompiling is a slow loop), and loss and gradients are eager's. ``aot_eager`` traces the backward too
    (functionalized, as inductor would get it) and skips only the code generation, which would add minutes."""
    torch._dynamo.reset()
    model, pixels = tiny_model(family, **ONE_BLOCK[family]).train(), tiny_pixels(family)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    gradients(compiled, model, pixels)
    with torch._dynamo.config.patch(error_on_recompile=True):
        loss, grads = gradients(compiled, model, pixels)
    torch._dynamo.reset()
    expected_loss, expected = gradients(model, model, pixels)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
