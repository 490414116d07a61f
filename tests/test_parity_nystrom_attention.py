"""Parity with nystrom-attention: vitx's landmark encoder, converted from a ``Nystromformer``, computes what it
computes on the same weights, with and without the residual convolution, at every kind of landmark padding."""

import pytest
import torch

from references import landmark_pair


@pytest.mark.parametrize("tokens", [16, 5, 65, 47, 100])  # padding: none, whole groups, part of one, both
@pytest.mark.parametrize("residual_conv_kernel", [5, 0])
def test_landmark_encoder_matches_nystromformer(tokens, residual_conv_kernel):
    reference, _, model, _ = landmark_pair(residual_conv_kernel)
    encoder = model.vitx.encoder
    x = torch.randn(3, tokens, 32)
    with torch.no_grad():
        ours = encoder(x).last_hidden_state
        # nystrom-attention scales its pseudo-inverse over the whole batch; per sample, the two agree
        per_sample = torch.cat([reference(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(ours, per_sample, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[:1], reference(x[:1]), atol=1e-4, rtol=1e-4)
