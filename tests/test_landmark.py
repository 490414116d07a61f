"""The landmark (Nystrom) encoder: built from a config, one path in every grad mode, self-attention only, memory
linear in the number of tokens (vit-pytorch README's 2048x2048 example in under 3 GB). Parity with nystrom-attention:
test_parity_nystrom_attention.py."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from configuration_vitx import VitxConfig
from helpers import run_isolated, tiny_vit_kwargs
from modeling_vitx import LandmarkEncoder, VitxForImageClassification


def landmark_encoder(**options):
    """A standalone landmark encoder of the tiny ViT's sizes."""
    return LandmarkEncoder.from_config(VitxConfig(**tiny_vit_kwargs(encoder="landmark", encoder_kwargs=options)))


def test_landmark_encoder_from_config():
    encoder = landmark_encoder(num_landmarks=8)
    out = encoder(torch.randn(2, 65, 32), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 65, 32) and len(out.hidden_states) == 3
    attention = encoder.layers[0].attention
    assert (attention.num_landmarks, attention.pinv_iterations, attention.res_conv.kernel_size) == (8, 6, (33, 1))
    assert not encoder.normalizes_output and encoder.returns_attentions and encoder.returns_hidden_states


@pytest.mark.parametrize("encoder", ["vit", "landmark"])
@pytest.mark.parametrize("autocast", [False, True])
def test_same_numbers_with_and_without_autograd(encoder, autocast):
    """One path in every grad mode: the same logits and the same dtypes with and without autograd, also under
    bfloat16 autocast (whose low-precision branches join a float32 residual stream)."""
    kwargs = {"encoder": "landmark", "encoder_kwargs": {"num_landmarks": 16}} if encoder == "landmark" else {}
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(**kwargs, qkv_bias=True))).eval()
    img = torch.randn(3, 3, 32, 32)  # 65 tokens: 15 of landmark padding
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            untracked = model(img, output_hidden_states=True)
        tracked = model(img, output_hidden_states=True)
    assert [h.dtype for h in untracked.hidden_states] == [h.dtype for h in tracked.hidden_states]
    torch.testing.assert_close(untracked.logits, tracked.logits.detach(), atol=1e-6, rtol=1e-6)
    tracked.logits.float().sum().backward()
    assert model.vitx.encoder.layers[0].attention.to_qkv.weight.grad.abs().sum() > 0


def test_landmark_attention_takes_no_context():
    attention = landmark_encoder(num_landmarks=8).layers[0].attention
    with pytest.raises(ValueError, match="self-attention only"):
        attention(torch.randn(1, 65, 32), context=torch.randn(1, 9, 32))


class _LargestTensor(TorchFunctionMode):
    """Records the largest number of elements any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                self.largest = max(self.largest, t.numel())
        return out


def test_landmark_never_builds_a_tokens_by_tokens_tensor():
    config = VitxConfig(image_size=(32, 256), patch_size=4, num_classes=10, dim=16, depth=1, heads=2, mlp_dim=32,
                        dim_head=8, encoder="landmark", encoder_kwargs={"num_landmarks": 16})
    model = VitxForImageClassification(config).eval()
    tokens = 1 + 8 * 64
    img = torch.randn(1, 3, 32, 256)
    with torch.no_grad(), _LargestTensor() as probe:
        model(img)
    assert probe.largest < 2 * 16 * tokens * 8  # linear in tokens: (heads, tokens, landmarks or dim) at most
    with torch.no_grad():
        maps = model(img, output_attentions=True).attentions
    assert [m.shape for m in maps] == [(1, 2, tokens, tokens)]


def test_landmark_seed_example_2048_in_under_3gb(tmp_path):
    """vit-pytorch README's D2F example: 2048x2048, patch 32 (4,096 tokens), dim 512, depth 12, heads 8, 256 landmarks."""
    result = run_isolated("""
        import json, resource, torch
        from configuration_vitx import VitxConfig
        from modeling_vitx import VitxForImageClassification
        config = VitxConfig(image_size=2048, patch_size=32, num_classes=1000, dim=512, depth=12, heads=8,
                            mlp_dim=2048, encoder="landmark", encoder_kwargs={"num_landmarks": 256})
        model = VitxForImageClassification(config).eval()
        with torch.inference_mode():
            logits = model(torch.randn(1, 3, 2048, 2048)).logits
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(json.dumps({"shape": list(logits.shape), "peak_gb": peak_gb}))
    """, tmp_path, hide_project=False)
    assert result["shape"] == [1, 1000]
    assert result["peak_gb"] < 3.0
