"""vitx: Vision Transformers as Hugging Face models.

Reads top to bottom: helpers, embeddings, attention, feed-forward, layer, encoder,
pretrained base, models, heads, registration. One attention module serves every
family; it runs ``F.scaled_dot_product_attention`` unless attention maps are asked
for (or ``attn_implementation="eager"``), in which case it runs the explicit softmax.
The architecture matches vit-pytorch's ``ViT`` so its weights carry over exactly; with
``patch_norm=False`` it is the classic ViT of HF transformers and timm.
"""

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, AutoModelForImageClassification, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, ImageClassifierOutput

try:  # as Hub remote code, the config file sits beside this one in a package
    from .configuration_vitx import VitxConfig, patch_grid, to_pair
except ImportError:  # installed as top-level modules
    from configuration_vitx import VitxConfig, patch_grid, to_pair

# helpers


def _wants_eager(config, output_attentions):
    """The explicit softmax path runs only when maps are requested or eager attention is configured."""
    return bool(output_attentions) or getattr(config, "_attn_implementation", None) == "eager"


def _flag(value, config, name):
    """A forward flag, falling back to the config's default as HF models do."""
    return bool(value) if value is not None else bool(getattr(config, name, False))


def _return_dict(value, config):
    return value if value is not None else getattr(config, "return_dict", True)


def image_classification_loss(logits, labels, config):
    """HF's ``problem_type`` rules: regression, single-label or multi-label classification."""
    if labels is None:
        return None
    labels = labels.to(logits.device)
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype)) if num_labels == 1 \
            else F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        labels = labels.view(-1)
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
            raise ValueError(
                f"`labels` must be class ids in [0, {num_labels}), got values from {labels.min().item()} "
                f"to {labels.max().item()}."
            )
        return F.cross_entropy(logits.view(-1, num_labels), labels)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


# embeddings


class VitxPatchEmbeddings(nn.Module):
    """Cuts an image into patches and projects each to ``dim``, as (batch, patches, dim) in row-major patch order.

    ``config.patch_norm=True`` (vit-pytorch): LayerNorm -> Linear -> LayerNorm on the flattened patches.
    ``config.patch_norm=False`` (the classic ViT of HF and timm): a Conv2d with kernel and stride equal to the patch.
    """

    def __init__(self, config, dim, patch_size):
        super().__init__()
        self.patch_height, self.patch_width = to_pair(patch_size)
        # a config class without the switch (another family's) keeps vit-pytorch's embedding
        self.patch_norm = getattr(config, "patch_norm", True)
        if self.patch_norm:
            patch_dim = config.channels * self.patch_height * self.patch_width
            self.norm_in = nn.LayerNorm(patch_dim, eps=config.layer_norm_eps)
            self.projection = nn.Linear(patch_dim, dim)
            self.norm_out = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        else:
            self.projection = nn.Conv2d(config.channels, dim, kernel_size=(self.patch_height, self.patch_width),
                                        stride=(self.patch_height, self.patch_width))

    def forward(self, pixel_values):
        if not self.patch_norm:
            return rearrange(self.projection(pixel_values), "b d h w -> b (h w) d")
        patches = rearrange(pixel_values, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=self.patch_height,
                            p2=self.patch_width)
        return self.norm_out(self.projection(self.norm_in(patches)))


class VitxEmbeddings(nn.Module):
    """Patch embeddings, an optional CLS token, learned positions and embedding dropout.

    The position table is learned for ``config.image_size``; ``interpolate_pos_encoding=True``
    resamples it (bicubic, as HF's ViT) for other resolutions.
    """

    def __init__(self, config, dim=None, patch_size=None, use_cls_token=None):
        super().__init__()
        dim = dim or config.dim
        patch_size = patch_size or config.patch_size
        use_cls_token = config.pool == "cls" if use_cls_token is None else use_cls_token
        self.image_size, self.channels = to_pair(config.image_size), config.channels
        self.patch_size = to_pair(patch_size)
        self.grid = patch_grid(config.image_size, patch_size)
        self.patch_embeddings = VitxPatchEmbeddings(config, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if use_cls_token else None
        self.num_prefix_tokens = int(use_cls_token)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.grid[0] * self.grid[1], dim))
        self.dropout = nn.Dropout(config.emb_dropout)

    def check_pixel_values(self, pixel_values, interpolate_pos_encoding):
        """Raise a ``ValueError`` naming the expected and given shapes before any reshaping happens."""
        if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise ValueError(f"`pixel_values` must be a (batch, channels, height, width) tensor, got {shape}.")
        _, channels, height, width = pixel_values.shape
        if channels != self.channels:
            raise ValueError(f"`pixel_values` has {channels} channels; the model expects `channels`={self.channels}.")
        if interpolate_pos_encoding:
            if height % self.patch_size[0] or width % self.patch_size[1]:
                raise ValueError(
                    f"`pixel_values` of size {height}x{width} is not divisible by the patch size "
                    f"{self.patch_size[0]}x{self.patch_size[1]}."
                )
        elif (height, width) != self.image_size:
            raise ValueError(
                f"`pixel_values` has size {height}x{width}; the model expects {self.image_size[0]}x{self.image_size[1]} "
                f"(`image_size`). Pass `interpolate_pos_encoding=True` to run at another resolution."
            )

    def interpolate_pos_encoding(self, height, width):
        """The position table resampled for a ``height`` x ``width`` image."""
        new_grid = (height // self.patch_size[0], width // self.patch_size[1])
        if new_grid == self.grid:
            return self.position_embeddings
        prefix = self.position_embeddings[:, : self.num_prefix_tokens]
        grid = rearrange(self.position_embeddings[:, self.num_prefix_tokens:], "1 (h w) d -> 1 d h w",
                         h=self.grid[0], w=self.grid[1])
        grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
        grid = rearrange(grid, "1 d h w -> 1 (h w) d").to(prefix.dtype)
        return torch.cat((prefix, grid), dim=1)

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        tokens = self.patch_embeddings(pixel_values)
        if self.cls_token is not None:
            tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        positions = self.position_embeddings
        if interpolate_pos_encoding:
            positions = self.interpolate_pos_encoding(*pixel_values.shape[-2:])
        return self.dropout(tokens + positions)


# attention


class VitxAttention(nn.Module):
    """Pre-norm multi-head attention: the one attention module of every vitx family.

    Self-attention: ``attention(x)``. Cross-attention: ``attention(x, context)`` takes queries
    from ``x`` and keys/values from ``context`` (with ``kv_include_self``, from the normed ``x``
    followed by ``context``, as CrossViT's CLS token attends to itself too). Query, key and value
    share one fused projection ``to_qkv``; cross-attention applies its rows separately.
    Returns ``(output, attention map or None)``; the map is post-softmax, before dropout.
    """

    def __init__(self, config, dim=None, heads=None, dim_head=None):
        super().__init__()
        dim, self.heads, dim_head = dim or config.dim, heads or config.heads, dim_head or config.dim_head
        self.config = config
        self.inner_dim = self.heads * dim_head
        self.scale = dim_head ** -0.5
        self.dropout = config.dropout
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.to_qkv = nn.Linear(dim, self.inner_dim * 3, bias=config.qkv_bias)
        self.to_out = nn.Linear(self.inner_dim, dim)
        self.out_dropout = nn.Dropout(config.dropout)

    def project(self, x, context, kv_include_self):
        """Queries, keys and values as (batch, heads, tokens, dim_head)."""
        if context is None:
            qkv = rearrange(self.to_qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
            return qkv.unbind(0)
        if kv_include_self:
            context = torch.cat((x, context), dim=1)
        weight, bias = self.to_qkv.weight, self.to_qkv.bias
        q = F.linear(x, weight[: self.inner_dim], None if bias is None else bias[: self.inner_dim])
        kv = F.linear(context, weight[self.inner_dim:], None if bias is None else bias[self.inner_dim:])
        k, v = rearrange(kv, "b n (kv h d) -> kv b h n d", kv=2, h=self.heads).unbind(0)
        return rearrange(q, "b n (h d) -> b h n d", h=self.heads), k, v

    def forward(self, x, context=None, kv_include_self=False, output_attentions=False):
        x = self.norm(x)
        q, k, v = self.project(x, context, kv_include_self)
        dropout = self.dropout if self.training else 0.0
        attn = None
        if _wants_eager(self.config, output_attentions):
            attn = torch.matmul(q, k.transpose(-1, -2)).mul_(self.scale).softmax(dim=-1)
            out = torch.matmul(F.dropout(attn, dropout), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = self.out_dropout(self.to_out(rearrange(out, "b h n d -> b n (h d)")))
        return out, (attn if output_attentions else None)


# feed-forward


class VitxFeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, config, dim=None, mlp_dim=None):
        super().__init__()
        dim, mlp_dim = dim or config.dim, mlp_dim or config.mlp_dim
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x))))))


# layer


class VitxLayer(nn.Module):
    """One transformer block: residual attention, then residual feed-forward."""

    def __init__(self, config, dim=None, heads=None, dim_head=None, mlp_dim=None):
        super().__init__()
        self.attention = VitxAttention(config, dim, heads, dim_head)
        self.feed_forward = VitxFeedForward(config, dim, mlp_dim)

    def forward(self, hidden_states, output_attentions=False):
        attended, attn = self.attention(hidden_states, output_attentions=output_attentions)
        hidden_states = hidden_states + attended
        return hidden_states + self.feed_forward(hidden_states), attn


# encoder


class VitxEncoder(nn.Module):
    """The standard ViT encoder: ``depth`` blocks and a final LayerNorm.

    The encoder contract every vitx encoder follows: ``forward(hidden_states,
    output_attentions=False, output_hidden_states=False)`` maps (batch, tokens, dim) to a
    ``BaseModelOutput`` whose ``last_hidden_state`` has the same shape. ``hidden_states`` holds
    the input and each block's output (depth + 1 tensors, before the final norm, as in HF's ViT);
    ``attentions`` one (batch, heads, tokens, tokens) map per block.
    """

    def __init__(self, config, dim=None, depth=None, heads=None, dim_head=None, mlp_dim=None):
        super().__init__()
        dim, depth = dim or config.dim, depth or config.depth
        self.layers = nn.ModuleList([VitxLayer(config, dim, heads, dim_head, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, hidden_states, output_attentions=False, output_hidden_states=False):
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                run = getattr(self, "_gradient_checkpointing_func", None) or partial(checkpoint, use_reentrant=False)
                hidden_states, attn = run(layer.__call__, hidden_states, output_attentions)
            else:
                hidden_states, attn = layer(hidden_states, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(attn)
        return BaseModelOutput(
            last_hidden_state=self.norm(hidden_states),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


# pretrained base


class VitxPreTrainedModel(PreTrainedModel):
    """Weight initialization and the Hugging Face plumbing shared by every vitx model."""

    config_class = VitxConfig
    base_model_prefix = "vitx"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VitxEmbeddings", "VitxLayer"]
    _supports_sdpa = True
    # Every Auto class of the family, so a saved folder loads as remote code through any of them.
    remote_auto_map = {"AutoModel": "modeling_vitx.VitxModel",
                       "AutoModelForImageClassification": "modeling_vitx.VitxForImageClassification"}

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, with ``auto_map`` naming the base model and the classifier."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.remote_auto_map}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, VitxEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, std=std)
            if module.cls_token is not None:
                nn.init.trunc_normal_(module.cls_token, std=std)


# models


class VitxModel(VitxPreTrainedModel):
    """The bare ViT: image in, tokens out.

    Returns ``BaseModelOutputWithPooling``: ``last_hidden_state`` (batch, tokens, dim) after the
    final norm (vit-pytorch's ``Extractor`` embedding), ``pooler_output`` the CLS token
    (``pool="cls"``) or the mean of all tokens (``pool="mean"``), and with the flags, the
    per-layer ``hidden_states`` and ``attentions``.
    """

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = VitxEmbeddings(config)
        self.encoder = VitxEncoder(config)
        self.post_init()

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None, **kwargs):
        output_attentions = _flag(output_attentions, self.config, "output_attentions")
        output_hidden_states = _flag(output_hidden_states, self.config, "output_hidden_states")
        tokens = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        encoded = self.encoder(tokens, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        sequence = encoded.last_hidden_state
        pooled = sequence.mean(dim=1) if self.config.pool == "mean" else sequence[:, 0]
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence, pooler_output=pooled,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions,
        )
        return output if _return_dict(return_dict, self.config) else output.to_tuple()


# heads


class VitxForImageClassification(VitxPreTrainedModel):
    """ViT with a linear head on the pooled token. Returns ``ImageClassifierOutput`` (loss with ``labels``)."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vitx = VitxModel(config)
        self.classifier = nn.Linear(config.dim, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None, **kwargs):
        outputs = self.vitx(pixel_values, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states,
                            interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)
        logits = self.classifier(outputs.pooler_output)
        output = ImageClassifierOutput(
            loss=image_classification_loss(logits, labels, self.config), logits=logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return output if _return_dict(return_dict, self.config) else output.to_tuple()


# registration: in process through the Auto classes, and as Hub remote code via `auto_map`

VitxModel.register_for_auto_class("AutoModel")
VitxForImageClassification.register_for_auto_class("AutoModelForImageClassification")
AutoModel.register(VitxConfig, VitxModel, exist_ok=True)
AutoModelForImageClassification.register(VitxConfig, VitxForImageClassification, exist_ok=True)

__all__ = [
    "VitxAttention",
    "VitxEmbeddings",
    "VitxEncoder",
    "VitxFeedForward",
    "VitxForImageClassification",
    "VitxLayer",
    "VitxModel",
    "VitxPatchEmbeddings",
    "VitxPreTrainedModel",
    "image_classification_loss",
]
