"""vitx: Vision Transformers as Hugging Face models.

Reads top to bottom: helpers, embeddings, attention, feed-forward, layer, encoder,
pretrained base, models, heads, registration. One attention module serves every
family; it runs ``F.scaled_dot_product_attention`` unless attention maps are asked
for (or ``attn_implementation="eager"``, or bfloat16 training on CPU over short sequences, where it is
faster), in which case it runs the explicit softmax. Without autograd, GELU and residual sums run in place.
The architectures match vit-pytorch's ``ViT`` and ``CrossViT`` so their weights carry over exactly; with
``patch_norm=False`` the ViT is the classic ViT of HF transformers and timm.
"""

import importlib
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
    from .configuration_vitx import CrossVitxConfig, VitxConfig, check_positive_int, patch_grid, to_pair
except ImportError:  # installed as top-level modules. Imported by name: transformers 4.x scans remote code for
    # `from X import` lines outside try blocks and would take this fallback for a package the Hub copy needs.
    _configuration = importlib.import_module("configuration_vitx")
    CrossVitxConfig, VitxConfig, check_positive_int, patch_grid, to_pair = (
        getattr(_configuration, name)
        for name in ("CrossVitxConfig", "VitxConfig", "check_positive_int", "patch_grid", "to_pair"))

# helpers


def _wants_eager(config, output_attentions):
    """The explicit softmax path runs only when maps are requested or eager attention is configured."""
    return bool(output_attentions) or getattr(config, "_attn_implementation", None) == "eager"


def _explicit_softmax_is_faster(q, k):
    """Training in bfloat16 on CPU, SDPA's backward is slower than the explicit softmax's over short key
    sequences (measured here, ViT-S/16 blocks: explicit 1.2x faster at 197 tokens, 1.14x at 577, 0.79x
    at 1,025); the explicit path keeps the (tokens x keys) map for backward, which is small there."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad and k.shape[-2] <= 640


def _flag(value, config, name):
    """A forward flag, falling back to the config's default as HF models do."""
    return bool(value) if value is not None else bool(getattr(config, name, False))


def _return_dict(value, config):
    return value if value is not None else getattr(config, "return_dict", True)


def _residual_add(branch, residual):
    """``branch + residual``. Without autograd, and where the sum keeps the branch's dtype (not so under
    autocast, whose low-precision branches join a float32 stream), it goes into the branch's fresh output:
    no allocation. With autograd, out of place: an in-place add on the view a Linear returns makes the
    backward rebuild it through CopySlices, ~2 ms per ViT-S/16 block."""
    if branch.requires_grad or branch.dtype != residual.dtype:
        return branch + residual
    return branch.add_(residual)


def image_classification_loss(logits, labels, config, num_items_in_batch=None):
    """HF's ``problem_type`` rules: regression, single-label or multi-label classification.

    ``num_items_in_batch`` is the Trainer's count of labels over every micro-batch of an optimizer step (and
    every process): the loss is then the sum over this micro-batch divided by it, so gradient accumulation
    and data parallelism give the gradient of one large batch. Class id -100 is ignored, as in HF's losses.
    """
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
    reduction = "mean" if num_items_in_batch is None else "sum"
    if config.problem_type == "regression":
        loss = F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype), reduction=reduction) \
            if num_labels == 1 else F.mse_loss(logits, labels.to(logits.dtype), reduction=reduction)
    elif config.problem_type == "single_label_classification":
        labels = labels.view(-1)
        _check_class_ids(labels, num_labels)
        loss = F.cross_entropy(logits.view(-1, num_labels), labels, reduction=reduction)
    else:
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction=reduction)
    return loss if num_items_in_batch is None else loss / num_items_in_batch


def _check_class_ids(labels, num_labels):
    """A clear error for class ids outside [0, num_labels) (other than the ignored -100), in eager mode; traced
    and compiled graphs skip it, since it reads the labels' values."""
    if torch.compiler.is_compiling() or not labels.numel():
        return
    wrong = (labels < 0) & (labels != -100) | (labels >= num_labels)
    if wrong.any():
        raise ValueError(f"`labels` must be class ids in [0, {num_labels}) or -100 (ignored), got "
                         f"{sorted(set(labels[wrong].tolist()))[:10]}.")


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

    def split_heads(self, x, parts):
        """(batch, tokens, parts * heads * dim_head) -> ``parts`` views of (batch, heads, tokens, dim_head).

        Unbinding along the parts axis, before moving heads ahead of tokens, makes the backward stack the
        gradients straight into the projection's (batch, tokens, parts, heads, dim_head) layout: one copy,
        where unbinding a (parts, batch, heads, tokens, dim_head) permutation costs two.
        """
        return [t.transpose(1, 2) for t in x.unflatten(-1, (parts, self.heads, -1)).unbind(2)]

    def project(self, x, context, kv_include_self):
        """Queries, keys and values as (batch, heads, tokens, dim_head)."""
        if context is None:
            return self.split_heads(self.to_qkv(x), 3)
        if kv_include_self:
            context = torch.cat((x, context), dim=1)
        weight, bias = self.to_qkv.weight, self.to_qkv.bias
        q = F.linear(x, weight[: self.inner_dim], None if bias is None else bias[: self.inner_dim])
        kv = F.linear(context, weight[self.inner_dim:], None if bias is None else bias[self.inner_dim:])
        return (*self.split_heads(q, 1), *self.split_heads(kv, 2))

    def attend(self, q, k, v, output_attentions):
        """Softmax attention: SDPA, or the explicit softmax when the map is wanted (or faster, see
        ``_explicit_softmax_is_faster``). Returns (values, map)."""
        dropout = self.dropout if self.training else 0.0
        if not (_wants_eager(self.config, output_attentions) or _explicit_softmax_is_faster(q, k)):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout), None
        attn = torch.matmul(q, k.transpose(-1, -2)).mul_(self.scale).softmax(dim=-1)
        return torch.matmul(F.dropout(attn, dropout), v), attn

    def forward(self, x, context=None, kv_include_self=False, output_attentions=False):
        x = self.norm(x)
        out, attn = self.attend(*self.project(x, context, kv_include_self), output_attentions)
        out = self.out_dropout(self.to_out(rearrange(out, "b h n d -> b n (h d)")))
        return out, (attn if output_attentions else None)


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
    xz, powers = x @ z, []
    for _ in range(iterations - 1):
        square = xz @ xz
        powers.append((xz, square))
        inner = square.neg().add_(xz, alpha=7)
        inner.diagonal(dim1=-2, dim2=-1).sub_(15)
        xz = (square @ inner).mul_(0.25).add_(xz, alpha=3.25)
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

    With keys and values zero-padded at the front to a multiple of ``num_landmarks`` (as nystrom-attention
    does), landmarks are the means of consecutive groups of queries and keys, and softmax(QK^T) V is
    approximated by softmax(Q K_l^T) pinv(softmax(Q_l K_l^T)) softmax(Q_l K^T) V. Both outer products are
    attention ops of their own, so they run as two fused SDPA calls evaluated right to left: no
    tokens x landmarks (let alone tokens x tokens) tensor exists unless the map is requested. A depthwise
    convolution over the values (``residual_conv_kernel``, 0 = off) adds a local residual. Self-attention
    only: ``attend`` takes the keys and values padded, as ``project`` makes them.
    """

    def __init__(self, config, dim=None, heads=None, dim_head=None, num_landmarks=256, pinv_iterations=6,
                 residual_conv_kernel=33):
        super().__init__(config, dim, heads, dim_head)
        self.num_landmarks, self.pinv_iterations = num_landmarks, pinv_iterations
        self.res_conv = nn.Conv2d(self.heads, self.heads, (residual_conv_kernel, 1),
                                  padding=(residual_conv_kernel // 2, 0), groups=self.heads, bias=False) \
            if residual_conv_kernel else None

    def project(self, x, context, kv_include_self):
        """Queries, and keys and values zero-padded at the front to a multiple of ``num_landmarks``."""
        if context is not None:
            raise ValueError("landmark attention is self-attention only: it takes no `context`")
        q, k, v = super().project(x, None, False)
        padding = -x.shape[1] % self.num_landmarks
        return (q, *(F.pad(t, (0, 0, padding, 0)) for t in (k, v))) if padding else (q, k, v)

    def landmarks(self, t, padding):
        """Means of ``num_landmarks`` consecutive groups of ``t``'s tokens zero-padded at the front by ``padding``,
        without building the padded tensor: leading groups that are all padding are zeros, the group the real
        tokens start in sums only those."""
        group = (t.shape[-2] + padding) // self.num_landmarks
        empty, partial = divmod(padding, group)
        start = group - partial if partial else 0
        parts = [t[..., start:, :].unflatten(-2, (-1, group)).sum(dim=-2)]
        if partial:
            parts.insert(0, t[..., :start, :].sum(dim=-2, keepdim=True))
        if empty:
            parts.insert(0, t.new_zeros(*t.shape[:-2], empty, t.shape[-1]))
        return (torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]).div_(group)

    def attend(self, q, k_padded, v_padded, output_attentions):
        padding = k_padded.shape[-2] - q.shape[-2]
        v = v_padded[..., padding:, :]
        q_landmarks, k_landmarks = self.landmarks(q, padding), self.landmarks(k_padded[..., padding:, :], padding)
        kernel = (q_landmarks @ k_landmarks.transpose(-1, -2)).mul_(self.scale).softmax(dim=-1)
        from_landmarks = F.scaled_dot_product_attention(q_landmarks, k_padded, v_padded, scale=self.scale)
        landmark_values = _iterative_pinv_times(kernel.float(), from_landmarks.float(), self.pinv_iterations)
        landmark_values = landmark_values.to(from_landmarks.dtype)
        out = F.scaled_dot_product_attention(q, k_landmarks, landmark_values, scale=self.scale)
        if self.res_conv is not None:  # the padded zeros at the front are the convolution's own zero border.
            # Depthwise convolutions run ~2.5x faster on CPU in channels-last layout, copy included. Without
            # autograd the sum lands in SDPA's output, whose token-major layout makes the merge of heads a view.
            out = _residual_add(out, self.res_conv(v.contiguous(memory_format=torch.channels_last)))
        attn = None
        if output_attentions:
            to_landmarks = (q @ k_landmarks.transpose(-1, -2)).mul_(self.scale).softmax(dim=-1)
            eye = torch.eye(self.num_landmarks, device=q.device).expand_as(kernel)
            kernel_inv = _iterative_pinv_times(kernel.float(), eye, self.pinv_iterations).to(kernel.dtype)
            landmark_map = (q_landmarks @ k_padded.transpose(-1, -2)).mul_(self.scale).softmax(dim=-1)
            attn = (to_landmarks @ kernel_inv) @ landmark_map[..., padding:]
        return out, attn


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
        hidden = self.fc1(self.norm(x))
        # Without autograd the GELU runs in place (same kernel, same numbers). A fresh tensor of the MLP's
        # width per block is the largest allocation of an inference forward, and where freed pages go back
        # to the OS (glibc, VMs) each one is page-faulted anew: up to 25% of a ViT-S/16 forward measured here.
        hidden = F.gelu(hidden) if hidden.requires_grad else torch.ops.aten.gelu_(hidden)
        return self.dropout(self.fc2(self.dropout(hidden)))


# layer


class VitxLayer(nn.Module):
    """One transformer block: residual attention, then residual feed-forward."""

    def __init__(self, config, dim=None, heads=None, dim_head=None, mlp_dim=None, attention_class=VitxAttention,
                 attention_kwargs=None):
        super().__init__()
        self.attention = attention_class(config, dim, heads, dim_head, **(attention_kwargs or {}))
        self.feed_forward = VitxFeedForward(config, dim, mlp_dim)

    def forward(self, hidden_states, output_attentions=False):
        attended, attn = self.attention(hidden_states, output_attentions=output_attentions)
        hidden_states = _residual_add(attended, hidden_states)
        return _residual_add(self.feed_forward(hidden_states), hidden_states), attn


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

# encoders
#
# Every encoder follows one contract: ``forward(hidden_states, output_attentions=False,
# output_hidden_states=False)`` maps (batch, tokens, dim) to a ``BaseModelOutput`` whose
# ``last_hidden_state`` has the same shape; ``hidden_states`` holds the input and each block's output
# (depth + 1 tensors), ``attentions`` one (batch, heads, tokens, tokens) map per block. Encoders are
# built by name from the config through one registry (``register_encoder``), the built-ins included.


class VitxEncoder(nn.Module):
    """The standard ViT encoder: ``depth`` blocks and a final LayerNorm.

    ``hidden_states`` are taken before the final norm, as in HF's ViT. ``attention_class`` swaps the
    attend step (the landmark encoder); ``final_norm=False`` leaves the norm to the classification head.
    """

    def __init__(self, config, dim=None, depth=None, heads=None, dim_head=None, mlp_dim=None,
                 attention_class=VitxAttention, attention_kwargs=None, final_norm=True):
        super().__init__()
        dim, depth = dim or config.dim, depth or config.depth
        self.layers = nn.ModuleList([
            VitxLayer(config, dim, heads, dim_head, mlp_dim, attention_class, attention_kwargs) for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if final_norm else nn.Identity()
        self.gradient_checkpointing = False

    def forward(self, hidden_states, output_attentions=False, output_hidden_states=False):
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        checkpointed = self.gradient_checkpointing and self.training
        run = (getattr(self, "_gradient_checkpointing_func", None) or partial(checkpoint, use_reentrant=False)) \
            if checkpointed else None
        for layer in self.layers:
            if checkpointed:
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


LANDMARK_OPTIONS = {"num_landmarks": 256, "pinv_iterations": 6, "residual_conv_kernel": 33}


def landmark_options(encoder_kwargs):
    """``encoder_kwargs`` of the landmark encoder, checked and completed with the defaults."""
    unknown = set(encoder_kwargs) - set(LANDMARK_OPTIONS)
    if unknown:
        raise ValueError(f"unknown `encoder_kwargs` {sorted(unknown)} for the 'landmark' encoder; "
                         f"allowed: {sorted(LANDMARK_OPTIONS)}")
    options = {**LANDMARK_OPTIONS, **encoder_kwargs}
    for name in ("num_landmarks", "pinv_iterations"):
        check_positive_int(name, options[name])
    kernel = options["residual_conv_kernel"]
    if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 0 or (kernel and kernel % 2 == 0):
        raise ValueError(f"`residual_conv_kernel` must be 0 (off) or a positive odd int, got {kernel!r}.")
    return options


class LandmarkEncoder(VitxEncoder):
    """Nystrom landmark-attention encoder for high-resolution images: the seed's ``DenseVH``.

    Cost grows linearly with the token count. Pre-norm blocks of ``VitxLandmarkAttention`` and
    ``VitxFeedForward`` with no final norm (nystrom-attention's ``Nystromformer`` layout, whose
    weights carry over), so the classification head normalizes.

    Example: ``LandmarkEncoder(dim=512, depth=12, heads=8, num_landmarks=256)``, which can be handed
    to ``VitxForImageClassification(config, encoder=...)``; or by name with
    ``VitxConfig(encoder="landmark", encoder_kwargs={"num_landmarks": 256})``.
    """

    def __init__(self, dim, depth, heads=8, dim_head=64, mlp_dim=None, num_landmarks=256, pinv_iterations=6,
                 residual_conv_kernel=33, dropout=0.0, layer_norm_eps=1e-5, config=None):
        options = landmark_options(dict(num_landmarks=num_landmarks, pinv_iterations=pinv_iterations,
                                        residual_conv_kernel=residual_conv_kernel))
        config = config or VitxConfig(dim=dim, depth=depth, heads=heads, dim_head=dim_head,
                                      mlp_dim=mlp_dim or 4 * dim, dropout=dropout, layer_norm_eps=layer_norm_eps)
        super().__init__(config, dim, depth, heads, dim_head, mlp_dim or 4 * dim,
                         attention_class=VitxLandmarkAttention, attention_kwargs=options, final_norm=False)

    @classmethod
    def from_config(cls, config):
        """The landmark encoder a ``VitxConfig(encoder="landmark", encoder_kwargs=...)`` describes."""
        return cls(config.dim, config.depth, config.heads, config.dim_head, config.mlp_dim,
                   **landmark_options(config.encoder_kwargs), config=config)


class VitxXTransformersEncoder(nn.Module):
    """An ``x_transformers.Encoder`` behind the vitx encoder contract; maps and states come from its intermediates.

    ``hidden_states`` are the inputs of each attention block followed by the encoder's (normed) output.
    """

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


class VitxModuleEncoder(nn.Module):
    """Any ``nn.Module`` mapping (batch, tokens, dim) to the same shape, as the seed's ``transformer=``.

    It returns tokens only, so asking it for attention maps or per-layer states raises.
    """

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, hidden_states, output_attentions=False, output_hidden_states=False):
        if output_attentions or output_hidden_states:
            flag = "output_attentions" if output_attentions else "output_hidden_states"
            raise ValueError(f"`{flag}=True` cannot be served: the encoder module {_qualified_name(self.module)} "
                             f"returns tokens only. Use a built-in encoder to see attention maps and layer states.")
        out = self.module(hidden_states)
        if not torch.is_tensor(out) or out.shape != hidden_states.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"the encoder module {_qualified_name(self.module)} must map (batch, tokens, dim) "
                             f"{tuple(hidden_states.shape)} to the same shape, got {shape}.")
        return BaseModelOutput(last_hidden_state=out)


def _qualified_name(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


ENCODERS = {}


def register_encoder(name, builder):
    """Make ``VitxConfig(encoder=name)`` build ``builder(config)``, a module that follows the encoder contract."""
    if not isinstance(name, str) or not name or name == "module":
        raise ValueError(f"encoder names must be non-empty strings other than 'module', got {name!r}.")
    ENCODERS[name] = builder


def _standard_encoder(config):
    if config.encoder_kwargs:
        raise ValueError(f"the 'vit' encoder takes no `encoder_kwargs`, got {config.encoder_kwargs!r}.")
    return VitxEncoder(config)


register_encoder("vit", _standard_encoder)
register_encoder("landmark", LandmarkEncoder.from_config)
register_encoder("x-transformers", VitxXTransformersEncoder.from_config)


def build_encoder(config, module=None):
    """The encoder ``config.encoder`` names, or the given ``module`` (recorded in the config as ``"module"``)."""
    if module is None and isinstance(config.encoder, nn.Module):  # `encoder=` that reached the config
        module = config.encoder
    if module is not None:
        if not isinstance(module, nn.Module):
            raise ValueError(f"`encoder` must be an nn.Module, got {type(module).__name__}.")
        config.encoder, config.encoder_kwargs = "module", {"class": _qualified_name(module)}
        for submodule in module.modules():  # the module arrives with weights of its own: init leaves them be
            submodule._vitx_user_weights = True
        if isinstance(module, VitxEncoder):
            return module
        if type(module).__module__.startswith("x_transformers"):
            return VitxXTransformersEncoder(module)
        return VitxModuleEncoder(module)
    if config.encoder == "module":
        raise ValueError(
            f"this model was saved with a user-supplied encoder module ({config.encoder_kwargs.get('class')}); "
            f"pass an instance of it: from_pretrained(folder, encoder=module)."
        )
    if config.encoder not in ENCODERS:
        raise ValueError(f"`encoder` {config.encoder!r} is not registered; known encoders: {sorted(ENCODERS)} "
                         f"(add one with register_encoder(name, builder)).")
    return ENCODERS[config.encoder](config)


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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, encoder=None, **kwargs):
        """``PreTrainedModel.from_pretrained``; ``encoder=module`` restores a model saved with a user encoder module."""
        if encoder is not None:  # a model argument, not a config value
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            if isinstance(dtype, torch.dtype):  # built outside, so the requested dtype has not reached it
                encoder = encoder.to(dtype)
            model_args = (encoder, *model_args)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def base_outputs(self, pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding):
        """A task head's view of its base model (``self.vitx``): always the output dataclass."""
        return self.vitx(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                         interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True)

    def _init_weights(self, module):
        std = getattr(self.config, "initializer_range", 0.02)
        if getattr(module, "_vitx_user_weights", False):
            return
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
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

    Returns ``BaseModelOutputWithPooling``: ``last_hidden_state`` (batch, tokens, dim), the encoder's
    output (for the standard encoder, after the final norm: vit-pytorch's ``Extractor`` embedding),
    ``pooler_output`` the CLS token (``pool="cls"``) or the mean of all tokens (``pool="mean"``), and
    with the flags, the per-layer ``hidden_states`` and ``attentions``. The encoder is the one
    ``config.encoder`` names, or any ``encoder=`` module (see ``build_encoder``).
    """

    def __init__(self, config, encoder=None):
        super().__init__(config)
        self.embeddings = VitxEmbeddings(config)
        self.encoder = build_encoder(config, encoder)
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
    """ViT with a linear head on the pooled token. Returns ``ImageClassifierOutput`` (loss with ``labels``).

    Encoders other than the standard one may not end with a norm, so their head normalizes before the
    linear layer (as vit-pytorch's efficient ViT); the standard encoder keeps vit-pytorch ViT's layout.
    """

    def __init__(self, config, encoder=None):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vitx = VitxModel(config, encoder)
        standard = isinstance(self.vitx.encoder, VitxEncoder) and config.encoder == "vit"
        self.head_norm = nn.Identity() if standard else nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.dim, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=None, **kwargs):
        outputs = self.base_outputs(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        logits = self.classifier(self.head_norm(outputs.pooler_output))
        output = ImageClassifierOutput(
            loss=image_classification_loss(logits, labels, self.config, kwargs.get("num_items_in_batch")), logits=logits,
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
        outputs = self.base_outputs(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        logits = self.sm_classifier(outputs.sm_pooler_output) + self.lg_classifier(outputs.lg_pooler_output)
        output = CrossVitxImageClassifierOutput(
            loss=image_classification_loss(logits, labels, self.config, kwargs.get("num_items_in_batch")), logits=logits,
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
    "ENCODERS",
    "LandmarkEncoder",
    "VitxAttention",
    "VitxEmbeddings",
    "VitxEncoder",
    "VitxFeedForward",
    "VitxForImageClassification",
    "VitxLandmarkAttention",
    "VitxLayer",
    "VitxModel",
    "VitxModuleEncoder",
    "VitxPatchEmbeddings",
    "VitxPreTrainedModel",
    "VitxXTransformersEncoder",
    "build_encoder",
    "image_classification_loss",
    "landmark_options",
    "register_encoder",
]
