"""Encoders handed in as modules (vit-pytorch's ``transformer=``), through the models' own keyword ``encoder_module=``:
the module is used as it is, with its own weights (a ``VitxEncoder`` instance, which ends with its own LayerNorm,
gets no second norm in the head); it never enters a config, whose ``encoder`` stays a name; building a model
leaves the caller's config alone; loading needs the module again; what a plain module cannot serve is named."""

import copy

import pytest
import torch
import transformers
from torch import nn

from configuration_vitx import VitxConfig
from families import FAMILIES, model_class, tiny_config, tiny_model, tiny_pixels
from modeling_vitx import LandmarkEncoder, VitxEncoder, VitxForImageClassification, VitxForPreTraining, VitxModel
from user_encoders import Mixer


def described(config):
    """What a config says, less the flag transformers 4.x's model init writes into every config it is given."""
    return {key: value for key, value in config.to_dict().items() if key != "_attn_implementation_autoset"}


@pytest.mark.parametrize("head", [True, False], ids=["classifier", "base"])
@pytest.mark.parametrize("family", FAMILIES)
def test_building_a_model_leaves_the_config_unchanged(family, head):
    config = tiny_config(family)
    before = copy.deepcopy(described(config))
    model_class(family, head)(config)
    assert described(config) == before


ENCODER_MODULES = {
    "mixer": lambda config: Mixer(dim=config.dim, tokens=config.num_patches + 1),
    "vitx_encoder": lambda config: VitxEncoder.from_config(config),
}


@pytest.mark.parametrize("model_cls", [VitxForImageClassification, VitxModel])
@pytest.mark.parametrize("module", ENCODER_MODULES)
def test_an_encoder_module_leaves_the_config_unchanged(module, model_cls, tmp_path):
    """The model records ``encoder="module"`` in a config of its own, so it saves and loads back; the caller's
    config still describes a standard ViT, and builds one."""
    config = tiny_config("vit")
    before = copy.deepcopy(described(config))
    model = model_cls(config, encoder_module=ENCODER_MODULES[module](config)).eval()
    assert described(config) == before
    assert model.config.encoder == "module" and config.encoder == "vit"
    assert isinstance(model_cls(config).get_submodule("vitx.encoder" if model_cls is not VitxModel else "encoder"),
                      VitxEncoder)
    model.save_pretrained(tmp_path)
    loaded = model_cls.from_pretrained(tmp_path, encoder_module=ENCODER_MODULES[module](config)).eval()
    pixels = tiny_pixels("vit")
    torch.testing.assert_close(loaded(pixels)[0], model(pixels)[0], rtol=0, atol=0)


@pytest.mark.parametrize("family", ["vit", "landmark"])
def test_an_encoder_instance_is_used_as_it_is(family):
    """A ``VitxEncoder`` instance (final LayerNorm) gives the standard ViT's layout, no ``head_norm``; a
    ``LandmarkEncoder`` instance (no final norm) the landmark model's, a normalizing head. Same weights, same
    logits as the model built by name."""
    by_name = tiny_model(family)
    encoder = VitxEncoder.from_config(tiny_config("vit")) if family == "vit" else LandmarkEncoder.from_config(tiny_config(family))
    model = VitxForImageClassification(tiny_config("vit"), encoder_module=encoder).eval()
    assert isinstance(model.head_norm, nn.Identity if family == "vit" else nn.LayerNorm)
    model.load_state_dict(by_name.state_dict())  # strict: the same parameters, no more, no fewer
    pixels = tiny_pixels(family)
    torch.testing.assert_close(model(pixels).logits, by_name(pixels).logits, rtol=0, atol=0)


def test_any_module_keeps_its_weights_and_round_trips(tmp_path):
    mixer = Mixer()
    before = mixer.mix.weight.clone()
    model = VitxForImageClassification(tiny_config("vit"), encoder_module=mixer).eval()
    assert torch.equal(model.vitx.encoder.module.mix.weight, before)
    assert model.config.encoder == "module" and model.config.encoder_kwargs["class"].endswith("Mixer")
    img = torch.randn(2, 3, 32, 32)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"saved with a user-supplied encoder module \(.*Mixer\); pass an instance "
                                         r"of it: from_pretrained\(folder, encoder_module=module\)"):
        VitxForImageClassification.from_pretrained(tmp_path)
    loaded = VitxForImageClassification.from_pretrained(tmp_path, encoder_module=Mixer()).eval()
    assert torch.equal(loaded(img).logits, model(img).logits)
    with pytest.raises(ValueError, match="`output_attentions=True` cannot be served: the encoder module .*Mixer"):
        model(img, output_attentions=True)
    with pytest.raises(ValueError, match="`output_hidden_states=True` cannot be served"):
        model(img, output_hidden_states=True)


def test_any_module_with_wrong_shape_is_named():
    model = VitxModel(tiny_config("vit"), encoder_module=nn.Linear(32, 16))
    with pytest.raises(ValueError, match=r"must map \(batch, tokens, dim\) \(1, 65, 32\) to the same shape, "
                                         r"got \(1, 65, 16\)"):
        model(torch.randn(1, 3, 32, 32))


def test_seed_x_transformers_instance_as_module():
    from x_transformers import Encoder
    model = VitxForImageClassification(tiny_config("vit"), encoder_module=Encoder(dim=32, depth=2, heads=4,
                                                                                    ff_glu=True, residual_attn=True)).eval()
    out = model(torch.randn(1, 3, 32, 32), output_attentions=True)
    assert out.logits.shape == (1, 10) and len(out.attentions) == 2


def test_seed_landmark_instance_as_module():
    encoder = LandmarkEncoder.from_config(tiny_config("landmark"))  # 8 landmarks
    model = VitxForImageClassification(tiny_config("vit"), encoder_module=encoder).eval()
    assert isinstance(model.head_norm, nn.LayerNorm)  # no final norm in the landmark encoder: the head has one
    out = model(torch.randn(1, 3, 32, 32), output_attentions=True)
    assert out.attentions[0].shape == (1, 4, 65, 65)


@pytest.mark.parametrize("model_cls", [VitxModel, VitxForImageClassification, VitxForPreTraining])
def test_a_module_passed_as_encoder_is_refused_by_name(model_cls, tmp_path):
    """``encoder`` names an encoder, in the config; a module given there (the constructor, ``from_pretrained`` of a
    model class or of an Auto class, which hands ``encoder=`` to the config) gets an error that says where it goes."""
    config = tiny_config("vit")
    with pytest.raises(ValueError, match=f"{model_cls.__name__} takes no `encoder=` \\(got a Mixer module\\): an "
                                         f"encoder module goes to the model as `encoder_module=`"):
        model_cls(config, encoder=Mixer())
    model_cls(config, encoder_module=Mixer()).save_pretrained(tmp_path)
    refused = (r"`encoder` must be the name of a registered encoder, got a Mixer module\. An encoder "
               r"module goes to the model: .*from_pretrained\(folder, encoder_module=module\)")
    with pytest.raises(ValueError, match=refused):
        model_cls.from_pretrained(tmp_path, encoder=Mixer())
    with pytest.raises(ValueError, match=refused):
        transformers.AutoModel.from_pretrained(tmp_path, encoder=Mixer())
    with pytest.raises(ValueError, match=refused):
        VitxConfig(encoder=Mixer())
    with pytest.raises(ValueError, match=r"`encoder_module` must be an nn.Module, got str"):
        model_cls(config, encoder_module="landmark")


def test_a_module_never_enters_the_config(tmp_path):
    """Through every door a module comes in (constructor, ``from_pretrained``, an Auto class's ``from_pretrained``
    and ``from_config``), the model's config says ``encoder="module"`` and the module's class, as strings, and
    serializes as any other config; the module is the model's encoder."""
    config = tiny_config("vit")
    built = VitxForImageClassification(config, encoder_module=Mixer())
    built.save_pretrained(tmp_path)
    models = [built, VitxForImageClassification.from_pretrained(tmp_path, encoder_module=Mixer()),
              transformers.AutoModelForImageClassification.from_pretrained(tmp_path, encoder_module=Mixer()),
              transformers.AutoModel.from_pretrained(tmp_path, encoder_module=Mixer()),
              transformers.AutoModelForImageClassification.from_config(config, encoder_module=Mixer())]
    for model in models:
        assert (model.config.encoder, model.config.encoder_kwargs) == ("module", {"class": "user_encoders.Mixer"})
        assert type(model.base_model.encoder.module) is Mixer
        assert model.config.to_dict() == VitxConfig.from_dict(model.config.to_dict()).to_dict()
