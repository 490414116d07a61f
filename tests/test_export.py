"""torch.export and ONNX (dynamo and legacy exporters, run with onnxruntime) with a dynamic batch axis: every
model built of vitx blocks (the classifiers, and the MAE pretraining model with its masking noise as an input)
exported at batch 2 and run at batch 3 agrees with eager."""

import warnings

import onnxruntime
import pytest
import torch

from families import BUILT_OF_BLOCKS, ONE_BLOCK, tiny_inputs, tiny_model


class Logits(torch.nn.Module):
    """The classifier as exporters take it: pixels in, logits out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values).logits


class Reconstruction(Logits):
    """The masked autoencoder as exporters take it: pixels and masking noise in, reconstructed patches out."""

    def forward(self, pixel_values, noise):
        return self.model(pixel_values, noise=noise).logits


def run_onnx(path, inputs):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {given.name: tensor.numpy() for given, tensor in zip(session.get_inputs(), inputs.values())}
    return torch.from_numpy(session.run(None, feed)[0])


def exported_inputs(family, batch):
    """What the exported module takes: ``tiny_inputs`` less the labels (the MAE keeps its noise)."""
    inputs = tiny_inputs(family, batch)
    inputs.pop("labels", None)
    return inputs


@pytest.mark.parametrize("family", BUILT_OF_BLOCKS)
def test_export_and_onnx_runtime_agree_with_eager_at_another_batch_size(family, tmp_path):
    """All three exporters are tried and every failure reported, each with its error or its largest difference."""
    example, inputs = exported_inputs(family, batch=2), exported_inputs(family, batch=3)
    model = (Reconstruction if "noise" in example else Logits)(tiny_model(family, **ONE_BLOCK[family]))
    with torch.no_grad():
        expected = model(**inputs)
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic_shapes = {name: {0: batch} for name in example}
    program = None

    def torch_export():
        nonlocal program
        program = torch.export.export(model, tuple(example.values()), dynamic_shapes=dynamic_shapes)
        return program.module()(*inputs.values())

    def onnx_dynamo():
        exported = program or torch.export.export(model, tuple(example.values()), dynamic_shapes=dynamic_shapes)
        torch.onnx.export(exported, tuple(example.values()), f=tmp_path / "dynamo.onnx", dynamo=True)
        return run_onnx(tmp_path / "dynamo.onnx", inputs)

    def onnx_legacy():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still used
            torch.onnx.export(model, tuple(example.values()), tmp_path / "legacy.onnx", dynamo=False,
                              input_names=list(example), output_names=["logits"],
                              dynamic_axes={name: {0: "batch"} for name in example})
        return run_onnx(tmp_path / "legacy.onnx", inputs)

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
