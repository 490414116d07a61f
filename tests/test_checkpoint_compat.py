"""Checkpoints saved by earlier vitx code load bit-exact: the same weights, the same logits."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_vitx import CrossVitxForImageClassification, VitxForImageClassification
from user_encoders import Mixer

SAVED = Path(__file__).parent / "fixtures" / "saved_by_a9708d2"
FOLDERS = {
    "vit": dict(),
    "vit-classic-mean": dict(),
    "landmark": dict(),
    "x-transformers": dict(),
    "module": dict(encoder_module=Mixer(dim=32, tokens=65)),
    "crossvit": dict(),
}


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_folder_saved_by_earlier_code_gives_the_same_logits(name):
    if name == "x-transformers":
        pytest.importorskip("x_transformers")
    model_class = CrossVitxForImageClassification if name == "crossvit" else VitxForImageClassification
    model, info = model_class.from_pretrained(SAVED / name, output_loading_info=True, **FOLDERS[name])
    assert not any(info.values()), info  # no missing, unexpected or mismatched weight
    saved, state = load_file(SAVED / name / "model.safetensors"), model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[key], state[key]) for key in saved)  # bit-exact, none re-initialized
    expected = load_file(SAVED / name / "expected.safetensors")
    with torch.no_grad():
        logits = model.eval()(expected["pixel_values"]).logits
    torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=1e-5)
