"""A user's own encoder module, as a vitx user would write it (importable from a fresh process too)."""

from torch import nn


class Mixer(nn.Module):
    """A token-mixing MLP: (batch, tokens, dim) -> same shape."""

    def __init__(self, dim=32, tokens=65):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(tokens, tokens)

    def forward(self, x):
        return x + self.mix(self.norm(x).transpose(1, 2)).transpose(1, 2)
