"""vitx: Vision Transformers as Hugging Face models.

Reads top to bottom: helpers, embeddings, attention, feed-forward, layer, encoders, pretrained base, models,
heads, semantic segmentation, pretraining (the masked autoencoder), backbone (feature maps for dense heads),
registration. The data path: ``pixel_values`` -> embeddings (patches, CLS token, positions) -> an encoder (any
module that keeps the encoder contract of ``VitxEncoderBase``) -> the pooled token -> a head.

One attention module serves every family: ``F.scaled_dot_product_attention``, or the explicit softmax when
attention maps are requested or the model's ``attn_implementation`` is ``"eager"``. Blocks take their sizes as
keywords and the config only for what the whole model shares (dropout, norm epsilon, QKV bias, the attention
implementation). No module writes into a tensor another module returned, and every parameter is used by its
own module's forward, so hooks, adapters and offloading see the model as it runs. The architectures match
vit-pytorch's ``ViT`` and ``CrossViT`` so their weights carry over exactly; with ``patch_norm=False`` the ViT
is the classic ViT of HF transformers and timm.
"""

import copy
import importlib
import inspect
import math
from dataclasses import dataclass
from functools import partial, wraps
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import (AutoBackbone, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                          AutoModelForPreTraining, AutoModelForSemanticSegmentation, PretrainedConfig,
                          PreTrainedModel, ViTImageProcessor)
from transformers.modeling_outputs import (BackboneOutput, BaseModelOutput, BaseModelOutputWithPooling,
                                           ImageClassifierOutput, SemanticSegmenterOutput)
from transformers.utils import ModelOutput

try:  # as Hub remote code, the config file sits beside this one in a package
    from .configuration_vitx import (CrossVitxConfig, VitxConfig, _check_choice, _check_feature_pyramid,
                                     _encoder_options, _to_pair)
except ImportError:  # installed as top-level modules. Imported by name: transformers 4.x scans remote code for
    # `from X import` lines outside try blocks and would take this fallback for a package the Hub copy needs.
    _configuration = importlib.import_module("configuration_vitx")
    CrossVitxConfig, VitxConfig, _check_choice, _check_feature_pyramid, _encoder_options, _to_pair = (
        getattr(_configuration, name) for name in ("CrossVitxConfig", "VitxConfig", "_check_choice",
                                                   "_check_feature_pyramid", "_encoder_options", "_to_pair"))

try:  # transformers >= 4.52: the layer contract its own models follow (checkpointing, every_n_layers)
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # older transformers: the same contract, written out
    class GradientCheckpointingLayer(nn.Module):
        """A layer whose ``forward`` (not ``__call__``, so its hooks fire once) is checkpointed when enabled."""

        gradient_checkpointing = False

        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__(**kwargs)
            forward = cls.forward

            @wraps(forward)
            def checkpointed_forward(self, *args, **kwargs):
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    return self._gradient_checkpointing_func(partial(forward, self, **kwargs), *args)
                return forward(self, *args, **kwargs)

            cls.forward = checkpointed_forward

try:  # transformers >= 5: the backbone contract's public home
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # transformers 4.x
    from transformers.utils.backbone_utils import BackboneMixin

# helpers


def _flag(value, config, name):
    """A forward flag, falling back to the config's default as HF models do."""
    return bool(value) if value is not None else bool(getattr(config, name, False))


def _return_dict(value, config):
    return value if value is not None else getattr(config, "return_dict", True)


def _num_items_in_batch(model, kwargs):
    """The Trainer's ``num_items_in_batch``, the one extra keyword a head takes; any other is a mistake."""
    unknown = sorted(set(kwargs) - {"num_items_in_batch"})
    if unknown:
        raise TypeError(f"{type(model).__name__}.forward() got unexpected keyword arguments {unknown}.")
    return kwargs.get("num_items_in_batch")


def _image_classification_loss(logits, labels, config, num_items_in_batch=None):
    """HF's ``problem_type`` rules: regression, single-label or multi-label classification; without a
    ``config.problem_type``, one label means regression, integer labels single-label (the config is not written:
    a forward changes nothing, and a compiled training step keeps its first graph).

    ``num_items_in_batch`` is the Trainer's count of labels over every micro-batch of an optimizer step (and
    every process): the loss is then the sum over this micro-batch divided by it, so gradient accumulation
    and data parallelism give the gradient of one large batch. Class id -100 is ignored, as in HF's losses.
    """
    if labels is None:
        return None
    labels = labels.to(logits.device)
    num_labels = logits.shape[-1]
    problem_type = config.problem_type or ("regression" if num_labels == 1 else "single_label_classification"
                                           if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
    reduction = "mean" if num_items_in_batch is None else "sum"
    if problem_type == "regression":
        loss = F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype), reduction=reduction) \
            if num_labels == 1 else F.mse_loss(logits, labels.to(logits.dtype), reduction=reduction)
    elif problem_type == "single_label_classification":
        labels = labels.view(-1)
        _check_class_ids(labels, num_labels)
        loss = F.cross_entropy(logits.view(-1, num_labels), labels, reduction=reduction)
    else:
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction=reduction)
    return loss if num_items_in_batch is None else loss / num_items_in_batch


def _check_class_ids(labels, num_labels, ignore_index=-100):
    """A clear error for class ids outside [0, num_labels) (other than the ignored ``ignore_index``), in eager
    mode; traced and compiled graphs skip it, since it reads the labels' values."""
    if torch.compiler.is_compiling() or not labels.numel():
        return
    wrong = ((labels < 0) | (labels >= num_labels)) & (labels != ignore_index)
    if wrong.any():
        raise ValueError(f"`labels` must be class ids in [0, {num_labels}) or {ignore_index} (ignored), got "
                         f"{sorted(set(labels[wrong].tolist()))[:10]}.")


def _qualified_name(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _patchify(pixel_values, patch_size):
    """(batch, channels, rows * ph, cols * pw) -> (batch, rows * cols, ph * pw * channels): row-major patches, each
    flattened as (patch row, patch column, channel) as in vit-pytorch. No reshape names the batch size, so an
    exported graph keeps it dynamic."""
    patch_height, patch_width = _to_pair(patch_size)
    patches = pixel_values.unflatten(2, (-1, patch_height)).unflatten(4, (-1, patch_width))
    return patches.permute(0, 2, 4, 3, 5, 1).flatten(3).flatten(1, 2)


def _tokens_to_map(tokens, num_prefix_tokens, height, width):
    """(batch, prefix + height * width, dim) tokens -> a (batch, dim, height, width) map: the prefix tokens (the
    CLS token) dropped, the patch tokens laid out row-major, in the order the patch embedding made them."""
    return tokens[:, num_prefix_tokens:].unflatten(1, (height, width)).permute(0, 3, 1, 2)


# embeddings


def _body_linear(layer):
    """Mark ``layer`` as a linear layer of the transformer itself (patch embedding, attention, feed-forward), which
    ``config.linear_init`` initializes; the layers of heads and decoders keep PyTorch's draw."""
    layer._vitx_body_linear = True
    return layer


class VitxPatchEmbeddings(nn.Module):
    """Cuts an image into patches and projects each to ``dim``, as (batch, patches, dim) in row-major patch order.

    ``patch_norm=True`` (vit-pytorch): LayerNorm -> Linear -> LayerNorm on the flattened patches (``_patchify``).
    ``patch_norm=False`` (the classic ViT of HF and timm): a Conv2d with kernel and stride equal to the patch.
    """

    def __init__(self, config, *, dim, patch_size, patch_norm):
        super().__init__()
        self.patch_size, self.patch_norm = patch_size, patch_norm
        self.patch_height, self.patch_width = _to_pair(patch_size)
        if patch_norm:
            patch_dim = config.channels * self.patch_height * self.patch_width
            self.norm_in = nn.LayerNorm(patch_dim, eps=config.layer_norm_eps)
            self.projection = _body_linear(nn.Linear(patch_dim, dim))
            self.norm_out = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        else:
            self.projection = nn.Conv2d(config.channels, dim, kernel_size=(self.patch_height, self.patch_width),
                                        stride=(self.patch_height, self.patch_width))

    def forward(self, pixel_values):
        if not self.patch_norm:
            return self.projection(pixel_values).flatten(2).transpose(1, 2)
        return self.norm_out(self.projection(self.norm_in(_patchify(pixel_values, self.patch_size))))


class VitxEmbeddings(nn.Module):
    """Patch embeddings, an optional CLS token, learned positions and embedding dropout.

    The position table is learned for ``config.image_size``; ``interpolate_pos_encoding=True`` resamples it
    (bicubic, as HF's ViT) for other resolutions. ``visible_patches`` (batch, kept) indices keep only those
    patch tokens, with their positions (masked autoencoder pretraining).
    """

    def __init__(self, config, *, dim, patch_size, patch_norm, use_cls_token):
        super().__init__()
        self.image_size, self.channels, self.patch_size = _to_pair(config.image_size), config.channels, _to_pair(patch_size)
        self.grid = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.patch_embeddings = VitxPatchEmbeddings(config, dim=dim, patch_size=patch_size, patch_norm=patch_norm)
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

    def forward(self, pixel_values, interpolate_pos_encoding=False, visible_patches=None):
        self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        positions = self.position_embeddings
        if interpolate_pos_encoding:
            positions = self.interpolate_pos_encoding(*pixel_values.shape[-2:])
        tokens = self.patch_embeddings(pixel_values) + positions[:, self.num_prefix_tokens:]
        if visible_patches is not None:
            tokens = tokens.gather(1, visible_patches.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        if self.cls_token is not None:
            cls_token = self.cls_token + positions[:, :1]
            tokens = torch.cat((cls_token.expand_as(tokens[:, :1]), tokens), dim=1)
        return self.dropout(tokens)


# attention


class VitxAttention(nn.Module):
    """Pre-norm multi-head attention: the one attention module of every vitx family.

    Self-attention: ``attention(x)``. Cross-attention: ``attention(x, context)``: queries from ``x``, keys and
    values from the normed ``x`` followed by ``context`` (CrossViT's CLS token attends to itself and the other
    stream). Query, key and value come from one fused projection ``to_qkv``, always called as a module.
    Returns ``(output, attention map or None)``; the map is post-softmax, before dropout. ``to_qkv`` and ``to_out``
    start as ``config.attention_init`` says, or as ``default_init`` when it is None (``_mimetic_init_``).
    """

    default_init = "random"

    def __init__(self, config, *, dim, heads, dim_head):
        super().__init__()
        self.config = config
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.to_qkv = _body_linear(nn.Linear(dim, heads * dim_head * 3, bias=config.qkv_bias))
        self.to_out = _body_linear(nn.Linear(heads * dim_head, dim))
        self.out_dropout = nn.Dropout(config.dropout)
        if (config.attention_init or self.default_init) == "mimetic":
            self.to_qkv._vitx_mimetic = self.to_out._vitx_mimetic = True  # see VitxPreTrainedModel._init_weights

    def project(self, x, context):
        """Queries, keys and values as (batch, heads, tokens, dim_head). Unbinding the (query, key, value) axis
        before moving heads ahead of tokens lets the backward stack the gradients straight into the projection's
        layout: one copy where unbinding a (3, batch, heads, tokens, dim_head) permutation costs two."""
        tokens = x if context is None else torch.cat((x, context), dim=1)
        q, k, v = (t.transpose(1, 2) for t in self.to_qkv(tokens).unflatten(-1, (3, self.heads, -1)).unbind(2))
        return (q if context is None else q[:, :, : x.shape[1]]), k, v

    def attend(self, q, k, v, output_attentions):
        """Softmax attention: SDPA, or the explicit softmax when the map is wanted or ``eager`` is configured.
        Returns (values, map or None)."""
        dropout = self.config.dropout if self.training else 0.0
        if not output_attentions and self.config._attn_implementation != "eager":
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale), None
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return F.dropout(attn, dropout, self.training) @ v, (attn if output_attentions else None)

    def forward(self, x, context=None, output_attentions=False):
        x = self.norm(x)
        out, attn = self.attend(*self.project(x, context), output_attentions)
        return self.out_dropout(self.to_out(out.transpose(1, 2).flatten(2))), attn


# Mimetic initialization (Trockman & Kolter, 2023): the (noise, identity) scales of the paper's ViT recipe for the
# query-key product and for the value-output product
MIMETIC_QUERY_KEY, MIMETIC_VALUE_OUTPUT = (0.7, 0.7), (0.4, 0.4)


def _orthonormal(count, rows, cols):
    """``count`` random (rows, cols) matrices with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    q = torch.linalg.qr(torch.randn(count, max(rows, cols), min(rows, cols), device="cpu")).Q
    return q if rows >= cols else q.transpose(1, 2)


@torch.no_grad()
def _mimetic_init_(attention, layer):
    """Draw ``layer`` (``attention.to_qkv`` or ``attention.to_out``) so that each head's W_q W_k^T starts near
    +identity and the layer's W_v W_o near -identity, the pattern of trained ViTs' attention.

    The paper factors alpha Z + beta I (Z ~ N(0, 1/dim)) by an SVD per head, dim^3 work each (seconds per layer at
    width 768). The same product without one: a head's W_q = Q with orthonormal columns and W_k = beta Q +
    alpha G (G ~ N(0, 1/dim)) give W_q W_k^T = P (beta I + alpha Z') with P the projection onto Q's columns and
    Z' = Q G^T again N(0, 1/dim) there; W_v orthonormal and W_o = -beta W_v^T + alpha G likewise give
    W_v W_o = P (alpha Z' - beta I). ``to_out`` is drawn from ``to_qkv``'s values as they stand (drawn just
    before, or loaded). Drawn on the CPU, whatever device the layers are built on.
    """
    dim, inner = attention.to_qkv.in_features, attention.to_out.in_features
    if layer is attention.to_qkv:
        alpha, beta = MIMETIC_QUERY_KEY
        queries = _orthonormal(attention.heads, dim, inner // attention.heads).transpose(0, 1).flatten(1)
        keys = beta * queries + alpha * torch.randn(dim, inner, device="cpu") / dim ** 0.5
        weight = torch.cat((queries, keys, _orthonormal(1, dim, inner)[0]), dim=1).T
    else:
        alpha, beta = MIMETIC_VALUE_OUTPUT
        values = attention.to_qkv.weight[2 * inner:].detach().float().cpu().T
        weight = -beta * values + alpha * torch.randn(dim, inner, device="cpu") / dim ** 0.5
    layer.weight.copy_(weight.to(layer.weight))


def _iterative_pinv_times(x, values, iterations):
    """``pinv(x) @ values`` for each (batch, heads) matrix in ``x``, by the iterations of Razavi et al. (2014).

    The iteration is z <- z p(x z) / 4 with p(X) = 13 - 15 X + 7 X^2 - X^3, from z_0 = x^T / scale, where
    the scale is the largest row sum times the largest column sum over a sample's heads (nystrom-attention
    takes them over the whole batch, which makes a sample's result depend on the rest of its batch; here
    it never does). Every X_k = x z_k is a polynomial in X_0, so they commute: X_{k+1} = X_k p(X_k) / 4
    needs two square products (X^2, then X^2 (7 X - X^2 - 15)), and pinv(x) @ values = z_0 P_0 ... P_{n-1}
    values with P_k = p(X_k) / 4 is applied right to left as thin products. That is ~14.5 square products
    instead of the 24 of forming z: the same result in exact arithmetic, ~40% fewer FLOPs.
    """
    abs_x = x.abs()
    scale = abs_x.sum(dim=-1).flatten(1).amax(dim=1) * abs_x.sum(dim=-2).flatten(1).amax(dim=1)
    z = x.transpose(-1, -2) / scale[:, None, None, None]
    fifteen = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device) * 15
    xz, powers = x @ z, []
    for _ in range(iterations - 1):
        square = xz @ xz
        powers.append((xz, square))
        xz = (square @ (xz * 7 - square - fifteen)).mul_(0.25).add_(xz, alpha=3.25)
    # the last P needs no square of its own: Horner with thin products, 13 y - X (15 y - X (7 y - X y))
    y = values
    for coefficient in (7, 15, 13):
        y = (xz @ y).neg_().add_(values, alpha=coefficient)
    y = y.mul_(0.25)
    for xz, square in reversed(powers):  # P y = (13 y - 15 X y + X^2 (7 y - X y)) / 4
        xy = xz @ y
        y = (square @ xy.neg().add_(y, alpha=7)).sub_(xy, alpha=15).add_(y, alpha=13).mul_(0.25)
    return z @ y


class VitxLandmarkAttention(VitxAttention):
    """Nystrom landmark attention (Xiong et al., 2021): ``VitxAttention`` with a linear-cost attend step.

    Tokens are zero-padded at the front to a multiple of ``num_landmarks`` (as nystrom-attention does), landmarks
    are the means of consecutive groups of queries and keys, and softmax(QK^T) V is approximated by
    softmax(Q K_l^T) pinv(softmax(Q_l K_l^T)) softmax(Q_l K^T) V. Both outer products are attention ops of their
    own, so they run as two fused SDPA calls evaluated right to left: no tokens x landmarks (let alone
    tokens x tokens) tensor exists. With ``output_attentions`` (or ``eager``) the approximate map is formed
    and the output computed through it, so gradients reach the map. A depthwise convolution over the values
    (``residual_conv_kernel``, 0 = off) adds a local residual. Self-attention only. Starts mimetic unless
    ``config.attention_init`` says otherwise: from scratch it trains markedly faster so (docs/training.md,
    "Initialization").
    """

    default_init = "mimetic"

    def __init__(self, config, *, dim, heads, dim_head, num_landmarks, pinv_iterations, residual_conv_kernel):
        super().__init__(config, dim=dim, heads=heads, dim_head=dim_head)
        self.num_landmarks, self.pinv_iterations = num_landmarks, pinv_iterations
        self.res_conv = nn.Conv2d(heads, heads, (residual_conv_kernel, 1), padding=(residual_conv_kernel // 2, 0),
                                  groups=heads, bias=False) if residual_conv_kernel else None
        if self.res_conv is not None:  # starts at zero: see VitxPreTrainedModel._init_weights
            self.res_conv._vitx_zero_init = True

    def forward(self, x, context=None, output_attentions=False):
        if context is not None:
            raise ValueError("landmark attention is self-attention only: it takes no `context`")
        return super().forward(x, None, output_attentions)

    def attend(self, q, k, v, output_attentions):
        tokens = q.shape[-2]
        padding = (self.num_landmarks - tokens % self.num_landmarks) % self.num_landmarks
        q_padded, k_padded, v_padded = (F.pad(t, (0, 0, padding, 0)) if padding else t for t in (q, k, v))
        q_landmarks, k_landmarks = (t.unflatten(-2, (self.num_landmarks, -1)).mean(dim=-2) for t in (q_padded, k_padded))
        del q_padded  # only its landmark means are needed: the padded copy goes before the attention products
        kernel = (q_landmarks @ k_landmarks.transpose(-1, -2) * self.scale).softmax(dim=-1)
        if output_attentions or self.config._attn_implementation == "eager":
            to_landmarks = (q @ k_landmarks.transpose(-1, -2) * self.scale).softmax(dim=-1)
            identity = torch.eye(self.num_landmarks, device=q.device).expand(kernel.shape)
            kernel_inv = _iterative_pinv_times(kernel.float(), identity, self.pinv_iterations).to(kernel.dtype)
            from_landmarks = (q_landmarks @ k_padded.transpose(-1, -2) * self.scale).softmax(dim=-1)
            attn = to_landmarks @ kernel_inv @ from_landmarks[..., padding:]  # padded keys carry zero values
            out = attn @ v
        else:
            from_landmarks = F.scaled_dot_product_attention(q_landmarks, k_padded, v_padded, scale=self.scale)
            landmark_values = _iterative_pinv_times(kernel.float(), from_landmarks.float(), self.pinv_iterations)
            out = F.scaled_dot_product_attention(q, k_landmarks, landmark_values.to(q.dtype), scale=self.scale)
            attn = None
        if self.res_conv is not None:  # zero padding at the front is the convolution's own zero border.
            # Depthwise convolutions are faster on CPU in channels-last layout, copy included (README, Performance).
            out = out + self.res_conv(v.contiguous(memory_format=torch.channels_last))
        return out, (attn if output_attentions else None)


class CrossVitxCrossAttention(nn.Module):
    """CrossViT's cross-attention: one stream's CLS token attends to the other stream's patch tokens and to itself.

    The CLS token (width ``dim``) is projected to the other stream's width ``context_dim`` when the two differ,
    attends through ``VitxAttention`` (keys and values: the normed CLS token, then ``context``) and is projected
    back, as vit-pytorch's ``ProjectInOut``. Returns ``(update, map or None)``; the caller adds the residual.
    The map is (batch, heads, 1, 1 + context tokens).
    """

    def __init__(self, config, *, dim, context_dim, heads, dim_head):
        super().__init__()
        project = dim != context_dim
        self.project_in = _body_linear(nn.Linear(dim, context_dim)) if project else nn.Identity()
        self.attention = VitxAttention(config, dim=context_dim, heads=heads, dim_head=dim_head)
        self.project_out = _body_linear(nn.Linear(context_dim, dim)) if project else nn.Identity()

    def forward(self, cls_token, context, output_attentions=False):
        attended, attn = self.attention(self.project_in(cls_token), context, output_attentions=output_attentions)
        return self.project_out(attended), attn

# feed-forward


class VitxFeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, config, *, dim, mlp_dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc1 = _body_linear(nn.Linear(dim, mlp_dim))
        self.fc2 = _body_linear(nn.Linear(mlp_dim, dim))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x))))))


# layer


class VitxLayer(GradientCheckpointingLayer):
    """One transformer block: residual attention, then residual feed-forward. Returns the block's tokens.

    ``attention_class`` and its ``attention_options`` pick the attend step (``VitxLandmarkAttention``). A list
    passed as ``attention_maps`` receives the block's attention map, so the block's output stays one tensor
    (what hooks, captum and transformers' layer contract expect).
    """

    def __init__(self, config, *, dim, heads, dim_head, mlp_dim, attention_class=VitxAttention, **attention_options):
        super().__init__()
        self.attention = attention_class(config, dim=dim, heads=heads, dim_head=dim_head, **attention_options)
        self.feed_forward = VitxFeedForward(config, dim=dim, mlp_dim=mlp_dim)

    def forward(self, hidden_states, attention_maps=None):
        attended, attn = self.attention(hidden_states, output_attentions=attention_maps is not None)
        if attention_maps is not None:
            attention_maps.append(attn)
        hidden_states = attended + hidden_states
        return self.feed_forward(hidden_states) + hidden_states


class CrossVitxCrossLayer(nn.Module):
    """One cross-attention round: each stream's CLS token attends to the other stream's patch tokens.

    Patch tokens pass through unchanged; both directions read this round's input, as in vit-pytorch.
    Returns ``(sm_tokens, lg_tokens, sm_map, lg_map)``; the maps are ``None`` unless requested.
    """

    def __init__(self, config):
        super().__init__()
        sizes = dict(heads=config.cross_attn_heads, dim_head=config.cross_attn_dim_head)
        self.sm_attend_lg = CrossVitxCrossAttention(config, dim=config.sm_dim, context_dim=config.lg_dim, **sizes)
        self.lg_attend_sm = CrossVitxCrossAttention(config, dim=config.lg_dim, context_dim=config.sm_dim, **sizes)

    def forward(self, sm_tokens, lg_tokens, output_attentions=False):
        sm_cls, sm_patches = sm_tokens[:, :1], sm_tokens[:, 1:]
        lg_cls, lg_patches = lg_tokens[:, :1], lg_tokens[:, 1:]
        sm_update, sm_attn = self.sm_attend_lg(sm_cls, lg_patches, output_attentions)
        lg_update, lg_attn = self.lg_attend_sm(lg_cls, sm_patches, output_attentions)
        sm_tokens = torch.cat((sm_cls + sm_update, sm_patches), dim=1)
        lg_tokens = torch.cat((lg_cls + lg_update, lg_patches), dim=1)
        return sm_tokens, lg_tokens, sm_attn, lg_attn

# encoders


class VitxEncoderBase(nn.Module):
    """The encoder contract: what ``VitxModel`` needs of an encoder, and what it declares it can do.

    ``forward(hidden_states, output_attentions=False, output_hidden_states=False)`` maps (batch, tokens, dim)
    to a ``BaseModelOutput`` whose ``last_hidden_state`` has the same shape; ``hidden_states`` holds the input
    and each block's output (depth + 1 tensors), ``attentions`` one (batch, heads, tokens, tokens) map per block.

    The class attributes say what the encoder does, and are all the model, its heads and the scripts read:
    ``normalizes_output`` (its last block output is normed, so the classification head adds no norm),
    ``returns_attentions`` and ``returns_hidden_states`` (it serves those flags; the model refuses them
    otherwise, by name), ``approximate_attentions`` (its maps approximate softmax attention: rows may not
    sum to exactly 1). An encoder registered with ``register_encoder`` subclasses this; a plain module
    mapping tokens to tokens is wrapped in an encoder that declares nothing.
    """

    normalizes_output = False
    returns_attentions = False
    returns_hidden_states = False
    approximate_attentions = False
    # What a module declares to be an encoder: a contract, not this class, since a model loaded as remote code
    # has a VitxEncoderBase of its own, and an encoder built from an installed vitx must fit it all the same.
    CONTRACT = ("normalizes_output", "returns_attentions", "returns_hidden_states", "approximate_attentions",
                "check_flags", "describe")

    def check_flags(self, output_attentions, output_hidden_states):
        """Raise, naming the flag and the encoder, when it is asked for what it does not return."""
        for flag, wanted, served in (("output_attentions", output_attentions, self.returns_attentions),
                                     ("output_hidden_states", output_hidden_states, self.returns_hidden_states)):
            if wanted and not served:
                raise ValueError(f"`{flag}=True` cannot be served: the encoder {self.describe()} does not return "
                                 f"that. Use a built-in encoder to see attention maps and layer states.")

    def describe(self):
        """The encoder's name in messages."""
        return _qualified_name(self)


class VitxEncoder(VitxEncoderBase):
    """The standard ViT encoder: ``depth`` blocks and, with ``final_norm``, a final LayerNorm.

    ``hidden_states`` are taken before the final norm, as in HF's ViT. ``attention_class`` and its options
    swap the attend step (the landmark encoder).
    """

    returns_attentions = True
    returns_hidden_states = True

    def __init__(self, config, *, dim, depth, heads, dim_head, mlp_dim, final_norm=True, attention_class=VitxAttention,
                 **attention_options):
        super().__init__()
        self.layers = nn.ModuleList([
            VitxLayer(config, dim=dim, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, attention_class=attention_class,
                      **attention_options) for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if final_norm else nn.Identity()
        self.normalizes_output = final_norm

    @classmethod
    def from_config(cls, config):
        """The encoder ``VitxConfig(encoder="vit")`` describes."""
        _encoder_options("vit", config.encoder_kwargs)
        return cls(config, dim=config.dim, depth=config.depth, heads=config.heads, dim_head=config.dim_head,
                   mlp_dim=config.mlp_dim)

    def forward(self, hidden_states, output_attentions=False, output_hidden_states=False):
        all_hidden_states = [hidden_states] if output_hidden_states else None
        attention_maps = [] if output_attentions else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_maps=attention_maps)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        return BaseModelOutput(
            last_hidden_state=self.norm(hidden_states),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(attention_maps) if output_attentions else None,
        )


class LandmarkEncoder(VitxEncoder):
    """Nystrom landmark-attention encoder for high-resolution images: vit-pytorch README's ``DenseVH``.

    Cost grows linearly with the token count. Pre-norm blocks of ``VitxLandmarkAttention`` and ``VitxFeedForward``
    with no final norm (nystrom-attention's ``Nystromformer`` layout, whose weights carry over), so the
    classification head normalizes. Built by name: ``VitxConfig(encoder="landmark", encoder_kwargs={...})``,
    whose options and defaults are ``configuration_vitx.ENCODER_OPTIONS["landmark"]``.
    """

    approximate_attentions = True

    def __init__(self, config, *, dim, depth, heads, dim_head, mlp_dim, num_landmarks, pinv_iterations,
                 residual_conv_kernel):
        super().__init__(config, dim=dim, depth=depth, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, final_norm=False,
                         attention_class=VitxLandmarkAttention, num_landmarks=num_landmarks,
                         pinv_iterations=pinv_iterations, residual_conv_kernel=residual_conv_kernel)

    @classmethod
    def from_config(cls, config):
        """The landmark encoder a ``VitxConfig(encoder="landmark", encoder_kwargs=...)`` describes."""
        return cls(config, dim=config.dim, depth=config.depth, heads=config.heads, dim_head=config.dim_head,
                   mlp_dim=config.mlp_dim, **_encoder_options("landmark", config.encoder_kwargs))


class _XTransformersEncoder(VitxEncoderBase):
    """An ``x_transformers.Encoder`` behind the encoder contract; maps and states come from its intermediates.

    ``hidden_states`` are the inputs of each attention block followed by the encoder's output. Whether that
    output is normed depends on x-transformers' options, so the head keeps a norm of its own.
    """

    returns_attentions = True
    returns_hidden_states = True

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    @classmethod
    def from_config(cls, config):
        """``x_transformers.Encoder`` from the config's dim, depth, heads, dim_head, mlp_dim, dropout + ``encoder_kwargs``."""
        try:
            from x_transformers import Encoder
        except ImportError as error:
            raise ImportError("the 'x-transformers' encoder needs the x-transformers package: "
                              "pip install 'vitx[x-transformers]' (or pip install x-transformers)") from error
        options = dict(dim=config.dim, depth=config.depth, heads=config.heads, attn_dim_head=config.dim_head,
                       ff_mult=config.mlp_dim / config.dim, attn_dropout=config.dropout, ff_dropout=config.dropout)
        return cls(Encoder(**{**options, **config.encoder_kwargs}))

    def forward(self, hidden_states, output_attentions=False, output_hidden_states=False):
        if not (output_attentions or output_hidden_states):
            return BaseModelOutput(last_hidden_state=self.transformer(hidden_states))
        out, intermediates = self.transformer(hidden_states, return_hiddens=True)
        attentions = None
        if output_attentions:
            attentions = tuple(i.post_softmax_attn for i in intermediates.attn_intermediates)
            if any(a is None for a in attentions):
                raise ValueError("this x-transformers encoder does not compute attention maps (flash attention?); "
                                 "`output_attentions=True` needs `attn_flash=False`.")
        return BaseModelOutput(last_hidden_state=out, attentions=attentions,
                               hidden_states=(*intermediates.hiddens, out) if output_hidden_states else None)


class _ModuleEncoder(VitxEncoderBase):
    """Any ``nn.Module`` mapping (batch, tokens, dim) to the same shape, as vit-pytorch's ``transformer=``.

    It returns tokens only, so it declares no maps and no per-layer states.
    """

    def __init__(self, module):
        super().__init__()
        self.module = module

    def describe(self):
        return f"module {_qualified_name(self.module)}"

    def forward(self, hidden_states, output_attentions=False, output_hidden_states=False):
        out = self.module(hidden_states)
        if not torch.is_tensor(out) or out.shape != hidden_states.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"the encoder {self.describe()} must map (batch, tokens, dim) "
                             f"{tuple(hidden_states.shape)} to the same shape, got {shape}.")
        return BaseModelOutput(last_hidden_state=out)


_ENCODERS = {}


def register_encoder(name, builder):
    """Make ``VitxConfig(encoder=name)`` build ``builder(config)``: a ``VitxEncoderBase`` (or a plain module
    mapping tokens to tokens). The builder checks ``config.encoder_kwargs`` itself."""
    if not isinstance(name, str) or not name or name == "module":
        raise ValueError(f"encoder names must be non-empty strings other than 'module', got {name!r}.")
    _ENCODERS[name] = builder


register_encoder("vit", VitxEncoder.from_config)
register_encoder("landmark", LandmarkEncoder.from_config)
register_encoder("x-transformers", _XTransformersEncoder.from_config)


def _as_encoder(module):
    """A module as an encoder: one declaring ``VitxEncoderBase.CONTRACT`` as it is, x-transformers' and any other
    module behind the contract."""
    if all(hasattr(module, name) for name in VitxEncoderBase.CONTRACT):
        return module
    if type(module).__module__.startswith("x_transformers"):
        return _XTransformersEncoder(module)
    return _ModuleEncoder(module)


def _build_encoder(config, module=None):
    """The given encoder ``module``, or the one ``config.encoder`` names."""
    if module is not None:
        return _as_encoder(module)
    if config.encoder == "module":
        raise ValueError(
            f"this model was saved with a user-supplied encoder module ({config.encoder_kwargs.get('class')}); "
            f"pass an instance of it: from_pretrained(folder, encoder_module=module)."
        )
    if config.encoder not in _ENCODERS:
        raise ValueError(f"`encoder` {config.encoder!r} is not registered; known encoders: {sorted(_ENCODERS)} "
                         f"(add one with register_encoder(name, builder)).")
    return _as_encoder(_ENCODERS[config.encoder](config))


def _config_for_encoder(config, module, model_class, kwargs):
    """The config a model of ``model_class`` with the encoder ``module`` (its ``encoder_module``, or None) is built
    from. ``kwargs`` are the constructor's other keywords: none is taken, and ``encoder`` is refused by name.

    A module is recorded as ``encoder="module"`` with its class name, so ``save_pretrained`` writes what loading
    needs, in a copy: the caller's config stays as it was.
    """
    if "encoder" in kwargs:
        given = kwargs["encoder"]
        given = f"a {type(given).__name__} module" if isinstance(given, nn.Module) else repr(given)
        raise ValueError(f"{model_class.__name__} takes no `encoder=` (got {given}): an encoder module goes to the "
                         f"model as `encoder_module=`, the name of a registered encoder to the config as `encoder=`.")
    if kwargs:
        raise TypeError(f"{model_class.__name__}() got unexpected keyword arguments {sorted(kwargs)}.")
    if module is None:
        return config
    if not isinstance(module, nn.Module):
        raise ValueError(f"`encoder_module` must be an nn.Module, got {type(module).__name__}.")
    recorded = {"class": _qualified_name(module)}
    if config.encoder != "module" or config.encoder_kwargs != recorded:
        config = copy.copy(config)
        config.encoder, config.encoder_kwargs = "module", recorded
    for submodule in module.modules():  # the module arrives with weights of its own: init leaves them be
        submodule._vitx_user_weights = True
    return config


def _dense_prediction_config(config):
    """The config a dense-prediction model (segmentation, backbone) is built from: ``linear_init=None`` taken as
    PyTorch's draw, in a copy. Glorot's draw, the default of a classifier with the patch norms, holds the
    segmentation model back (held-out mean IoU 0.42 against 0.57 on ``scripts/train_segmentation.py``'s digit
    canvases; docs/training.md, "Initialization")."""
    if config.linear_init is not None:
        return config
    config = copy.copy(config)
    config.linear_init = "pytorch"
    return config


def _require_vit_config(config, model, crossvit_lacks):
    """A ``ValueError`` unless ``config`` is a ``VitxConfig``, told by the model_type it declares: loaded as remote
    code, the config's class is another VitxConfig class object (the loader runs the folder's configuration file
    again) than the one this file imported. ``crossvit_lacks`` ends the sentence "CrossViT's two streams ..."."""
    model_type = getattr(config, "model_type", None)
    if model_type != VitxConfig.model_type:
        raise ValueError(f"{model} takes a VitxConfig (model_type {VitxConfig.model_type!r}: the ViT, with any "
                         f"encoder), got {type(config).__name__} (model_type {model_type!r}): CrossViT's two streams "
                         f"{crossvit_lacks}.")


@dataclass
class _CrossVitxStreams:
    r"""What a CrossViT output holds beside the generic fields, with ``N_sm`` / ``N_lg`` the small- / large-patch
    stream's patches per image (vit-pytorch README's CrossViT on 256x256 images: ``N_sm = 256``, ``N_lg = 16``).

    The generic ``hidden_states`` and ``attentions`` are the small-patch stream's, laid out as in transformers'
    one-stream models: ``attentions`` holds ``config.num_hidden_layers`` (``depth * sm_enc_depth``) post-softmax
    maps of `(batch, sm_enc_heads, 1 + N_sm, 1 + N_sm)`, one per transformer layer; ``hidden_states`` one tensor
    more, `(batch, 1 + N_sm, sm_dim)`: the tokens entering each transformer layer, then the stream's output
    tokens. ``sm_hidden_states`` and ``sm_attentions`` read them by the stream's name. The large-patch stream and
    the cross-attention have fields of their own, so ``to_tuple()`` holds every tensor once:

    Args:
        lg_hidden_states (tuple of `(batch, 1 + N_lg, lg_dim)`, with `output_hidden_states`): the tokens entering
            each of the large-patch stream's transformer layers, then its output tokens: ``depth * lg_enc_depth
            + 1`` tensors.
        lg_attentions (tuple of `(batch, lg_enc_heads, 1 + N_lg, 1 + N_lg)`, with `output_attentions`): the
            large-patch stream's self-attention maps, one per transformer layer: ``depth * lg_enc_depth`` maps.
        sm_cross_attentions (tuple of `(batch, cross_attn_heads, 1, 1 + N_lg)`, with `output_attentions`):
            the small-patch CLS token attending to itself (key 0) and the large-patch stream's patch
            tokens, one map per cross-attention round: ``depth * cross_attn_depth`` maps.
        lg_cross_attentions (tuple of `(batch, cross_attn_heads, 1, 1 + N_sm)`, with `output_attentions`):
            the large-patch CLS token attending to itself and the small-patch stream's patch tokens.

    ``output_hidden_states`` adds two fields (``hidden_states``, ``lg_hidden_states``: transformers' tests call
    that ``num_hidden_states_types = 2``, as for an encoder-decoder), ``output_attentions`` four.
    """

    lg_hidden_states: Optional[tuple] = None
    lg_attentions: Optional[tuple] = None
    sm_cross_attentions: Optional[tuple] = None
    lg_cross_attentions: Optional[tuple] = None

    @property
    def sm_hidden_states(self):
        """The small-patch stream's states: ``hidden_states``."""
        return self.hidden_states

    @property
    def sm_attentions(self):
        """The small-patch stream's self-attention maps: ``attentions``."""
        return self.attentions


@dataclass
class CrossVitxModelOutput(_CrossVitxStreams, BaseModelOutputWithPooling):
    r"""Output of [`CrossVitxModel`]: both streams' tokens and, with the flags, what happened inside.

    The generic fields answer for the model as a whole, so tools written for one-stream models work: they are the
    small-patch (high-resolution) stream, the stream whose width ``config.hidden_size`` names: ``last_hidden_state``
    its tokens out of the multi-scale encoder, `(batch, 1 + N_sm, sm_dim)` (CLS first), and its ``hidden_states``
    and ``attentions`` (see ``_CrossVitxStreams``). ``pooler_output`` is both CLS tokens side by side,
    `(batch, sm_dim + lg_dim)`, the image embedding (the classifier's two heads read its halves).
    ``sm_last_hidden_state`` reads ``last_hidden_state``; ``sm_pooler_output`` and ``lg_pooler_output`` each
    stream's CLS token.

    Args:
        lg_last_hidden_state (`(batch, 1 + N_lg, lg_dim)`): the large-patch stream's tokens out of the multi-scale
            encoder (CLS first). With ``last_hidden_state``: vit-pytorch's
            ``Extractor(layer_name="multi_scale_encoder")`` embeddings.
        lg_hidden_states ... lg_cross_attentions: see ``_CrossVitxStreams``.
    """

    lg_last_hidden_state: Optional[torch.FloatTensor] = None

    @property
    def sm_last_hidden_state(self):
        """The small-patch stream's tokens: ``last_hidden_state``."""
        return self.last_hidden_state

    @property
    def sm_pooler_output(self):
        """The small-patch stream's CLS token, `(batch, sm_dim)`."""
        return self.last_hidden_state[:, 0]

    @property
    def lg_pooler_output(self):
        """The large-patch stream's CLS token, `(batch, lg_dim)`."""
        return self.lg_last_hidden_state[:, 0]


class CrossVitxMultiScaleBlock(nn.Module):
    """One multi-scale block: each stream's ``VitxEncoder``, then ``cross_attn_depth`` cross-attention rounds.

    Returns a ``CrossVitxModelOutput`` for this block, without ``pooler_output``: both streams' tokens and, with
    the flags, the tokens entering each transformer layer and the maps.
    """

    def __init__(self, config):
        super().__init__()
        self.sm_encoder = VitxEncoder(config, dim=config.sm_dim, depth=config.sm_enc_depth, heads=config.sm_enc_heads,
                                      dim_head=config.sm_enc_dim_head, mlp_dim=config.sm_enc_mlp_dim)
        self.lg_encoder = VitxEncoder(config, dim=config.lg_dim, depth=config.lg_enc_depth, heads=config.lg_enc_heads,
                                      dim_head=config.lg_enc_dim_head, mlp_dim=config.lg_enc_mlp_dim)
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
        # each encoder's states end with its last layer's output, which enters no layer: the block's output
        # (after the encoder's norm and the cross-attention) is what the next layer sees
        return CrossVitxModelOutput(
            last_hidden_state=sm_tokens, lg_last_hidden_state=lg_tokens,
            hidden_states=sm.hidden_states[:-1] if output_hidden_states else None,
            lg_hidden_states=lg.hidden_states[:-1] if output_hidden_states else None,
            attentions=sm.attentions, lg_attentions=lg.attentions,
            sm_cross_attentions=tuple(sm_cross) if output_attentions else None,
            lg_cross_attentions=tuple(lg_cross) if output_attentions else None,
        )


class CrossVitxMultiScaleEncoder(nn.Module):
    """CrossViT's multi-scale encoder: ``depth`` blocks over the small- and large-patch token streams.

    ``forward(sm_tokens, lg_tokens, output_attentions=False, output_hidden_states=False)`` returns a
    ``CrossVitxModelOutput`` without ``pooler_output``. Two streams in, so not ``VitxEncoderBase``'s
    contract, but it declares the same capabilities for the tools that read them.
    """

    normalizes_output = False
    returns_attentions = True
    returns_hidden_states = True
    approximate_attentions = False

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList([CrossVitxMultiScaleBlock(config) for _ in range(config.depth)])

    def forward(self, sm_tokens, lg_tokens, output_attentions=False, output_hidden_states=False):
        blocks = []
        for block in self.layers:
            blocks.append(block(sm_tokens, lg_tokens, output_attentions=output_attentions,
                                output_hidden_states=output_hidden_states))
            sm_tokens, lg_tokens = blocks[-1].last_hidden_state, blocks[-1].lg_last_hidden_state

        def gather(name, wanted, last=()):
            return tuple(t for block in blocks for t in getattr(block, name)) + last if wanted else None

        return CrossVitxModelOutput(
            last_hidden_state=sm_tokens, lg_last_hidden_state=lg_tokens,
            hidden_states=gather("hidden_states", output_hidden_states, (sm_tokens,)),
            lg_hidden_states=gather("lg_hidden_states", output_hidden_states, (lg_tokens,)),
            attentions=gather("attentions", output_attentions),
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
    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]  # a pretrained masked autoencoder's, in a task model
    # Every Auto class of the family, so a saved folder loads as remote code through any of them.
    remote_auto_map = {"AutoModel": "modeling_vitx.VitxModel",
                       "AutoModelForImageClassification": "modeling_vitx.VitxForImageClassification",
                       "AutoModelForPreTraining": "modeling_vitx.VitxForPreTraining",
                       "AutoModelForSemanticSegmentation": "modeling_vitx.VitxForSemanticSegmentation"}

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, with ``auto_map`` naming every Auto class of the family. FSDP2
        gives a sharded model a subclass of its own, defined in torch: the folder gets vitx's code all the same."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.remote_auto_map}
        wrapper_class, self.__class__ = type(self), next(c for c in type(self).__mro__ if c.__module__ == __name__)
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.__class__ = wrapper_class

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, encoder_module=None, **kwargs):
        """``PreTrainedModel.from_pretrained``; ``encoder_module=module`` restores a model saved with an encoder
        module of the user's (its config says ``encoder="module"``). The Auto classes hand it on to here."""
        if encoder_module is not None:  # a model argument, never a config value
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            if isinstance(dtype, torch.dtype):  # built outside, so the requested dtype has not reached it
                encoder_module = encoder_module.to(dtype)
            kwargs["encoder_module"] = encoder_module
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def _fix_state_dict_key_on_load(cls, key):
        """transformers 4.48-4.51 rename every ``gamma``/``beta`` weight on load (names of old TensorFlow ports),
        which would silently re-initialize x-transformers' norm scales (``gamma``): vitx keys load as saved
        there. Later versions rename only ``LayerNorm.gamma``/``.beta``, which vitx never names, and 5.x none."""
        fixed = super()._fix_state_dict_key_on_load(key)
        return key if isinstance(fixed, str) else fixed

    @property
    def accepts_loss_kwargs(self):
        """Whether the Trainer hands the loss ``num_items_in_batch`` and leaves accumulation scaling to it. Yes
        where its label smoother takes the count too (transformers 5). transformers 4.x's Trainer neither scales
        a label-smoothed loss nor passes it the count when a model takes loss kwargs (two accumulation steps made
        twice the step), so there it keeps its own averaging, exact for micro-batches of as many labels."""
        from transformers.trainer_pt_utils import LabelSmoother

        return "num_items_in_batch" in inspect.signature(LabelSmoother.__call__).parameters

    def set_attn_implementation(self, attn_implementation):
        """Switch every attention of the model between ``"sdpa"`` (``F.scaled_dot_product_attention``, the
        default) and ``"eager"`` (the explicit softmax), as loading with ``attn_implementation=`` does."""
        _check_choice("attn_implementation", attn_implementation, ("eager", "sdpa"))
        configs = (getattr(module, "config", None) for module in self.modules())
        for config in {id(c): c for c in configs if isinstance(c, PretrainedConfig)}.values():
            config._attn_implementation = attn_implementation  # an encoder module may hold a config of its own

    def enable_input_require_grads(self):
        """Make every patch embedding's output require gradients (both of CrossViT's streams), so that adapters
        and reentrant gradient checkpointing train the layers of a model whose embeddings are frozen."""
        def require_grad(module, inputs, output):
            output.requires_grad_(True)

        self._require_grads_hooks = [module.register_forward_hook(require_grad) for module in self.modules()
                                     if isinstance(module, VitxPatchEmbeddings)]
        self._require_grads_hook = self._require_grads_hooks[0]  # the one transformers 4.x removes

    def disable_input_require_grads(self):
        """Remove the hooks ``enable_input_require_grads`` placed."""
        for hook in getattr(self, "_require_grads_hooks", ()):
            hook.remove()
        self._require_grads_hooks = []

    def base_outputs(self, pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding):
        """A task head's view of its base model (``self.vitx``): always the output dataclass."""
        return self.vitx(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                         interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)

    def _init_weights(self, module):
        """The initialization, driven by the config.

        Linear and convolution layers: PyTorch's fan-in scaled uniform draw (vit-pytorch's), except that with
        ``config.linear_init="xavier_uniform"`` (what None means with the patch norms, but in the dense-prediction
        models: ``_dense_prediction_config``) the transformer's own linear layers (patch embedding, attention,
        feed-forward; ``_body_linear``) draw their weights from Glorot's uniform (MAE's and big_vision's ViTs).
        With a float ``config.initializer_range``, all of them transformers' truncated normal of that std and zero
        biases. Position embeddings, the CLS token and the pretraining decoder's mask token: a normal draw of std
        ``config.position_init_std`` (1.0, the scale of the LayerNormed patch embeddings they join). The landmark
        attention's residual convolution over the values starts at zero, so each landmark layer starts as
        attention alone (nystrom-attention draws it as any convolution; at zero the landmark encoder trains
        faster: docs/training.md, "Initialization"), and its projections start mimetic
        (``config.attention_init``, ``_mimetic_init_``).
        Every other layer with parameters (norms, the layers of heads and decoders) gets PyTorch's own default.
        Trained from scratch, this reaches in 600 steps what transformers' 0.02 everywhere takes several times
        longer to (docs/training.md, "Initialization").
        Weights a checkpoint provides are never drawn again (transformers calls this for missing weights only),
        and a user's encoder module keeps the weights it came with.
        """
        if getattr(module, "_vitx_user_weights", False):
            return
        std, position_std = self.config.initializer_range, self.config.position_init_std
        linear_init = self.config.linear_init or ("xavier_uniform" if self.config.patch_norm else "pytorch")
        if getattr(module, "_vitx_zero_init", False):
            nn.init.zeros_(module.weight)
        elif isinstance(module, (nn.Linear, nn.Conv2d)) and std is not None:
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif getattr(module, "_vitx_body_linear", False) and linear_init == "xavier_uniform":
            module.reset_parameters()  # the bias as PyTorch draws it; the weight Glorot's uniform
            nn.init.xavier_uniform_(module.weight)
        elif isinstance(module, VitxEmbeddings):
            nn.init.normal_(module.position_embeddings, std=position_std)
            if module.cls_token is not None:
                nn.init.normal_(module.cls_token, std=position_std)
        elif isinstance(module, VitxMAEDecoder):
            nn.init.normal_(module.position_embeddings, std=position_std)
            nn.init.normal_(module.mask_token, std=position_std)
        elif hasattr(module, "reset_parameters"):  # PyTorch's draw: U(+-1/sqrt(fan_in)) for linear and convolution
            module.reset_parameters()              # layers, the identity for LayerNorm, and what a head adds
        if getattr(module, "_vitx_mimetic", False) and not module.weight.is_meta and not getattr(
                module.weight, "_is_hf_initialized", False):  # biases as drawn above; the weight mimetic
            attention = next((m for m in self.modules() if isinstance(m, VitxAttention)
                              and module in (m.to_qkv, m.to_out)), None)
            if attention is not None:
                _mimetic_init_(attention, module)


class CrossVitxPreTrainedModel(VitxPreTrainedModel):
    """``VitxPreTrainedModel``'s weight initialization and Hugging Face plumbing, for CrossViT's config and classes."""

    config_class = CrossVitxConfig
    _no_split_modules = ["VitxEmbeddings", "VitxLayer", "CrossVitxCrossLayer"]
    remote_auto_map = {"AutoModel": "modeling_vitx.CrossVitxModel",
                       "AutoModelForImageClassification": "modeling_vitx.CrossVitxForImageClassification"}

# models


class VitxModel(VitxPreTrainedModel):
    """The bare ViT: image in, tokens out.

    Returns ``BaseModelOutputWithPooling``: ``last_hidden_state`` (batch, tokens, dim), the encoder's
    output (for the standard encoder, after the final norm: vit-pytorch's ``Extractor`` embedding),
    ``pooler_output`` the CLS token (``pool="cls"``) or the mean of all tokens (``pool="mean"``), and
    with the flags, the per-layer ``hidden_states`` and ``attentions``. The encoder is the one
    ``config.encoder`` names, or any ``encoder_module=`` module (see ``VitxEncoderBase``). With ``visible_patches``
    (batch, kept) patch indices, the encoder sees only those patches (and the CLS token): tokens are then
    (batch, [1 +] kept, dim).
    """

    def __init__(self, config, *, encoder_module=None, **kwargs):
        config = _config_for_encoder(config, encoder_module, type(self), kwargs)
        super().__init__(config)
        self.embeddings = VitxEmbeddings(config, dim=config.dim, patch_size=config.patch_size,
                                         patch_norm=config.patch_norm, use_cls_token=config.pool == "cls")
        self.encoder = _build_encoder(config, encoder_module)
        if encoder_module is not None:  # built with a config of its own, it follows this model's attention implementation
            self.set_attn_implementation(self.config._attn_implementation)
        self.post_init()

    def get_input_embeddings(self):
        """The patch embedding: what adapters and ``enable_input_require_grads`` treat as the input embeddings."""
        return self.embeddings.patch_embeddings

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None, visible_patches=None):
        output_attentions = _flag(output_attentions, self.config, "output_attentions")
        output_hidden_states = _flag(output_hidden_states, self.config, "output_hidden_states")
        self.encoder.check_flags(output_attentions, output_hidden_states)
        tokens = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding,
                                 visible_patches=visible_patches)
        encoded = self.encoder(tokens, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        sequence = encoded.last_hidden_state
        pooled = sequence.mean(dim=1) if self.config.pool == "mean" else sequence[:, 0]
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence, pooler_output=pooled,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions,
        )
        return output if _return_dict(return_dict, self.config) else output.to_tuple()


class CrossVitxModel(CrossVitxPreTrainedModel):
    """The bare CrossViT (vit-pytorch README's "Two Stream ViT"): image in, both streams' tokens out.

    The image is embedded twice, in ``sm_patch_size`` and in ``lg_patch_size`` patches (each stream with
    its CLS token), and the two token streams go through the multi-scale encoder. Returns
    ``CrossVitxModelOutput`` (shapes in its docstring). ``interpolate_pos_encoding=True`` runs at an
    image size both patch sizes divide.
    """

    def __init__(self, config):
        super().__init__(config)
        self.sm_embeddings = VitxEmbeddings(config, dim=config.sm_dim, patch_size=config.sm_patch_size, patch_norm=True,
                                            use_cls_token=True)
        self.lg_embeddings = VitxEmbeddings(config, dim=config.lg_dim, patch_size=config.lg_patch_size, patch_norm=True,
                                            use_cls_token=True)
        self.encoder = CrossVitxMultiScaleEncoder(config)
        self.post_init()

    def get_input_embeddings(self):
        """The small-patch stream's patch embedding (``enable_input_require_grads`` hooks both streams')."""
        return self.sm_embeddings.patch_embeddings

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None):
        output_attentions = _flag(output_attentions, self.config, "output_attentions")
        output_hidden_states = _flag(output_hidden_states, self.config, "output_hidden_states")
        streams = self.encoder(
            self.sm_embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding),
            self.lg_embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        pooled = torch.cat((streams.last_hidden_state[:, 0], streams.lg_last_hidden_state[:, 0]), dim=-1)
        output = CrossVitxModelOutput(**streams, pooler_output=pooled)
        return output if _return_dict(return_dict, self.config) else output.to_tuple()

# heads


def _head_norm(config, encoder):
    """The norm a head puts on the encoder's tokens: none where the encoder ``normalizes_output``, else a LayerNorm
    (as vit-pytorch's efficient ViT)."""
    return nn.Identity() if encoder.normalizes_output else nn.LayerNorm(config.dim, eps=config.layer_norm_eps)


class VitxForImageClassification(VitxPreTrainedModel):
    """ViT with a linear head on the pooled token. Returns ``ImageClassifierOutput`` (loss with ``labels``).

    An encoder that does not declare ``normalizes_output`` gets a LayerNorm before the linear layer (as
    vit-pytorch's efficient ViT); the standard encoder keeps vit-pytorch ViT's layout.
    """

    def __init__(self, config, *, encoder_module=None, **kwargs):
        config = _config_for_encoder(config, encoder_module, type(self), kwargs)
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vitx = VitxModel(config, encoder_module=encoder_module)
        self.head_norm = _head_norm(config, self.vitx.encoder)
        self.classifier = nn.Linear(config.dim, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None, **kwargs):
        num_items_in_batch = _num_items_in_batch(self, kwargs)
        outputs = self.base_outputs(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        logits = self.classifier(self.head_norm(outputs.pooler_output))
        output = ImageClassifierOutput(
            loss=_image_classification_loss(logits, labels, self.config, num_items_in_batch), logits=logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return output if _return_dict(return_dict, self.config) else output.to_tuple()


@dataclass
class CrossVitxImageClassifierOutput(_CrossVitxStreams, ImageClassifierOutput):
    r"""Output of [`CrossVitxForImageClassification`]: an ``ImageClassifierOutput`` with per-stream internals.

    ``loss`` and ``logits`` as any HF classifier; ``hidden_states`` and ``attentions`` are the small-patch
    stream's, as in [`CrossVitxModelOutput`]; the flags fill the large-patch stream's and the cross-attention's
    fields of ``_CrossVitxStreams``.
    """


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
        num_items_in_batch = _num_items_in_batch(self, kwargs)
        outputs = self.base_outputs(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        # each stream's CLS token
        logits = self.sm_classifier(outputs.last_hidden_state[:, 0]) + self.lg_classifier(
            outputs.lg_last_hidden_state[:, 0])
        output = CrossVitxImageClassifierOutput(
            loss=_image_classification_loss(logits, labels, self.config, num_items_in_batch), logits=logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            lg_hidden_states=outputs.lg_hidden_states, lg_attentions=outputs.lg_attentions,
            sm_cross_attentions=outputs.sm_cross_attentions, lg_cross_attentions=outputs.lg_cross_attentions,
        )
        return output if _return_dict(return_dict, self.config) else output.to_tuple()


# semantic segmentation


class VitxLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (batch, channels, height, width) map (ConvNeXt's and ViTDet's
    channels-first norm), for the segmentation decoder and the backbone's feature pyramid. A ``nn.LayerNorm``, so
    it is initialized as every other; unlike batch norm it computes the same function in training and
    evaluation, whatever the batch."""

    def forward(self, feature_map):
        return super().forward(feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class VitxConvBlock(nn.Module):
    """3x3 convolution (``stride`` 2 halves the resolution) -> channel LayerNorm -> GELU."""

    def __init__(self, config, *, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm = VitxLayerNorm2d(out_channels, eps=config.layer_norm_eps)

    def forward(self, x):
        return F.gelu(self.norm(self.conv(x)))


def _segmentation_widths(config):
    """Channels of the decoder's convolutional path at full resolution, 1/2, 1/4, ...: one scale per halving down
    to the patch grid (``ceil(log2(patch side))`` scales), ``segmentation_pixel_dim`` doubling at each, at most
    ``segmentation_dim``."""
    scales = max(1, math.ceil(math.log2(max(_to_pair(config.patch_size)))))
    return [min(config.segmentation_dim, config.segmentation_pixel_dim * 2 ** k) for k in range(scales)]


class VitxSegmentationDecoder(nn.Module):
    """A light U-Net-like decoder from encoder tokens and pixels to per-pixel logits at full resolution.

    The tokens of the fused encoder states (each normed) are concatenated, projected to ``segmentation_dim``
    per patch and normed, and laid out as a map at the patch grid. A small convolutional path reads the pixels at full
    resolution and at each halving down to the grid (``pixel_blocks``); going back up, the map is upsampled
    (bilinear) to each of those scales, concatenated with the path's map there and mixed by a 3x3 convolution
    (``up_blocks``), so that edges and one-pixel-wide structures come from the pixels while what they are comes
    from the transformer's context. A 1x1 convolution gives the logits.
    """

    def __init__(self, config, *, num_states):
        super().__init__()
        widths = _segmentation_widths(config)
        self.project = nn.Linear(num_states * config.dim, config.segmentation_dim)
        # normed, so the transformer's map enters the convolutions on the scale of the pixels' path
        self.project_norm = nn.LayerNorm(config.segmentation_dim, eps=config.layer_norm_eps)
        self.pixel_blocks = nn.ModuleList(
            [nn.Sequential(VitxConvBlock(config, in_channels=config.channels, out_channels=widths[0]),
                           VitxConvBlock(config, in_channels=widths[0], out_channels=widths[0]))]
            + [VitxConvBlock(config, in_channels=wider, out_channels=width, stride=2)
               for wider, width in zip(widths, widths[1:])])
        coarser = widths[1:] + [config.segmentation_dim]
        self.up_blocks = nn.ModuleList([VitxConvBlock(config, in_channels=up + width, out_channels=width)
                                        for up, width in zip(coarser, widths)])
        self.classifier = nn.Conv2d(widths[0], config.num_labels, kernel_size=1)

    def forward(self, states, pixel_values, num_prefix_tokens, grid):
        """``states``: (batch, prefix + patches, dim) normed encoder states; ``grid``: the patch grid (rows,
        columns). Returns (batch, num_labels, height, width) logits at the pixels' resolution."""
        x = _tokens_to_map(self.project_norm(self.project(torch.cat(states, dim=-1))), num_prefix_tokens, *grid)
        skips = []
        for block in self.pixel_blocks:
            skips.append(block(skips[-1] if skips else pixel_values))
        for block, skip in zip(reversed(self.up_blocks), reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat((x, skip), dim=1))
        return self.classifier(x)


class VitxForSemanticSegmentation(VitxPreTrainedModel):
    """ViT for semantic segmentation: a class per pixel. Returns ``SemanticSegmenterOutput``.

    The encoder is ``VitxModel`` (``vitx.*``, and ``head_norm`` where the encoder has no final norm: the weights of
    a classifier or a masked autoencoder, which ``from_pretrained`` carries over). The states of the blocks
    ``config.segmentation_layers`` names and the last one go to ``VitxSegmentationDecoder``, which upsamples them
    step by step while a small convolutional path brings in the pixels at every scale.

    ``logits`` are (batch, num_labels, height, width): the full resolution of ``pixel_values``, where
    transformers' segmentation models return 1/4 of it and leave the rest to a bilinear resize. Upsampling
    logits cannot restore what is thinner than their stride (a vessel, a crack, a border one or two pixels
    wide); here the decoder sees the pixels at full resolution, and the loss is taken there, so every labelled
    pixel counts. ``loss`` (with ``labels``, (batch, height, width) class ids) is the cross-entropy over the
    pixels whose label is not ``config.semantic_loss_ignore_index`` (255).

    Works with any encoder; one that returns no layer states needs ``segmentation_layers=[]``. Rectangular images
    and ``interpolate_pos_encoding=True`` (other image sizes that the patch size divides) work as in the other
    models.
    """

    # The Trainer's count of labels for gradient accumulation counts every pixel not -100, ignored 255s
    # included: each micro-batch's loss is the mean over its own labelled pixels instead.
    accepts_loss_kwargs = False

    def __init__(self, config, *, encoder_module=None, **kwargs):
        _require_vit_config(config, "semantic segmentation", "have no segmentation head")
        config = _dense_prediction_config(_config_for_encoder(config, encoder_module, type(self), kwargs))
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vitx = VitxModel(config, encoder_module=encoder_module)
        if config.segmentation_layers and not self.vitx.encoder.returns_hidden_states:
            raise ValueError(f"`segmentation_layers` {config.segmentation_layers} cannot be read: the encoder "
                             f"{self.vitx.encoder.describe()} returns no layer states. Set "
                             f"`segmentation_layers=[]` to segment from its last state alone.")
        self.head_norm = _head_norm(config, self.vitx.encoder)
        self.state_norms = nn.ModuleList([nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
                                          for _ in config.segmentation_layers])
        self.decode_head = VitxSegmentationDecoder(config, num_states=len(config.segmentation_layers) + 1)
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None):
        output_hidden_states = _flag(output_hidden_states, self.config, "output_hidden_states")
        layers = self.config.segmentation_layers
        outputs = self.base_outputs(pixel_values, output_attentions, output_hidden_states or bool(layers),
                                    interpolate_pos_encoding)
        states = [norm(outputs.hidden_states[i]) for norm, i in zip(self.state_norms, layers)]
        states.append(self.head_norm(outputs.last_hidden_state))
        patch_height, patch_width = self.vitx.embeddings.patch_size
        grid = (pixel_values.shape[-2] // patch_height, pixel_values.shape[-1] // patch_width)
        logits = self.decode_head(states, pixel_values, self.vitx.embeddings.num_prefix_tokens, grid)
        output = SemanticSegmenterOutput(
            loss=self.loss(logits, labels), logits=logits,
            hidden_states=outputs.hidden_states if output_hidden_states else None, attentions=outputs.attentions,
        )
        return output if _return_dict(return_dict, self.config) else output.to_tuple()

    def loss(self, logits, labels):
        """Cross-entropy of (batch, num_labels, height, width) ``logits`` against (batch, height, width) class ids,
        over the pixels not labelled ``semantic_loss_ignore_index``; ``None`` without labels."""
        if labels is None:
            return None
        if labels.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"`labels` must be (batch, height, width) = {(logits.shape[0], *logits.shape[2:])} "
                             f"class ids, one per pixel, got {tuple(labels.shape)}.")
        labels = labels.to(logits.device).long()
        _check_class_ids(labels, self.num_labels, self.config.semantic_loss_ignore_index)
        return F.cross_entropy(logits, labels, ignore_index=self.config.semantic_loss_ignore_index)


# pretraining


@dataclass
class VitxForPreTrainingOutput(ModelOutput):
    r"""Output of [`VitxForPreTraining`] (a masked autoencoder), as transformers' ``ViTMAEForPreTrainingOutput``.

    Args:
        loss (`()`): mean squared error of the reconstruction over the masked patches only.
        logits (`(batch, patches, patch_height * patch_width * channels)`): every patch reconstructed, in image
            order, each flattened as (patch row, patch column, channel); ``unpatchify`` makes images of them.
        mask (`(batch, patches)`): 1 where a patch was hidden from the encoder, 0 where it was seen.
        ids_restore (`(batch, patches)`): the permutation that undoes the shuffle: visible patches first, then
            the masked ones, back to image order.
        hidden_states, attentions: the encoder's, over the visible tokens (with the flags).
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    mask: Optional[torch.LongTensor] = None
    ids_restore: Optional[torch.LongTensor] = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


class VitxMAEDecoder(nn.Module):
    """The masked autoencoder's light decoder: encoder tokens to ``decoder_dim``, a learned mask token in every
    hidden place, learned positions, ``decoder_depth`` vitx blocks, and a linear map to each patch's pixels."""

    def __init__(self, config):
        super().__init__()
        patch_height, patch_width = _to_pair(config.patch_size)
        self.embed = nn.Linear(config.dim, config.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches, config.decoder_dim))
        self.blocks = VitxEncoder(config, dim=config.decoder_dim, depth=config.decoder_depth, heads=config.decoder_heads,
                                  dim_head=config.decoder_dim_head, mlp_dim=4 * config.decoder_dim)
        self.to_pixels = nn.Linear(config.decoder_dim, patch_height * patch_width * config.channels)

    def forward(self, visible_tokens, ids_restore):
        tokens = self.embed(visible_tokens)
        hidden = self.mask_token.expand(tokens.shape[0], ids_restore.shape[1] - tokens.shape[1], -1)
        tokens = torch.cat((tokens, hidden), dim=1).gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return self.to_pixels(self.blocks(tokens + self.position_embeddings).last_hidden_state)


class VitxForPreTraining(VitxPreTrainedModel):
    """Masked autoencoder pretraining (He et al., 2021) of any vitx ViT, standard or landmark encoder, without labels.

    Each image gets its own random mask of ``masking_ratio`` of its patches (or the mask ``noise`` implies: the
    patches of the smallest noise stay visible). The encoder sees only the visible patches (and the CLS token
    with ``pool="cls"``); a light decoder (``decoder_*``) fills the rest with a mask token and reconstructs every
    patch's pixels; the loss is their mean squared error on the masked patches (per-patch normalized targets
    with ``norm_pix_loss``). The encoder's weights are ``VitxModel``'s (``vitx.*``, plus ``head_norm`` when the
    encoder has no final norm), so ``VitxForImageClassification.from_pretrained`` of a pretrained folder starts
    from them; the decoder is dropped there. Returns ``VitxForPreTrainingOutput``.
    """

    def __init__(self, config, *, encoder_module=None, **kwargs):
        _require_vit_config(config, "masked autoencoder pretraining", "have no pretraining head")
        config = _config_for_encoder(config, encoder_module, type(self), kwargs)
        super().__init__(config)
        self.vitx = VitxModel(config, encoder_module=encoder_module)
        self.head_norm = _head_norm(config, self.vitx.encoder)
        self.decoder = VitxMAEDecoder(config)
        self.post_init()

    def patchify(self, pixel_values):
        """Images (batch, channels, height, width) -> the patches the decoder reconstructs (see ``logits``)."""
        return _patchify(pixel_values, self.config.patch_size)

    def unpatchify(self, patches):
        """``patchify``'s inverse: (batch, patches, patch pixels) -> images (batch, channels, height, width)."""
        (rows, cols), (patch_height, patch_width) = self.vitx.embeddings.grid, _to_pair(self.config.patch_size)
        images = patches.unflatten(1, (rows, cols)).unflatten(-1, (patch_height, patch_width, -1))
        return images.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3)

    def forward(self, pixel_values=None, noise=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        batch, patches = pixel_values.shape[0], self.config.num_patches
        if noise is None:
            noise = torch.rand(batch, patches, device=pixel_values.device)
        elif noise.shape != (batch, patches):
            raise ValueError(f"`noise` must be (batch, patches) = {(batch, patches)}, got {tuple(noise.shape)}.")
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        visible = int(patches * (1 - self.config.masking_ratio))
        mask = (ids_restore >= visible).long()
        outputs = self.vitx(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            visible_patches=ids_shuffle[:, :visible], return_dict=True)
        patch_tokens = self.head_norm(outputs.last_hidden_state)[:, self.vitx.embeddings.num_prefix_tokens:]
        logits = self.decoder(patch_tokens, ids_restore)
        target = self.patchify(pixel_values).to(logits.dtype)
        if self.config.norm_pix_loss:
            target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
        loss = ((logits - target) ** 2).mean(dim=-1).mul(mask).sum() / mask.sum()
        output = VitxForPreTrainingOutput(loss=loss, logits=logits, mask=mask, ids_restore=ids_restore,
                                          hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return output if _return_dict(return_dict, self.config) else output.to_tuple()


# backbone


class VitxFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al., 2022): one (batch, dim, height, width) map to four levels at 4,
    2, 1 and 1/2 times its resolution (strides 4, 8, 16, 32 for 16-pixel patches), finest first, each with
    ``feature_pyramid_channels`` channels. Up: transposed convolutions (two for 4x, a LayerNorm and GELU between);
    down: 2x2 max-pooling; then per level a 1x1 and a 3x3 convolution, each followed by a LayerNorm."""

    def __init__(self, config):
        super().__init__()
        dim, channels = config.dim, config.feature_pyramid_channels
        self.rescale = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                          VitxLayerNorm2d(dim // 2, eps=config.layer_norm_eps), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2)),
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])
        self.project = nn.ModuleList([
            nn.Sequential(nn.Conv2d(width, channels, kernel_size=1, bias=False),
                          VitxLayerNorm2d(channels, eps=config.layer_norm_eps),
                          nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
                          VitxLayerNorm2d(channels, eps=config.layer_norm_eps))
            for width in (dim // 4, dim // 2, dim, dim)
        ])

    def forward(self, feature_map):
        return tuple(project(rescale(feature_map)) for rescale, project in zip(self.rescale, self.project))


class VitxBackbone(BackboneMixin, VitxPreTrainedModel):
    """The ViT as a transformers backbone (``AutoBackbone``), for dense heads: UperNet, DPT, Mask2Former, DETR.

    Stages (``stage_names``): "stem" (the embeddings) and "stage1" ... "stage{depth}", one per encoder layer;
    ``config.out_features`` / ``out_indices`` pick those returned (default: the last). Returns
    ``BackboneOutput``: ``feature_maps``, one (batch, dim, height / patch, width / patch) map per chosen stage,
    normed as the classifier norms the encoder's output with ``apply_layernorm``; the tokens as they are,
    (batch, [1 +] patches, dim) with the CLS token first, with ``reshape_hidden_states=False``; or, with
    ``feature_pyramid``, the chosen stage's map as four levels (``VitxFeaturePyramid``), and ``channels`` then
    names the four levels' widths. ``hidden_states`` and ``attentions`` come with the usual flags.

    Any image size the patch divides runs: the position table is interpolated to it. The ViT is held as
    ``self.vitx``, as in the classifier and the masked autoencoder, so their folders load into the backbone
    with the encoder's weights as they are (the classifier's ``head_norm`` too; the decoder and classifier are
    left out). An encoder that returns no per-layer states (a user's module) gives only the last stage.
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^classifier\."]  # a masked autoencoder's, a classifier's
    remote_auto_map = {**VitxPreTrainedModel.remote_auto_map, "AutoBackbone": "modeling_vitx.VitxBackbone"}

    def __init__(self, config, *, encoder_module=None, **kwargs):
        _require_vit_config(config, "VitxBackbone", "of different widths make no backbone")
        config = _dense_prediction_config(_config_for_encoder(config, encoder_module, type(self), kwargs))
        super().__init__(config)
        if hasattr(self, "_init_backbone"):  # transformers 4.x: the mixin has no __init__ of its own
            self._init_backbone(config)
        self.vitx = VitxModel(config, encoder_module=encoder_module)
        self.head_norm = _head_norm(config, self.vitx.encoder)
        self.num_features = [config.dim] * len(self.stage_names)
        self._check_stages()
        self.feature_pyramid = VitxFeaturePyramid(config) if config.feature_pyramid else None
        self.post_init()

    def _check_stages(self):
        """The chosen stages are ones this encoder gives, and the feature pyramid gets its one map."""
        last = self.stage_names[-1]
        if not self.vitx.encoder.returns_hidden_states and list(self.out_features) != [last]:
            raise ValueError(f"the encoder {self.vitx.encoder.describe()} returns no per-layer states, so the backbone "
                             f"can give only its last stage: `out_features` must be ['{last}'], got "
                             f"{list(self.out_features)}.")
        _check_feature_pyramid(self.config.feature_pyramid, self.config.reshape_hidden_states, self.out_features)

    @property
    def channels(self):
        """Channels of each returned feature map: ``dim`` per stage, or the pyramid's width per level."""
        if self.feature_pyramid is not None:
            return [self.config.feature_pyramid_channels] * len(self.feature_pyramid.project)
        return [self.out_feature_channels[name] for name in self.out_features]

    def _layernorm(self, hidden_state):
        """The norm the classifier puts on the encoder's output: the encoder's final norm, or its own head norm."""
        encoder = self.vitx.encoder
        return self.head_norm(encoder.norm(hidden_state) if encoder.normalizes_output else hidden_state)

    def forward(self, pixel_values=None, output_hidden_states=None, output_attentions=None, return_dict=None):
        output_hidden_states = _flag(output_hidden_states, self.config, "output_hidden_states")
        self._check_stages()  # `out_features` can be set on a built backbone
        encoder = self.vitx.encoder
        encoder.check_flags(output_attentions, output_hidden_states)
        outputs = self.vitx(pixel_values, output_attentions=output_attentions, interpolate_pos_encoding=True,
                            output_hidden_states=encoder.returns_hidden_states, return_dict=True)
        stages = outputs.hidden_states or (None,) * (len(self.stage_names) - 1) + (outputs.last_hidden_state,)
        (patch_height, patch_width), (height, width) = _to_pair(self.config.patch_size), pixel_values.shape[-2:]
        feature_maps = []
        for name in self.out_features:
            hidden_state = stages[self.stage_names.index(name)]
            if self.config.apply_layernorm:
                hidden_state = self._layernorm(hidden_state)
            if self.config.reshape_hidden_states:
                hidden_state = _tokens_to_map(hidden_state, self.vitx.embeddings.num_prefix_tokens,
                                              height // patch_height, width // patch_width)
            feature_maps.append(hidden_state)
        if self.feature_pyramid is not None:
            feature_maps = self.feature_pyramid(feature_maps[-1])
        output = BackboneOutput(feature_maps=tuple(feature_maps),
                                hidden_states=outputs.hidden_states if output_hidden_states else None,
                                attentions=outputs.attentions)
        return output if _return_dict(return_dict, self.config) else output.to_tuple()

# registration: in process through the Auto classes, and as Hub remote code via `auto_map`

VitxModel.register_for_auto_class("AutoModel")
VitxForImageClassification.register_for_auto_class("AutoModelForImageClassification")
VitxForPreTraining.register_for_auto_class("AutoModelForPreTraining")
VitxForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
AutoModel.register(VitxConfig, VitxModel, exist_ok=True)
AutoModelForImageClassification.register(VitxConfig, VitxForImageClassification, exist_ok=True)
AutoModelForPreTraining.register(VitxConfig, VitxForPreTraining, exist_ok=True)
VitxBackbone.register_for_auto_class("AutoBackbone")
AutoBackbone.register(VitxConfig, VitxBackbone, exist_ok=True)
AutoModelForSemanticSegmentation.register(VitxConfig, VitxForSemanticSegmentation, exist_ok=True)
CrossVitxModel.register_for_auto_class("AutoModel")
CrossVitxForImageClassification.register_for_auto_class("AutoModelForImageClassification")
AutoModel.register(CrossVitxConfig, CrossVitxModel, exist_ok=True)
AutoModelForImageClassification.register(CrossVitxConfig, CrossVitxForImageClassification, exist_ok=True)
# transformers 4.x pipelines load an image processor only for configs they know one for
AutoImageProcessor.register(VitxConfig, slow_image_processor_class=ViTImageProcessor, exist_ok=True)
AutoImageProcessor.register(CrossVitxConfig, slow_image_processor_class=ViTImageProcessor, exist_ok=True)

__all__ = [
    "CrossVitxForImageClassification",
    "CrossVitxImageClassifierOutput",
    "CrossVitxModel",
    "CrossVitxModelOutput",
    "CrossVitxPreTrainedModel",
    "LandmarkEncoder",
    "VitxBackbone",
    "VitxEncoderBase",
    "VitxForImageClassification",
    "VitxForPreTraining",
    "VitxForPreTrainingOutput",
    "VitxForSemanticSegmentation",
    "VitxModel",
    "VitxPreTrainedModel",
    "register_encoder",
]
