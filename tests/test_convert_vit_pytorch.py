"""scripts/convert_vit_pytorch.py: vit-pytorch ViT, CrossViT and efficient-ViT-with-Nystromformer checkpoints ->
vitx folders that load with the converted settings, compute the reference's logits and run in the pipeline;
the processor it writes; the inputs it refuses. Numeric parity on the same weights: test_parity_vit_pytorch.py."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from transformers import AutoImageProcessor
from vit_pytorch.cross_vit import CrossViT
from vit_pytorch.vit import ViT

import convert_vit_pytorch
from helpers import assert_runs_in_pipeline, convert_with_script, tiny_cross_vit_kwargs, tiny_vit_kwargs
from modeling_vitx import CrossVitxForImageClassification, VitxForImageClassification
from references import landmark_pair


def test_vit_script_writes_loadable_folder(tmp_path):
    kwargs = tiny_vit_kwargs(dropout=0.1, emb_dropout=0.1, image_size=(32, 48), patch_size=(4, 8))
    reference = ViT(**kwargs).eval()
    folder = convert_with_script(tmp_path, "vit", reference, kwargs)
    model = VitxForImageClassification.from_pretrained(folder).eval()
    assert model.config.dropout == 0.1
    img = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(img).logits, reference(img), atol=1e-5, rtol=1e-5)
    # the processor feeds what vit-pytorch's examples do: Resize to image_size + ToTensor, pixels in [0, 1]
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 40), dtype=np.uint8))  # grayscale
    expected = transforms.Compose([transforms.Resize((32, 48)), transforms.ToTensor()])(image.convert("RGB"))
    pixel_values = AutoImageProcessor.from_pretrained(folder)(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values[0], expected, atol=1 / 255 + 1e-6, rtol=0)  # resize rounding apart
    assert_runs_in_pipeline(folder, reference)


def test_cross_vit_script_writes_loadable_folder(tmp_path):
    kwargs = tiny_cross_vit_kwargs(dropout=0.2, emb_dropout=0.05)
    reference = CrossViT(**kwargs).eval()
    folder = convert_with_script(tmp_path, "cross_vit", reference, kwargs)
    model = CrossVitxForImageClassification.from_pretrained(folder).eval()
    assert (model.config.dropout, model.config.emb_dropout) == (0.2, 0.05)
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(img).logits, reference(img), atol=1e-5, rtol=1e-5)
    assert_runs_in_pipeline(folder, reference)


def test_efficient_nystrom_script_writes_loadable_folder(tmp_path):
    _, vit, _, kwargs = landmark_pair()
    folder = convert_with_script(tmp_path, "efficient_nystrom", vit, kwargs)
    loaded = VitxForImageClassification.from_pretrained(folder).eval()
    assert loaded.config.encoder == "landmark" and loaded.config.encoder_kwargs["num_landmarks"] == 16
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(img).logits, vit(img), atol=1e-4, rtol=1e-4)
    assert_runs_in_pipeline(folder, vit)
    with pytest.raises(ValueError, match="only pool='cls' converts"):
        convert_vit_pytorch.efficient_nystrom_config({**kwargs, "pool": "mean"})


def test_script_takes_the_normalization_the_model_was_trained_with(tmp_path):
    kwargs = tiny_vit_kwargs()
    reference = ViT(**kwargs).eval()
    imagenet = ["--image-mean", "0.485", "0.456", "0.406", "--image-std", "0.229", "0.224", "0.225"]
    folder = convert_with_script(tmp_path, "vit", reference, kwargs, *imagenet)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["image_std"] == [0.229, 0.224, 0.225]
    assert processor["size"] == {"height": 32, "width": 32}
    with pytest.raises(ValueError, match="`image_mean` must be one number or 3 numbers \\(one per channel\\), "
                                         "got \\[0.1, 0.2\\]"):
        convert_with_script(tmp_path, "vit", reference, kwargs, "--image-mean", "0.1", "0.2")
    with pytest.raises(ValueError, match="`image_std` values must be positive"):
        convert_with_script(tmp_path, "vit", reference, kwargs, "--image-std", "0")


def test_vit_bad_inputs_are_named():
    reference = ViT(**tiny_vit_kwargs())
    with pytest.raises(ValueError, match="unknown vit-pytorch ViT kwargs \\['mystery'\\]"):
        convert_vit_pytorch.convert("vit", reference.state_dict(), {**tiny_vit_kwargs(), "mystery": 1})
    with pytest.raises(ValueError, match="--model 'vitt' is not supported"):
        convert_vit_pytorch.convert("vitt", reference.state_dict(), tiny_vit_kwargs())
    state = reference.state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="checkpoint keys that vitx cannot place: \\['extra.weight'\\]"):
        convert_vit_pytorch.convert("vit", state, tiny_vit_kwargs())
    with pytest.raises(KeyError, match="checkpoint has no `mlp_head.weight`"):
        convert_vit_pytorch.convert("vit", {k: v for k, v in reference.state_dict().items() if "mlp_head" not in k},
                                    tiny_vit_kwargs())


def test_cross_vit_bad_inputs_are_named():
    reference = CrossViT(**tiny_cross_vit_kwargs())
    with pytest.raises(ValueError, match="unknown vit-pytorch CrossViT kwargs \\['patch_size'\\]"):
        convert_vit_pytorch.convert("cross_vit", reference.state_dict(), {**tiny_cross_vit_kwargs(), "patch_size": 4})
    state = reference.state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="checkpoint keys that vitx cannot place: \\['extra.weight'\\]"):
        convert_vit_pytorch.convert("cross_vit", state, tiny_cross_vit_kwargs())
    with pytest.raises(KeyError, match="checkpoint has no `lg_mlp_head.1.weight`"):
        convert_vit_pytorch.convert("cross_vit", {k: v for k, v in reference.state_dict().items()
                                                  if k != "lg_mlp_head.1.weight"}, tiny_cross_vit_kwargs())
