"""vitx: Vision Transformers as Hugging Face models.

Reads top to bottom: helpers, embeddings, attention, feed-forward, layer, encoder,
pretrained base, models, heads, registration. One attention module serves every
family; it runs ``F.scaled_dot_product_attention`` unless attention maps are asked
for (or ``attn_implementation="eager"``), in which case it runs the explicit softmax.
The architectures match vit-pytorch's ``ViT`` and ``CrossViT`` so their weights carry over exactly.
"""

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, AutoModelForImageClassification, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import ModelOutput

try:  # as Hub remote code, the config file sits beside this one in a package
    from .configuration_vitx import CrossVitxConfig, VitxConfig, patch_grid, to_pair
except ImportError:  # installed as top-level modules
    from configuration_vitx import CrossVitxConfig, VitxConfig, patch_grid, to_pair


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
    """Cuts an image into patches and projects each to ``dim``: LayerNorm -> Linear -> LayerNorm (vit-pytorch)."""

    def __init__(self, config, dim, patch_size):
        super().__init__()
        self.patch_height, self.patch_width = to_pair(patch_size)
        patch_dim = config.channels * self.patch_height * self.patch_width
        self.norm_in = nn.LayerNorm(patch_dim, eps=config.layer_norm_eps)
        self.projection = nn.Linear(patch_dim, dim)
        self.norm_out = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, pixel_values):
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


class CrossVitxCrossAttention(nn.Module):
    """CrossViT's cross-attention: one stream's CLS token attends to the other stream's patch tokens and to itself.

    The CLS token (width ``dim``) is projected to the other stream's width ``context_dim`` when the two
    differ, attends through ``VitxAttention`` (keys and values: the normed CLS token, then ``context``)
    and is projected back, as vit-pytorch's ``ProjectInOut``. Returns ``(update, map or None)``; the
    caller adds the residual. The map is (batch, cross_attn_heads, 1, 1 + context tokens).
    """

    def __init__(self, config, dim, context_dim):
        super().__init__()
        project = dim != context_dim
        self.project_in = nn.Linear(dim, context_dim) if project else nn.Identity()
        self.attention = VitxAttention(config, context_dim, config.cross_attn_heads, config.cross_attn_dim_head)
        self.project_out = nn.Linear(context_dim, dim) if project else nn.Identity()

    def forward(self, cls_token, context, output_attentions=False):
        attended, attn = self.attention(self.project_in(cls_token), context, kv_include_self=True,
                                        output_attentions=output_attentions)
        return self.project_out(attended), attn


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


class CrossVitxCrossLayer(nn.Module):
    """One cross-attention round: each stream's CLS token attends to the other stream's patch tokens.

    Patch tokens pass through unchanged; both directions read this round's input, as in vit-pytorch.
    Returns ``(sm_tokens, lg_tokens, sm_map, lg_map)``; the maps are ``None`` unless requested.
    """

    def __init__(self, config):
        super().__init__()
        self.sm_attend_lg = CrossVitxCrossAttention(config, config.sm_dim, config.lg_dim)
        self.lg_attend_sm = CrossVitxCrossAttention(config, config.lg_dim, config.sm_dim)

    def forward(self, sm_tokens, lg_tokens, output_attentions=False):
        sm_cls, sm_patches = sm_tokens[:, :1], sm_tokens[:, 1:]
        lg_cls, lg_patches = lg_tokens[:, :1], lg_tokens[:, 1:]
        sm_update, sm_attn = self.sm_attend_lg(sm_cls, lg_patches, output_attentions)
        lg_update, lg_attn = self.lg_attend_sm(lg_cls, sm_patches, output_attentions)
        sm_tokens = torch.cat((sm_cls + sm_update, sm_patches), dim=1)
        lg_tokens = torch.cat((lg_cls + lg_update, lg_patches), dim=1)
        return sm_tokens, lg_tokens, sm_attn, lg_attn


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


@dataclass
class CrossVitxModelOutput(ModelOutput):
    r"""Output of [`CrossVitxModel`]: both streams' tokens and, with the flags, what happened inside.

    Shapes, with ``N_sm`` / ``N_lg`` the small- / large-patch stream's patches per image (the seed's
    CrossViT on 256x256 images: ``N_sm = 256``, ``N_lg = 16``):

    Args:
        sm_last_hidden_state (`(batch, 1 + N_sm, sm_dim)`): the small-patch stream's tokens out of the
            multi-scale encoder (CLS first), vit-pytorch's ``Extractor(layer_name="multi_scale_encoder")``
            small-scale embedding.
        lg_last_hidden_state (`(batch, 1 + N_lg, lg_dim)`): the large-patch stream's tokens, likewise.
        sm_pooler_output (`(batch, sm_dim)`): the small-patch stream's CLS token.
        lg_pooler_output (`(batch, lg_dim)`): the large-patch stream's CLS token.
        sm_hidden_states (tuple of `(batch, 1 + N_sm, sm_dim)`, with `output_hidden_states`): for each
            multi-scale block, the tokens entering it and the output of each of its ``sm_enc_depth``
            transformer layers (before the encoder's final norm), then ``sm_last_hidden_state``:
            ``depth * (sm_enc_depth + 1) + 1`` tensors.
        lg_hidden_states (tuple of `(batch, 1 + N_lg, lg_dim)`, with `output_hidden_states`): likewise,
            ``depth * (lg_enc_depth + 1) + 1`` tensors.
        sm_attentions (tuple of `(batch, sm_enc_heads, 1 + N_sm, 1 + N_sm)`, with `output_attentions`): the
            small-patch stream's self-attention maps (post-softmax), one per transformer layer:
            ``depth * sm_enc_depth`` maps.
        lg_attentions (tuple of `(batch, lg_enc_heads, 1 + N_lg, 1 + N_lg)`, with `output_attentions`):
            likewise, ``depth * lg_enc_depth`` maps.
        sm_cross_attentions (tuple of `(batch, cross_attn_heads, 1, 1 + N_lg)`, with `output_attentions`):
            the small-patch CLS token attending to itself (key 0) and the large-patch stream's patch
            tokens, one map per cross-attention round: ``depth * cross_attn_depth`` maps.
        lg_cross_attentions (tuple of `(batch, cross_attn_heads, 1, 1 + N_sm)`, with `output_attentions`):
            the large-patch CLS token attending to itself and the small-patch stream's patch tokens.
    """

    sm_last_hidden_state: Optional[torch.FloatTensor] = None
    lg_last_hidden_state: Optional[torch.FloatTensor] = None
    sm_pooler_output: Optional[torch.FloatTensor] = None
    lg_pooler_output: Optional[torch.FloatTensor] = None
    sm_hidden_states: Optional[tuple] = None
    lg_hidden_states: Optional[tuple] = None
    sm_attentions: Optional[tuple] = None
    lg_attentions: Optional[tuple] = None
    sm_cross_attentions: Optional[tuple] = None
    lg_cross_attentions: Optional[tuple] = None


class CrossVitxMultiScaleBlock(nn.Module):
    """One multi-scale block: each stream's ``VitxEncoder``, then ``cross_attn_depth`` cross-attention rounds.

    Returns a ``CrossVitxModelOutput`` for this block (no pooled tokens; the hidden states without
    the block's output, which is the next block's input).
    """

    def __init__(self, config):
        super().__init__()
        self.sm_encoder = VitxEncoder(config, config.sm_dim, config.sm_enc_depth, config.sm_enc_heads,
                                      config.sm_enc_dim_head, config.sm_enc_mlp_dim)
        self.lg_encoder = VitxEncoder(config, config.lg_dim, config.lg_enc_depth, config.lg_enc_heads,
                                      config.lg_enc_dim_head, config.lg_enc_mlp_dim)
        self.cross_layers = nn.ModuleList([CrossVitxCrossLayer(config) for _ in range(config.cross_attn_depth)])

    def forward(self, sm_tokens, lg_tokens, output_attentions=False, output_hidden_states=False):
        sm = self.sm_encoder(sm_tokens, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        lg = self.lg_encoder(lg_tokens, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        sm_tokens, lg_tokens = sm.last_hidden_state, lg.last_hidden_state
        sm_cross, lg_cross = [], []
        for layer in self.cross_layers:
            sm_tokens, lg_tokens, sm_attn, lg_attn = layer(sm_tokens, lg_tokens, output_attentions=output_attentions)
            sm_cross.append(sm_attn)
            lg_cross.append(lg_attn)
        return CrossVitxModelOutput(
            sm_last_hidden_state=sm_tokens, lg_last_hidden_state=lg_tokens,
            sm_hidden_states=sm.hidden_states, lg_hidden_states=lg.hidden_states,
            sm_attentions=sm.attentions, lg_attentions=lg.attentions,
            sm_cross_attentions=tuple(sm_cross) if output_attentions else None,
            lg_cross_attentions=tuple(lg_cross) if output_attentions else None,
        )


class CrossVitxMultiScaleEncoder(nn.Module):
    """CrossViT's multi-scale encoder: ``depth`` blocks over the small- and large-patch token streams.

    ``forward(sm_tokens, lg_tokens, output_attentions=False, output_hidden_states=False)`` returns a
    ``CrossVitxModelOutput`` without pooled tokens; its docstring gives every shape.
    """

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList([CrossVitxMultiScaleBlock(config) for _ in range(config.depth)])

    def forward(self, sm_tokens, lg_tokens, output_attentions=False, output_hidden_states=False):
        blocks = []
        for block in self.layers:
            blocks.append(block(sm_tokens, lg_tokens, output_attentions=output_attentions,
                                output_hidden_states=output_hidden_states))
            sm_tokens, lg_tokens = blocks[-1].sm_last_hidden_state, blocks[-1].lg_last_hidden_state

        def gather(name, wanted, last=()):
            return tuple(t for block in blocks for t in getattr(block, name)) + last if wanted else None

        return CrossVitxModelOutput(
            sm_last_hidden_state=sm_tokens, lg_last_hidden_state=lg_tokens,
            sm_hidden_states=gather("sm_hidden_states", output_hidden_states, (sm_tokens,)),
            lg_hidden_states=gather("lg_hidden_states", output_hidden_states, (lg_tokens,)),
            sm_attentions=gather("sm_attentions", output_attentions),
            lg_attentions=gather("lg_attentions", output_attentions),
            sm_cross_attentions=gather("sm_cross_attentions", output_attentions),
            lg_cross_attentions=gather("lg_cross_attentions", output_attentions),
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


class CrossVitxPreTrainedModel(VitxPreTrainedModel):
    """``VitxPreTrainedModel``'s weight initialization and Hugging Face plumbing, for CrossViT's config and classes."""

    config_class = CrossVitxConfig
    _no_split_modules = ["VitxEmbeddings", "VitxLayer", "CrossVitxCrossLayer"]
    remote_auto_map = {"AutoModel": "modeling_vitx.CrossVitxModel",
                       "AutoModelForImageClassification": "modeling_vitx.CrossVitxForImageClassification"}


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


class CrossVitxModel(CrossVitxPreTrainedModel):
    """The bare CrossViT (the seed's "Two Stream ViT"): image in, both streams' tokens out.

    The image is embedded twice, in ``sm_patch_size`` and in ``lg_patch_size`` patches (each stream with
    its CLS token), and the two token streams go through the multi-scale encoder. Returns
    ``CrossVitxModelOutput`` (shapes in its docstring). ``interpolate_pos_encoding=True`` runs at an
    image size both patch sizes divide.
    """

    def __init__(self, config):
        super().__init__(config)
        self.sm_embeddings = VitxEmbeddings(config, config.sm_dim, config.sm_patch_size, use_cls_token=True)
        self.lg_embeddings = VitxEmbeddings(config, config.lg_dim, config.lg_patch_size, use_cls_token=True)
        self.encoder = CrossVitxMultiScaleEncoder(config)
        self.post_init()

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None, **kwargs):
        output_attentions = _flag(output_attentions, self.config, "output_attentions")
        output_hidden_states = _flag(output_hidden_states, self.config, "output_hidden_states")
        encoded = self.encoder(
            self.sm_embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding),
            self.lg_embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        output = CrossVitxModelOutput(**encoded, sm_pooler_output=encoded.sm_last_hidden_state[:, 0],
                                      lg_pooler_output=encoded.lg_last_hidden_state[:, 0])
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


@dataclass
class CrossVitxImageClassifierOutput(ImageClassifierOutput):
    r"""Output of [`CrossVitxForImageClassification`]: an ``ImageClassifierOutput`` with per-stream internals.

    ``loss`` and ``logits`` as any HF classifier. The two streams' tokens have different shapes, so
    ``hidden_states`` and ``attentions`` stay ``None``; the flags fill the per-stream fields instead,
    with the shapes [`CrossVitxModelOutput`] documents: ``sm_hidden_states``, ``lg_hidden_states``,
    ``sm_attentions``, ``lg_attentions``, ``sm_cross_attentions``, ``lg_cross_attentions``.
    """

    sm_hidden_states: Optional[tuple] = None
    lg_hidden_states: Optional[tuple] = None
    sm_attentions: Optional[tuple] = None
    lg_attentions: Optional[tuple] = None
    sm_cross_attentions: Optional[tuple] = None
    lg_cross_attentions: Optional[tuple] = None


def _normed_linear_head(config, dim):
    """vit-pytorch CrossViT's head on one stream's CLS token: LayerNorm -> Linear to the labels."""
    return nn.Sequential(nn.LayerNorm(dim, eps=config.layer_norm_eps), nn.Linear(dim, config.num_labels))


class CrossVitxForImageClassification(CrossVitxPreTrainedModel):
    """CrossViT with a head per stream: logits = small head(small CLS) + large head(large CLS), as vit-pytorch.

    Returns ``CrossVitxImageClassifierOutput`` (an ``ImageClassifierOutput``; loss with ``labels``,
    following HF's ``problem_type`` rules).
    """

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vitx = CrossVitxModel(config)
        self.sm_classifier = _normed_linear_head(config, config.sm_dim)
        self.lg_classifier = _normed_linear_head(config, config.lg_dim)
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None, **kwargs):
        outputs = self.vitx(pixel_values, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states,
                            interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)
        logits = self.sm_classifier(outputs.sm_pooler_output) + self.lg_classifier(outputs.lg_pooler_output)
        output = CrossVitxImageClassifierOutput(
            loss=image_classification_loss(logits, labels, self.config), logits=logits,
            sm_hidden_states=outputs.sm_hidden_states, lg_hidden_states=outputs.lg_hidden_states,
            sm_attentions=outputs.sm_attentions, lg_attentions=outputs.lg_attentions,
            sm_cross_attentions=outputs.sm_cross_attentions, lg_cross_attentions=outputs.lg_cross_attentions,
        )
        return output if _return_dict(return_dict, self.config) else output.to_tuple()


# registration: in process through the Auto classes, and as Hub remote code via `auto_map`

VitxModel.register_for_auto_class("AutoModel")
VitxForImageClassification.register_for_auto_class("AutoModelForImageClassification")
AutoModel.register(VitxConfig, VitxModel, exist_ok=True)
AutoModelForImageClassification.register(VitxConfig, VitxForImageClassification, exist_ok=True)
CrossVitxModel.register_for_auto_class("AutoModel")
CrossVitxForImageClassification.register_for_auto_class("AutoModelForImageClassification")
AutoModel.register(CrossVitxConfig, CrossVitxModel, exist_ok=True)
AutoModelForImageClassification.register(CrossVitxConfig, CrossVitxForImageClassification, exist_ok=True)

__all__ = [
    "CrossVitxCrossAttention",
    "CrossVitxCrossLayer",
    "CrossVitxForImageClassification",
    "CrossVitxImageClassifierOutput",
    "CrossVitxModel",
    "CrossVitxModelOutput",
    "CrossVitxMultiScaleBlock",
    "CrossVitxMultiScaleEncoder",
    "CrossVitxPreTrainedModel",
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
