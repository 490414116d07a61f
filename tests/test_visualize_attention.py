"""Attention as pictures: the rollout, the maps a figure shows, and scripts/visualize_attention.py end to end."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import DeiTImageProcessor, ViTImageProcessor

import visualize_attention as va
from configuration_vitx import CrossVitxConfig, VitxConfig
from helpers import tiny_cross_vit_kwargs, tiny_vit_kwargs
from modeling_vitx import CrossVitxForImageClassification, VitxForImageClassification, VitxModel

DPI = 40  # the figures' layout does not depend on it; a low one keeps the tests fast

# the rollout


def softmax_stack(layers, batch=2, heads=4, tokens=6):
    return [torch.randn(batch, heads, tokens, tokens).softmax(dim=-1) for _ in range(layers)]


def test_rollout_rows_sum_to_one():
    rollout = va.attention_rollout(softmax_stack(3))
    assert rollout.shape == (2, 6, 6)
    assert (rollout >= 0).all()
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 6))


def test_rollout_by_hand_two_layers():
    layer1 = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]],     # head 1
                           [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]])    # head 2
    layer2 = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                           [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    # layer 1: head mean [[.5, .5, 0], [.5, .5, 0], [0, .25, .75]]; + identity; every row then sums to 2
    r1 = torch.tensor([[1.5, 0.5, 0.0], [0.5, 1.5, 0.0], [0.0, 0.25, 1.75]]) / 2
    # layer 2: head mean [[0, 0, 1], [.5, 0, .5], [0, 1, 0]]; + identity; / 2
    r2 = torch.tensor([[1.0, 0.0, 1.0], [0.5, 1.0, 0.5], [0.0, 1.0, 1.0]]) / 2
    # rollout = r2 @ r1, row by row:
    #   row 0: .5 * r1[0] + .5 * r1[2]                = [.375, .1875, .4375]
    #   row 1: .25 * r1[0] + .5 * r1[1] + .25 * r1[2] = [.3125, .46875, .21875]
    #   row 2: .5 * r1[1] + .5 * r1[2]                = [.125, .4375, .4375]
    expected = torch.tensor([[0.375, 0.1875, 0.4375], [0.3125, 0.46875, 0.21875], [0.125, 0.4375, 0.4375]])
    torch.testing.assert_close(r2 @ r1, expected)
    torch.testing.assert_close(va.attention_rollout([layer1[None], layer2[None]])[0], expected)
    assert not torch.allclose(r1 @ r2, expected)  # the order matters: later layers multiply from the left


def test_rollout_of_approximate_maps_by_hand():
    # a landmark-style map: a negative entry and rows that do not sum to 1
    approximate = torch.tensor([[[[1.1, -0.1], [0.3, 0.6]]]])
    # clamp -> [[1.1, 0], [.3, .6]]; + identity -> [[2.1, 0], [.3, 1.6]]; rows / (2.1, 1.9)
    expected = torch.tensor([[1.0, 0.0], [0.3 / 1.9, 1.6 / 1.9]])
    rollout = va.attention_rollout([approximate])[0]
    torch.testing.assert_close(rollout, expected)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2))


@pytest.mark.parametrize("attentions, message", [
    ([], "`attentions` must hold at least one layer's attention map, got none"),
    ([torch.rand(1, 2, 3, 4)], r"each attention map must be \(\.\.\., heads, tokens, tokens\), got \(1, 2, 3, 4\)"),
])
def test_rollout_bad_input(attentions, message):
    with pytest.raises(ValueError, match=message):
        va.attention_rollout(attentions)


# the maps a figure shows


def test_cls_attention_lands_on_its_patch_in_the_image():
    """On a 2x3 patch grid, a CLS token attending only to the patch at row 1, column 2 lights up that part of the image."""
    attention = torch.full((1, 2, 7, 7), 1 / 7)
    attention[0, :, 0] = 0
    attention[0, :, 0, 1 + 1 * 3 + 2] = 1
    maps = va.stream_attention("", [attention], (2, 3), has_cls=True)
    assert maps.rollout.shape == (2, 3) and maps.heads.shape == (2, 2, 3)
    assert divmod(int(maps.rollout.argmax()), 3) == (1, 2)
    assert torch.equal(maps.heads[0], torch.tensor([[0.0, 0, 0], [0, 0, 1]]))
    heat = va.upsample(maps.rollout, (40, 60))
    assert heat.shape == (40, 60) and heat.min() == 0 and heat.max() == 1
    assert heat[20:, 40:].mean() > 0.5 > heat[:20].mean()  # the bottom right sixth of the image


def test_mean_pool_reads_the_mean_over_queries():
    attention = torch.rand(1, 3, 4, 4).softmax(dim=-1)
    maps = va.stream_attention("", [attention], (2, 2), has_cls=False)
    torch.testing.assert_close(maps.heads, attention[0].mean(dim=-2).reshape(3, 2, 2))
    torch.testing.assert_close(maps.rollout, va.attention_rollout([attention])[0].mean(dim=0).reshape(2, 2))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_attention_maps_of_a_vit(pool):
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(pool=pool, image_size=(32, 16)))).eval()
    pixel_values = torch.randn(1, 3, 32, 16)
    maps = va.attention_maps(model, pixel_values)
    with torch.no_grad():
        outputs = model(pixel_values, output_attentions=True)
    prefix = int(pool == "cls")
    rows = va.attention_rollout(outputs.attentions)[0]
    rows = rows[0] if pool == "cls" else rows.mean(dim=0)
    torch.testing.assert_close(maps.streams[0].rollout, rows[prefix:].reshape(8, 4))  # 32x16 image in 4x4 patches
    last = outputs.attentions[-1][0]
    last = last[:, 0] if pool == "cls" else last.mean(dim=1)
    torch.testing.assert_close(maps.streams[0].heads, last[:, prefix:].reshape(4, 8, 4))
    assert maps.query == ("CLS token" if pool == "cls" else "mean over query tokens")
    assert maps.notes == ([] if pool == "cls" else ["pool='mean': no CLS token"])
    probabilities = outputs.logits[0].softmax(dim=-1)
    assert maps.label == model.config.id2label[int(probabilities.argmax())]
    assert maps.probability == pytest.approx(float(probabilities.max()))


def test_attention_maps_of_a_crossvit_one_rollout_per_stream():
    model = CrossVitxForImageClassification(CrossVitxConfig(**tiny_cross_vit_kwargs())).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    maps = va.attention_maps(model, pixel_values)
    outputs = model(pixel_values, output_attentions=True)
    assert [stream.name for stream in maps.streams] == ["small patches (4x4)", "large patches (8x8)"]
    small, large = maps.streams
    torch.testing.assert_close(small.rollout, va.attention_rollout(outputs.sm_attentions)[0, 0, 1:].reshape(8, 8))
    torch.testing.assert_close(large.rollout, va.attention_rollout(outputs.lg_attentions)[0, 0, 1:].reshape(4, 4))
    assert small.heads.shape == (2, 8, 8) and large.heads.shape == (3, 4, 4)


def test_attention_maps_of_the_landmark_encoder_are_its_approximations():
    config = VitxConfig(**tiny_vit_kwargs(), encoder="landmark", encoder_kwargs={"num_landmarks": 8,
                                                                                 "residual_conv_kernel": 3})
    model = VitxForImageClassification(config).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    maps = va.attention_maps(model, pixel_values)
    approximate = model(pixel_values, output_attentions=True).attentions
    torch.testing.assert_close(maps.streams[0].rollout, va.attention_rollout(approximate)[0, 0, 1:].reshape(8, 8))
    assert maps.notes == ["approximate maps (landmark encoder)"]


# the command line, end to end


def write_images(folder, sizes):
    """Random RGB images of the given (width, height) as PNG files."""
    rng = np.random.default_rng(0)
    paths = []
    for index, (width, height) in enumerate(sizes):
        paths.append(folder / f"image_{index}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    return [str(path) for path in paths]


def assert_figure(path, columns, rows):
    """A PNG that PIL opens, of the figure's size, with the heat maps' many colors drawn on it."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (int(va.ROW_WIDTH * columns * DPI), int(va.ROW_HEIGHT * rows * DPI))
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 200


@pytest.mark.parametrize("build", [
    lambda: VitxForImageClassification(VitxConfig(**tiny_vit_kwargs())),
    lambda: VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(pool="mean"))),
    lambda: VitxForImageClassification(VitxConfig(**tiny_vit_kwargs(), encoder="landmark",
                                                  encoder_kwargs={"num_landmarks": 8, "residual_conv_kernel": 3})),
    lambda: CrossVitxForImageClassification(CrossVitxConfig(**tiny_cross_vit_kwargs())),
], ids=["vit-cls", "vit-mean", "landmark", "crossvit"])
def test_cli_writes_one_figure_for_several_images(build, tmp_path):
    model = build()
    model.save_pretrained(tmp_path / "model")
    images = write_images(tmp_path, [(48, 40), (20, 30)])
    written = va.main(["--model", str(tmp_path / "model"), "--image", *images, "--output",
                       str(tmp_path / "out" / "attention.png"), "--dpi", str(DPI)])
    assert written == [tmp_path / "out" / "attention.png"]
    assert_figure(written[0], columns=1 + 2 * (2 if isinstance(model, CrossVitxForImageClassification) else 1),
                  rows=2)


def test_cli_one_figure_per_image_for_a_bare_grayscale_model(tmp_path):
    VitxModel(VitxConfig(**tiny_vit_kwargs(channels=1))).save_pretrained(tmp_path / "model")
    images = write_images(tmp_path, [(32, 32), (64, 48)])
    written = va.main(["--model", str(tmp_path / "model"), "--image", *images, "--output", str(tmp_path / "figures"),
                       "--dpi", str(DPI)])
    assert written == [tmp_path / "figures" / "image_0.png", tmp_path / "figures" / "image_1.png"]
    for path in written:
        assert_figure(path, columns=3, rows=1)
    model = va.load_model(str(tmp_path / "model"))
    assert type(model) is VitxModel  # no classification head is made up: the figure says there is none
    assert va.load_image(images[1], channels=1).mode == "L"


# image processing


def test_image_processor_from_the_folder_or_the_config(tmp_path):
    config = VitxConfig(**tiny_vit_kwargs(image_size=(32, 16)))
    default = va.load_image_processor(str(tmp_path), config)
    assert isinstance(default, ViTImageProcessor)
    assert (default.size["height"], default.size["width"]) == (32, 16)
    DeiTImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    cropping = va.load_image_processor(str(tmp_path), config)
    assert isinstance(cropping, DeiTImageProcessor)
    image = Image.open(write_images(tmp_path, [(100, 60)])[0]).convert("RGB")
    pixel_values = cropping(images=image, return_tensors="pt")["pixel_values"]
    # after a center crop the patch grid covers the model's input, not the file: that is what gets drawn
    assert va.display_image(image, cropping, pixel_values).size == (32, 32)
    assert va.display_image(image, default, default(images=image, return_tensors="pt")["pixel_values"]).size == (100, 60)


def test_large_images_are_drawn_at_most_the_display_size(tmp_path):
    image = Image.new("RGB", (2000, 1000))
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    assert va.display_image(image, processor, None).size == (va.MAX_DISPLAY_SIZE, va.MAX_DISPLAY_SIZE // 2)


# errors


def test_missing_image_is_named(tmp_path):
    VitxForImageClassification(VitxConfig(**tiny_vit_kwargs())).save_pretrained(tmp_path / "model")
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match=f"image file '{missing}' does not exist"):
        va.main(["--model", str(tmp_path / "model"), "--image", str(missing), "--output", str(tmp_path / "a.png")])


def test_unreadable_image_is_named(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(ValueError, match=f"image file '{broken}' cannot be read as an image"):
        va.load_image(broken)


def test_model_whose_maps_cannot_be_returned(tmp_path):
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs()), encoder_module=nn.Linear(32, 32)).eval()
    with pytest.raises(ValueError, match=r"cannot draw attention for VitxForImageClassification \(encoder 'module'\): "
                                         r"asking it for attention maps failed: `output_attentions=True` cannot be "
                                         r"served: the encoder module torch\.nn\.modules\.linear\.Linear"):
        va.attention_maps(model, torch.randn(1, 3, 32, 32))
    model.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match=f"cannot draw attention for --model {tmp_path / 'model'}: it was built around "
                                         r"a user encoder module \(torch\.nn\.modules\.linear\.Linear\)"):
        va.main(["--model", str(tmp_path / "model"), "--image", "any.png", "--output", str(tmp_path / "a.png")])


def test_x_transformers_maps_and_flash_attention_refused():
    def model(encoder_kwargs):
        config = VitxConfig(**tiny_vit_kwargs(), encoder="x-transformers", encoder_kwargs=encoder_kwargs)
        return VitxForImageClassification(config).eval()

    pixel_values = torch.randn(1, 3, 32, 32)
    maps = va.attention_maps(model({}), pixel_values)
    assert maps.streams[0].rollout.shape == (8, 8) and maps.streams[0].heads.shape == (4, 8, 8)
    with pytest.raises(ValueError, match=r"cannot draw attention for VitxForImageClassification \(encoder "
                                         r"'x-transformers'\): asking it for attention maps failed: this x-transformers "
                                         r"encoder does not compute attention maps"):
        va.attention_maps(model({"attn_flash": True}), pixel_values)


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    model = VitxForImageClassification(VitxConfig(**tiny_vit_kwargs())).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    with pytest.raises(ImportError, match=r"drawing attention needs matplotlib: pip install -e \"\.\[viz\]\""):
        va.visualize(model, processor, write_images(tmp_path, [(32, 32)]), tmp_path / "a.png")
