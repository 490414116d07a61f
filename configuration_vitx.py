"""Configuration classes for vitx: Vision Transformers as Hugging Face models.

The parameter names and defaults follow vit-pytorch (``dim``, ``depth``, ``heads``,
``mlp_dim``, ``pool`` ...); Hugging Face's standard names (``hidden_size``,
``num_hidden_layers`` ...) read and write the same values through ``attribute_map``.
Every value is checked at construction, so a bad config fails with a message that
names the parameter, the value given and what is allowed.
"""

import json
from numbers import Real

from transformers import AutoConfig, PretrainedConfig

try:  # transformers >= 5: the backbone helpers' public home; the config aligns out_features/out_indices itself
    from transformers.backbone_utils import BackboneConfigMixin
    get_aligned_output_features_output_indices = None
except ImportError:  # transformers 4.x
    from transformers.utils.backbone_utils import BackboneConfigMixin, get_aligned_output_features_output_indices

# helpers


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(name, value):
    """Raise ``ValueError`` unless ``value`` is an int greater than zero."""
    if not _is_int(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return value


def _check_probability(name, value):
    """Raise ``ValueError`` unless ``value`` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1], got {value!r}.")
    return float(value)


def _check_positive_float(name, value):
    """Raise ``ValueError`` unless ``value`` is a number greater than zero."""
    if isinstance(value, bool) or not isinstance(value, Real) or value <= 0:
        raise ValueError(f"`{name}` must be a positive float, got {value!r}.")
    return float(value)


def _check_bool(name, value):
    """Raise ``ValueError`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool, got {value!r}.")
    return value


def _check_choice(name, value, allowed):
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        *first, last = (repr(choice) for choice in allowed)
        raise ValueError(f"`{name}` must be {', '.join(first)} or {last}, got {value!r}.")
    return value


def _check_size(name, value):
    """Normalize an int or an (height, width) pair of positive ints.

    Ints stay ints; pairs become lists, the form JSON gives back, so a config
    survives ``save_pretrained``/``from_pretrained`` unchanged.
    """
    if _is_int(value):
        return _check_positive_int(name, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value):
        return list(value)
    raise ValueError(f"`{name}` must be a positive int or a (height, width) pair of positive ints, got {value!r}.")


def _to_pair(value):
    """``224`` -> ``(224, 224)``; ``[224, 160]`` -> ``(224, 160)``."""
    return (value, value) if _is_int(value) else tuple(value)


def _patch_grid(image_size, patch_size, image_name="image_size", patch_name="patch_size"):
    """Number of patches along (height, width); raises unless the image divides into patches."""
    (ih, iw), (ph, pw) = _to_pair(image_size), _to_pair(patch_size)
    if ih % ph or iw % pw:
        raise ValueError(
            f"`{image_name}` {image_size!r} must be divisible by `{patch_name}` {patch_size!r} "
            f"in both height and width."
        )
    return ih // ph, iw // pw


def _check_odd_kernel(name, value):
    """Raise ``ValueError`` unless ``value`` is 0 (off) or a positive odd int."""
    if not _is_int(value) or value < 0 or (value and value % 2 == 0):
        raise ValueError(f"`{name}` must be 0 (off) or a positive odd int, got {value!r}.")
    return value


# `linear_init`'s values; `VitxConfig` also takes None: per model (Glorot's draw with the patch norms, but
# PyTorch's in the dense-prediction models)
LINEAR_INITS = ("pytorch", "xavier_uniform")

# `attention_init`'s values: None picks per attention (mimetic for landmark attention, random for softmax)
ATTENTION_INITS = (None, "mimetic", "random")

# The options of each built-in encoder whose options vitx defines: name -> (default, check). A config completes
# `encoder_kwargs` with the defaults, so a saved folder states every value. The "x-transformers" encoder takes
# any `x_transformers.Encoder` option, which x-transformers checks when the model is built; encoders added with
# `modeling_vitx.register_encoder` check theirs when built too.
ENCODER_OPTIONS = {
    "vit": {},
    "landmark": {
        "num_landmarks": (256, _check_positive_int),
        "pinv_iterations": (6, _check_positive_int),
        "residual_conv_kernel": (33, _check_odd_kernel),
    },
}


def _check_encoder(encoder, encoder_kwargs):
    """``encoder`` names an encoder; ``encoder_kwargs`` is a JSON-serializable dict, so the choice survives
    ``save_pretrained``, and for an encoder of ``ENCODER_OPTIONS`` holds only its options, checked and completed
    with their defaults."""
    _check_encoder_name(encoder)
    encoder_kwargs = {} if encoder_kwargs is None else encoder_kwargs
    try:
        if not isinstance(encoder_kwargs, dict):
            raise TypeError
        json.dumps(encoder_kwargs)
    except TypeError:
        raise ValueError(f"`encoder_kwargs` must be a JSON-serializable dict, got {encoder_kwargs!r}.") from None
    if encoder not in ENCODER_OPTIONS:
        return encoder, encoder_kwargs
    return encoder, _encoder_options(encoder, encoder_kwargs)


def _check_encoder_name(encoder):
    """Raise ``ValueError`` unless ``encoder`` is a non-empty str. A module is the model's to take, as
    ``encoder_module=``: a config holds names, which ``save_pretrained`` can write."""
    if isinstance(encoder, str) and encoder:
        return encoder
    if hasattr(encoder, "forward"):
        raise ValueError(f"`encoder` must be the name of a registered encoder, got a {type(encoder).__name__} "
                         f"module. An encoder module goes to the model: VitxModel(config, encoder_module=module), "
                         f"from_pretrained(folder, encoder_module=module).")
    raise ValueError(f"`encoder` must be the name of a registered encoder, got {encoder!r}.")


def _encoder_options(encoder, encoder_kwargs):
    """The options of a built-in encoder of ``ENCODER_OPTIONS``: ``encoder_kwargs`` checked, with the defaults."""
    options = ENCODER_OPTIONS[encoder]
    unknown = sorted(set(encoder_kwargs) - set(options))
    if unknown:
        raise ValueError(f"unknown `encoder_kwargs` {unknown} for the {encoder!r} encoder; allowed: "
                         f"{sorted(options) or 'none'}.")
    return {name: check(name, encoder_kwargs.get(name, default)) for name, (default, check) in options.items()}


def _stage_names(depth):
    """The backbone's stages: the embeddings ("stem"), then one per encoder layer, as transformers' ViT backbones."""
    return ["stem"] + [f"stage{index}" for index in range(1, depth + 1)]


def _check_feature_pyramid(feature_pyramid, reshape_hidden_states, out_features):
    """The simple feature pyramid is built from one (batch, dim, height, width) map."""
    if feature_pyramid and not reshape_hidden_states:
        raise ValueError("`feature_pyramid=True` builds its levels from feature maps: it needs "
                         "`reshape_hidden_states=True`, got False.")
    if feature_pyramid and len(out_features) != 1:
        raise ValueError(f"`feature_pyramid=True` builds its four levels from one stage: `out_features` must name "
                         f"one stage, got {out_features}.")
def _check_segmentation_layers(layers, depth):
    """The ``hidden_states`` indices the segmentation decoder fuses with the last state: ``layers`` checked (ints
    in [0, depth), sorted, no repeats), or by default the blocks at a quarter, half and three quarters of
    ``depth``."""
    if layers is None:
        return sorted({depth * quarter // 4 for quarter in (1, 2, 3)} - {0})
    if not isinstance(layers, (list, tuple)) or not all(_is_int(i) and 0 <= i < depth for i in layers) \
            or len(set(layers)) != len(layers):
        raise ValueError(f"`segmentation_layers` must be distinct `hidden_states` indices in [0, {depth}) "
                         f"(`depth` {depth}: the last state is always fused), got {layers!r}.")
    return sorted(layers)


def _set_num_labels(num_classes, kwargs):
    """``num_classes`` is vit-pytorch's name for HF's ``num_labels``; explicit label maps win."""
    id2label, label2id = kwargs.get("id2label"), kwargs.get("label2id")
    if id2label is None and label2id is None:
        kwargs.setdefault("num_labels", _check_positive_int("num_classes", num_classes))
    elif id2label is None:
        kwargs["id2label"] = {int(index): label for label, index in label2id.items()}
    elif label2id is None:
        kwargs["label2id"] = {label: int(index) for index, label in id2label.items()}


class VitxConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of [`VitxModel`], [`VitxForImageClassification`], [`VitxForPreTraining`],
    [`VitxForSemanticSegmentation`] and [`VitxBackbone`].

    Args:
        image_size (`int` or `(int, int)`, defaults to 224): image size, or (height, width) for rectangular images.
        patch_size (`int` or `(int, int)`, defaults to 16): patch size; `image_size` must be divisible by it and
            there must be more than 16 patches.
        num_classes (`int`, defaults to 1000): number of classes; sets HF's `num_labels` / `id2label`.
        dim (`int`, defaults to 768): token width (`hidden_size`).
        depth (`int`, defaults to 12): number of transformer blocks (`num_hidden_layers`).
        heads (`int`, defaults to 12): attention heads (`num_attention_heads`).
        mlp_dim (`int`, defaults to 3072): feed-forward width (`intermediate_size`).
        channels (`int`, defaults to 3): image channels (`num_channels`).
        dropout (`float`, defaults to 0.0): dropout in attention and feed-forward.
        emb_dropout (`float`, defaults to 0.0): dropout on the token embeddings.
        pool (`str`, defaults to `"cls"`): `"cls"` (a CLS token) or `"mean"` (mean of all tokens, no CLS token).
        dim_head (`int`, defaults to 64): width of each attention head.
        patch_norm (`bool`, defaults to `True`): vit-pytorch's patch embedding, LayerNorm -> Linear -> LayerNorm on
            the flattened patches; `False` gives the classic ViT's (HF, timm) convolution with kernel and stride
            equal to the patch size, without the two LayerNorms.
        qkv_bias (`bool`, defaults to `False`): biases on the query/key/value projection.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        initializer_range (`float`, *optional*): `None` (the default) initializes every linear and convolution
            layer as PyTorch does (uniform in +-1/sqrt(fan_in), vit-pytorch's and nystrom-attention's
            initialization); a float draws their weights from a truncated normal of that std with zero biases
            (transformers' ViT and timm use 0.02; folders converted from them keep it).
        linear_init (`str`, *optional*): the draw of the transformer's own linear layers (patch embedding,
            attention and feed-forward) when `initializer_range` is None: `"pytorch"` (PyTorch's default,
            vit-pytorch's) or `"xavier_uniform"` (Glorot's uniform, as MAE and big_vision draw their ViTs').
            `None` (the default) takes what trains fastest from scratch for the model (measured in
            `scripts/benchmark.py --sections convergence` and `scripts/train_segmentation.py`; docs/training.md,
            "Initialization"): Glorot's with the patch norms (`patch_norm=True`), PyTorch's for the classic ViT
            and for the dense-prediction models (`VitxForSemanticSegmentation`, `VitxBackbone`). Biases, heads
            and decoders keep PyTorch's draw.
        position_init_std (`float`, defaults to 1.0): std of the normal draw of the learned position embeddings
            and the CLS token (and of the pretraining decoder's positions and mask token). 1.0 matches the unit
            scale of the tokens they are added to: the patch embeddings end in a LayerNorm
            (`patch_norm=True`), and at 0.02 the positions would be lost in them.
        attention_init (`str`, *optional*): how the attention projections start. `"mimetic"`: each head's
            query-key product W_q W_k^T near +identity and the layer's value-output product W_v W_o near
            -identity, as in trained ViTs (Trockman & Kolter, 2023, "Mimetic Initialization of Self-Attention
            Layers"); `"random"`: each projection drawn as every other linear layer (`initializer_range`).
            `None` (the default) takes what trains fastest from scratch for each attention (measured in
            `scripts/benchmark.py --sections convergence`): mimetic for the landmark encoder's attention, random
            for softmax attention.
        encoder (`str`, defaults to `"vit"`): the registered encoder to build (`"vit"`, `"landmark"`,
            `"x-transformers"`, or a name added with `modeling_vitx.register_encoder`). `"module"` records a model
            built around an encoder module of the user's (handed to the model as `encoder_module=`, never to the
            config), with its class name in `encoder_kwargs`.
        encoder_kwargs (`dict`, defaults to `{}`): that encoder's own options, JSON-serializable. For the encoders
            of `ENCODER_OPTIONS` they are checked here and completed with the defaults (`"landmark"`:
            `num_landmarks` 256, `pinv_iterations` 6, `residual_conv_kernel` 33, 0 = off; `"vit"`: none).
        masking_ratio (`float`, defaults to 0.75): masked autoencoder pretraining (`VitxForPreTraining`): the share
            of patches hidden from the encoder, in (0, 1).
        decoder_dim (`int`, defaults to 512): width of the pretraining decoder (vit-pytorch MAE's names).
        decoder_depth (`int`, defaults to 1): transformer blocks of the pretraining decoder.
        decoder_heads (`int`, defaults to 8): attention heads of the pretraining decoder.
        decoder_dim_head (`int`, defaults to 64): width of each of the decoder's attention heads.
        norm_pix_loss (`bool`, defaults to `False`): reconstruct each patch normalized by its own mean and
            variance (the MAE paper's better representations) instead of the raw pixel values.
        out_features (`list[str]`, *optional*): [`VitxBackbone`]: the stages whose feature maps it returns, of
            `stage_names` ("stem", the embeddings, then "stage1" ... "stage{depth}", one per encoder layer), in that
            order. Defaults to the last stage; checked and aligned with `out_indices` by transformers' helpers.
        out_indices (`list[int]`, *optional*): the same stages by their index in `stage_names`.
        apply_layernorm (`bool`, defaults to `True`): [`VitxBackbone`] norms each feature map as the classifier
            norms the encoder's output (the encoder's final norm, or the head's when the encoder has none).
        reshape_hidden_states (`bool`, defaults to `True`): [`VitxBackbone`] returns (batch, dim, height / patch,
            width / patch) maps; `False` returns the tokens as they are, (batch, [1 +] patches, dim), the CLS
            token first (what DPT and Depth Anything read).
        feature_pyramid (`bool`, defaults to `False`): [`VitxBackbone`] turns its one feature map into ViTDet's
            simple feature pyramid (Li et al., 2022): four maps at 4, 2, 1 and 1/2 times its resolution (strides
            4, 8, 16 and 32 for 16-pixel patches), by deconvolutions up and max-pooling down.
        feature_pyramid_channels (`int`, defaults to 256): channels of each level of the feature pyramid.
        segmentation_layers (`list[int]`, defaults to evenly spaced blocks): semantic segmentation
            (`VitxForSemanticSegmentation`): the earlier encoder states fused with the last one, as indices of
            `hidden_states` (0: the embeddings, i: block i's output), each in [0, depth). The default takes the
            blocks at a quarter, half and three quarters of the depth (fewer in shallow models); `[]` reads the
            last state alone (needed for an encoder that returns no layer states).
        segmentation_dim (`int`, defaults to 64): width of the fused token map the segmentation decoder
            upsamples.
        segmentation_pixel_dim (`int`, defaults to 8): width of the decoder's full-resolution convolutional
            path from the pixels; each halving of the resolution doubles it, up to `segmentation_dim`.
        semantic_loss_ignore_index (`int`, defaults to 255): the label id the segmentation loss ignores.

    Example:

    ```python
    >>> from configuration_vitx import VitxConfig
    >>> config = VitxConfig(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048)
    >>> config.hidden_size, config.num_labels
    (1024, 1000)
    ```
    """

    model_type = "vitx"
    attribute_map = {
        "hidden_size": "dim",
        "num_hidden_layers": "depth",
        "num_attention_heads": "heads",
        "intermediate_size": "mlp_dim",
        "num_channels": "channels",
        "num_classes": "num_labels",
    }

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        num_classes=1000,
        dim=768,
        depth=12,
        heads=12,
        mlp_dim=3072,
        channels=3,
        dropout=0.0,
        emb_dropout=0.0,
        pool="cls",
        dim_head=64,
        patch_norm=True,
        qkv_bias=False,
        layer_norm_eps=1e-5,
        initializer_range=None,
        position_init_std=1.0,
        linear_init=None,
        attention_init=None,
        encoder="vit",
        encoder_kwargs=None,
        masking_ratio=0.75,
        decoder_dim=512,
        decoder_depth=1,
        decoder_heads=8,
        decoder_dim_head=64,
        norm_pix_loss=False,
        out_features=None,
        out_indices=None,
        apply_layernorm=True,
        reshape_hidden_states=True,
        feature_pyramid=False,
        feature_pyramid_channels=256,
        segmentation_layers=None,
        segmentation_dim=64,
        segmentation_pixel_dim=8,
        semantic_loss_ignore_index=255,
        **kwargs,
    ):
        self.image_size = _check_size("image_size", image_size)
        self.patch_size = _check_size("patch_size", patch_size)
        grid_h, grid_w = _patch_grid(self.image_size, self.patch_size)
        if grid_h * grid_w <= 16:
            raise ValueError(
                f"`image_size` {image_size!r} with `patch_size` {patch_size!r} gives {grid_h * grid_w} patches; "
                f"the number of patches must be greater than 16."
            )
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("mlp_dim", mlp_dim),
                            ("channels", channels), ("dim_head", dim_head)):
            _check_positive_int(name, value)
        self.dim, self.depth, self.heads, self.mlp_dim = dim, depth, heads, mlp_dim
        self.channels, self.dim_head = channels, dim_head
        self.dropout = _check_probability("dropout", dropout)
        self.emb_dropout = _check_probability("emb_dropout", emb_dropout)
        self.pool = _check_choice("pool", pool, ("cls", "mean"))
        self.patch_norm = _check_bool("patch_norm", patch_norm)
        self.qkv_bias = _check_bool("qkv_bias", qkv_bias)
        self.layer_norm_eps = _check_positive_float("layer_norm_eps", layer_norm_eps)
        self.initializer_range = None if initializer_range is None else _check_positive_float(
            "initializer_range", initializer_range)
        self.position_init_std = _check_positive_float("position_init_std", position_init_std)
        self.linear_init = _check_choice("linear_init", linear_init, (None, *LINEAR_INITS))
        self.attention_init = _check_choice("attention_init", attention_init, ATTENTION_INITS)
        self.encoder, self.encoder_kwargs = _check_encoder(encoder, encoder_kwargs)
        if isinstance(masking_ratio, bool) or not isinstance(masking_ratio, Real) or not 0 < masking_ratio < 1:
            raise ValueError(f"`masking_ratio` must be a float in (0, 1), got {masking_ratio!r}.")
        if int(grid_h * grid_w * (1 - masking_ratio)) < 1:
            raise ValueError(f"`masking_ratio` {masking_ratio!r} leaves no visible patch of the {grid_h * grid_w}; "
                             f"at most {1 - 1 / (grid_h * grid_w)} keeps one.")
        self.masking_ratio = float(masking_ratio)
        for name, value in (("decoder_dim", decoder_dim), ("decoder_depth", decoder_depth),
                            ("decoder_heads", decoder_heads), ("decoder_dim_head", decoder_dim_head)):
            _check_positive_int(name, value)
        self.decoder_dim, self.decoder_depth, self.decoder_heads = decoder_dim, decoder_depth, decoder_heads
        self.decoder_dim_head = decoder_dim_head
        self.norm_pix_loss = _check_bool("norm_pix_loss", norm_pix_loss)
        kwargs.pop("stage_names", None)  # a saved config's: they follow from `depth`
        self.stage_names = _stage_names(depth)
        out_indices = list(out_indices) if isinstance(out_indices, tuple) else out_indices
        if get_aligned_output_features_output_indices is None:
            self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        else:
            self._out_features, self._out_indices = get_aligned_output_features_output_indices(
                out_features=out_features, out_indices=out_indices, stage_names=self.stage_names)
        self.apply_layernorm = _check_bool("apply_layernorm", apply_layernorm)
        self.reshape_hidden_states = _check_bool("reshape_hidden_states", reshape_hidden_states)
        self.feature_pyramid = _check_bool("feature_pyramid", feature_pyramid)
        self.feature_pyramid_channels = _check_positive_int("feature_pyramid_channels", feature_pyramid_channels)
        _check_feature_pyramid(self.feature_pyramid, self.reshape_hidden_states, self.out_features)
        self.segmentation_layers = _check_segmentation_layers(segmentation_layers, depth)
        self.segmentation_dim = _check_positive_int("segmentation_dim", segmentation_dim)
        self.segmentation_pixel_dim = _check_positive_int("segmentation_pixel_dim", segmentation_pixel_dim)
        if not _is_int(semantic_loss_ignore_index):
            raise ValueError(f"`semantic_loss_ignore_index` must be an int, got {semantic_loss_ignore_index!r}.")
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        _set_num_labels(num_classes, kwargs)
        super().__init__(**kwargs)

    def __setattr__(self, key, value):
        # ``from_pretrained(folder, encoder=...)`` sets the value after construction: it is checked there too
        if key == "encoder":
            _check_encoder_name(value)
        super().__setattr__(key, value)

    @property
    def num_patches(self):
        """Patches per image: (image height / patch height) x (image width / patch width)."""
        grid_h, grid_w = _patch_grid(self.image_size, self.patch_size)
        return grid_h * grid_w


class CrossVitxConfig(PretrainedConfig):
    r"""Configuration of [`CrossVitxModel`] and [`CrossVitxForImageClassification`] (CrossViT, the "Two Stream ViT").

    Two ViTs see the same image at two patch sizes: a small-patch stream (``sm_*``, many tokens) and a
    large-patch stream (``lg_*``, few tokens). Each of the ``depth`` multi-scale blocks runs both streams'
    transformers, then ``cross_attn_depth`` rounds of cross-attention in which each stream's CLS token
    attends to the other stream's patch tokens (and to itself). With ``sm_enc_depth = lg_enc_depth = 1``
    the streams fuse after every layer.

    Names and defaults follow vit-pytorch's ``CrossViT``. vit-pytorch has no defaults for ``image_size``,
    ``num_classes``, ``sm_dim`` and ``lg_dim``; here they default to the CrossViT paper's 240x240 images
    (which both default patch sizes, 12 and 16, divide) with the 192 / 384 widths of vit-pytorch's README.

    Args:
        image_size (`int` or `(int, int)`, defaults to 240): image size, or (height, width); both patch sizes must
            divide it.
        num_classes (`int`, defaults to 1000): number of classes; sets HF's `num_labels` / `id2label`.
        depth (`int`, defaults to 3): number of multi-scale blocks.
        sm_dim (`int`, defaults to 192): token width of the small-patch stream. `hidden_size` reads and writes it,
            because the small-patch stream is the high-resolution one the model is usually named after, and the
            one the model's generic outputs (`last_hidden_state`, `hidden_states`, `attentions`) are.
        sm_patch_size (`int` or `(int, int)`, defaults to 12): patch size of the small-patch stream; must be smaller
            than `lg_patch_size`.
        sm_enc_depth (`int`, defaults to 1): transformer blocks of the small-patch stream per multi-scale block.
            `num_hidden_layers` (read-only) is `depth * sm_enc_depth`, the small-patch stream's transformer layers:
            one attention map each in `attentions`, one more state than that in `hidden_states`.
        sm_enc_heads (`int`, defaults to 8): attention heads of the small-patch stream (`num_attention_heads`, the
            heads of the stream the model's generic `attentions` output shows).
        sm_enc_mlp_dim (`int`, defaults to 2048): feed-forward width of the small-patch stream.
        sm_enc_dim_head (`int`, defaults to 64): width of each attention head of the small-patch stream.
        lg_dim (`int`, defaults to 384): token width of the large-patch stream.
        lg_patch_size (`int` or `(int, int)`, defaults to 16): patch size of the large-patch stream.
        lg_enc_depth (`int`, defaults to 4): transformer blocks of the large-patch stream per multi-scale block.
        lg_enc_heads (`int`, defaults to 8): attention heads of the large-patch stream.
        lg_enc_mlp_dim (`int`, defaults to 2048): feed-forward width of the large-patch stream.
        lg_enc_dim_head (`int`, defaults to 64): width of each attention head of the large-patch stream.
        cross_attn_depth (`int`, defaults to 2): cross-attention rounds per multi-scale block.
        cross_attn_heads (`int`, defaults to 8): cross-attention heads.
        cross_attn_dim_head (`int`, defaults to 64): width of each cross-attention head.
        dropout (`float`, defaults to 0.1): dropout in attention and feed-forward.
        emb_dropout (`float`, defaults to 0.1): dropout on the token embeddings.
        channels (`int`, defaults to 3): image channels (`num_channels`).
        qkv_bias (`bool`, defaults to `False`): biases on the query/key/value projections.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        initializer_range (`float`, *optional*), linear_init (`str`, defaults to `"pytorch"`),
            position_init_std (`float`, defaults to 1.0), attention_init (`str`, *optional*): the initialization,
            as in [`VitxConfig`] (both streams' positions and CLS tokens at `position_init_std`; every attention,
            self and cross, is softmax attention, so `None` is the plain draw).

    Example:

    ```python
    >>> from configuration_vitx import CrossVitxConfig
    >>> config = CrossVitxConfig(image_size=256, num_classes=1000, depth=4, sm_dim=192, sm_patch_size=16,
    ...                          sm_enc_depth=2, lg_dim=384, lg_patch_size=64, lg_enc_depth=3)
    >>> config.hidden_size, config.sm_num_patches, config.lg_num_patches
    (192, 256, 16)
    ```
    """

    model_type = "crossvitx"
    attribute_map = {
        "hidden_size": "sm_dim",
        "num_attention_heads": "sm_enc_heads",
        "num_channels": "channels",
        "num_classes": "num_labels",
    }

    def __init__(
        self,
        image_size=240,
        num_classes=1000,
        depth=3,
        sm_dim=192,
        sm_patch_size=12,
        sm_enc_depth=1,
        sm_enc_heads=8,
        sm_enc_mlp_dim=2048,
        sm_enc_dim_head=64,
        lg_dim=384,
        lg_patch_size=16,
        lg_enc_depth=4,
        lg_enc_heads=8,
        lg_enc_mlp_dim=2048,
        lg_enc_dim_head=64,
        cross_attn_depth=2,
        cross_attn_heads=8,
        cross_attn_dim_head=64,
        dropout=0.1,
        emb_dropout=0.1,
        channels=3,
        qkv_bias=False,
        layer_norm_eps=1e-5,
        initializer_range=None,
        position_init_std=1.0,
        linear_init="pytorch",
        attention_init=None,
        **kwargs,
    ):
        self.image_size = _check_size("image_size", image_size)
        self.sm_patch_size = _check_size("sm_patch_size", sm_patch_size)
        self.lg_patch_size = _check_size("lg_patch_size", lg_patch_size)
        _patch_grid(self.image_size, self.sm_patch_size, patch_name="sm_patch_size")
        _patch_grid(self.image_size, self.lg_patch_size, patch_name="lg_patch_size")
        if any(sm >= lg for sm, lg in zip(_to_pair(self.sm_patch_size), _to_pair(self.lg_patch_size))):
            raise ValueError(
                f"`sm_patch_size` {sm_patch_size!r} must be smaller than `lg_patch_size` {lg_patch_size!r} "
                f"in both height and width."
            )
        sizes = dict(depth=depth, sm_dim=sm_dim, sm_enc_depth=sm_enc_depth, sm_enc_heads=sm_enc_heads,
                     sm_enc_mlp_dim=sm_enc_mlp_dim, sm_enc_dim_head=sm_enc_dim_head, lg_dim=lg_dim,
                     lg_enc_depth=lg_enc_depth, lg_enc_heads=lg_enc_heads, lg_enc_mlp_dim=lg_enc_mlp_dim,
                     lg_enc_dim_head=lg_enc_dim_head, cross_attn_depth=cross_attn_depth,
                     cross_attn_heads=cross_attn_heads, cross_attn_dim_head=cross_attn_dim_head, channels=channels)
        for name, value in sizes.items():
            setattr(self, name, _check_positive_int(name, value))
        self.dropout = _check_probability("dropout", dropout)
        self.emb_dropout = _check_probability("emb_dropout", emb_dropout)
        self.qkv_bias = _check_bool("qkv_bias", qkv_bias)
        self.layer_norm_eps = _check_positive_float("layer_norm_eps", layer_norm_eps)
        self.initializer_range = None if initializer_range is None else _check_positive_float(
            "initializer_range", initializer_range)
        self.position_init_std = _check_positive_float("position_init_std", position_init_std)
        self.linear_init = _check_choice("linear_init", linear_init, LINEAR_INITS)
        self.attention_init = _check_choice("attention_init", attention_init, ATTENTION_INITS)
        _set_num_labels(num_classes, kwargs)
        super().__init__(**kwargs)

    @property
    def num_hidden_layers(self):
        """The small-patch stream's transformer layers, ``depth * sm_enc_depth``: what ``attentions`` holds a map of
        per layer (and ``hidden_states`` the input of, then the stream's output), as transformers' models do."""
        return self.depth * self.sm_enc_depth

    @num_hidden_layers.setter
    def num_hidden_layers(self, value):
        raise AttributeError(f"CrossVitxConfig's `num_hidden_layers` is `depth` * `sm_enc_depth` "
                             f"({self.depth} * {self.sm_enc_depth}); set those instead of {value!r}.")

    @property
    def sm_num_patches(self):
        """Patches per image in the small-patch stream."""
        grid_h, grid_w = _patch_grid(self.image_size, self.sm_patch_size, patch_name="sm_patch_size")
        return grid_h * grid_w

    @property
    def lg_num_patches(self):
        """Patches per image in the large-patch stream."""
        grid_h, grid_w = _patch_grid(self.image_size, self.lg_patch_size, patch_name="lg_patch_size")
        return grid_h * grid_w


# registration: in process through AutoConfig, and as Hub remote code via `auto_map`

VitxConfig.register_for_auto_class()
AutoConfig.register("vitx", VitxConfig, exist_ok=True)
CrossVitxConfig.register_for_auto_class()
AutoConfig.register("crossvitx", CrossVitxConfig, exist_ok=True)

__all__ = ["CrossVitxConfig", "ENCODER_OPTIONS", "VitxConfig"]
