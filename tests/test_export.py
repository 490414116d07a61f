"""torch.export and ONNX (dynamo and legacy exporters, run with onnxruntime) with a dynamic batch axis: every
family exported at batch 2 and run at batch 3 agrees with eager."""

import warnings

import onnxruntime
import pytest
import torch

from families import FAMILIES, ONE_BLOCK, tiny_model, tiny_pixels


class Logits(torch.nn.Module):
    """The classifier as exporters take it: pixels in, logits out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values).logits


def run_onnx(path, pixels):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: pixels.numpy()})[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_export_and_onnx_runtime_agree_with_eager_at_another_batch_size(family, tmp_path):
    """All three exporters are tried and every failure reported, each with its error or its largest difference."""
    model = Logits(tiny_model(family, **ONE_BLOCK[family]))
    example, pixels = tiny_pixels(family, batch=2), tiny_pixels(family, batch=3)
    with torch.no_grad():
        expected = model(pixels)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = None

    def torch_export():
        nonlocal program
        program = torch.export.export(model, (example,), dynamic_shapes={"pixel_values": {0: batch}})
        return program.module()(pixels)

    def onnx_dynamo():
        exported = program or torch.export.export(model, (example,), dynamic_shapes={"pixel_values": {0: batch}})
        torch.onnx.export(exported, (example,), f=tmp_path / "dynamo.onnx", dynamo=True)
        return run_onnx(tmp_path / "dynamo.onnx", pixels)

    def onnx_legacy():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still used
            torch.onnx.export(model, (example,), tmp_path / "legacy.onnx", dynamo=False, input_names=["pixel_values"],
                              output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}})
        return run_onnx(tmp_path / "legacy.onnx", pixels)

    failures = []
    for exporter in (torch_export, onnx_dynamo, onnx_legacy):
        try:
            logits = exporter()
        except Exception as error:  # every exporter's failure is reported, not only the first
            # the cause is at the end of exporters' long messages (onnxruntime's shapes, the dynamo summary)
            failures.append(f"{exporter.__name__}: {type(error).__name__}: ...{' '.join(str(error).split())[-400:]}")
            continue
        if logits.shape != expected.shape or not torch.allclose(logits, expected, rtol=1e-4, atol=1e-4):
            difference = (logits - expected).abs().max().item() if logits.shape == expected.shape else "n/a"
            failures.append(f"{exporter.__name__}: shape {tuple(logits.shape)}, max difference {difference}")
    assert not failures, "\n".join(failures)
