"""Vision Transformers that compute exactly what timm's ``VisionTransformer`` computes.

    model = ViT(**VIT_SIZES["vit_tiny_patch16_224"], num_classes=10)
    logits = model.apply({"params": params}, images_nhwc, train=False)

Module names follow timm's state_dict (``patch_embed_proj``, ``blocks_3/attn/qkv``, ``norm``,
``head``), so converting weights is a renaming plus transposes (``starsse_jax.weights.timm_layout``).
What a port gets wrong most often, done as timm does it: exact (erf) GELU, not Flax's tanh
default; LayerNorm eps 1e-6 (Flax's default, but CLIP needs 1e-5); one fused ``qkv`` projection
whose output rows are q, k, v and, within each, head-major; the class token prepended *before*
the position embedding (whose first slot is the class token's) is added; class-token pooling.
CLIP's image tower (``vit_base_patch32_clip_quickgelu_224``) adds a LayerNorm before the blocks,
drops the patch embedding's bias and uses QuickGELU and eps 1e-5.

No BatchNorm: a ViT's variables are ``{'params'}`` only. Drop-path (stochastic depth, rates rising
linearly over the blocks as in timm) is the only randomness, on in training only.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from starsse_jax.models import layers
from starsse_jax.models.layers import HEAD


@dataclasses.dataclass(frozen=True)
class Size:
  patch: int
  width: int
  depth: int
  heads: int
  image_size: int  # what a checkpoint of this name was trained at
  mlp_ratio: float = 4.0
  clip: bool = False  # CLIP's image tower: pre-LayerNorm, no patch bias, eps 1e-5, QuickGELU


VIT_SIZES = {  # timm's names: vit_{tiny,small,base,large}_patch{16,32}_{224,384}
    f"vit_{name}_patch{patch}_{image}": Size(patch, width, depth, heads, image)
    for name, (width, depth, heads) in {"tiny": (192, 12, 3), "small": (384, 12, 6),
                                        "base": (768, 12, 12), "large": (1024, 24, 16)}.items()
    for patch in (16, 32) for image in (224, 384)
}
# OpenAI's CLIP ViT-B/32 image tower as timm builds it (OpenAI's `visual.proj` is timm's head).
VIT_SIZES["vit_base_patch32_clip_quickgelu_224"] = Size(32, 768, 12, 12, 224, clip=True)


class Attention(nn.Module):
  """timm's ``Attention``: softmax(q k^T / sqrt(d)) v over heads, from one fused qkv."""
  heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, d = x.shape
    hd = d // self.heads
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(x)
    qkv = qkv.reshape(b, n, 3, self.heads, hd).transpose(2, 0, 3, 1, 4)  # [3, B, H, N, hd]
    q, k, v = qkv[0] * hd ** -0.5, qkv[1], qkv[2]
    weights = nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32), axis=-1)
    out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v)
    return nn.Dense(d, dtype=self.dtype, name="proj")(out.transpose(0, 2, 1, 3).reshape(b, n, d))


class Block(nn.Module):
  heads: int
  mlp_ratio: float
  epsilon: float
  dtype: Any = jnp.float32
  quick_gelu: bool = False
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, x, stochastic: bool = False):
    d = x.shape[-1]
    norm = lambda name: layers.layer_norm(name, self.epsilon, self.dtype)
    branch = Attention(self.heads, self.dtype, name="attn")(norm("norm1")(x))
    x = x + layers.drop_path(self, branch, self.drop_path, stochastic)
    h = nn.Dense(int(d * self.mlp_ratio), dtype=self.dtype, name="mlp_fc1")(norm("norm2")(x))
    h = layers.quick_gelu(h) if self.quick_gelu else layers.gelu(h)
    branch = nn.Dense(d, dtype=self.dtype, name="mlp_fc2")(h)
    return x + layers.drop_path(self, branch, self.drop_path, stochastic)


class ViT(nn.Module):
  """timm's ``VisionTransformer`` with class-token pooling (``global_pool='token'``).

  Inputs are NHWC images, already normalised; their size fixes the number of patches and so the
  position embedding's length (``Size.image_size``: the size a checkpoint was trained at)."""
  patch: int
  width: int
  depth: int
  heads: int
  num_classes: int
  mlp_ratio: float = 4.0
  epsilon: float = 1e-6
  pre_norm: bool = False  # CLIP: a LayerNorm before the blocks, and no patch-embedding bias
  quick_gelu: bool = False
  dtype: Any = jnp.float32
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False, stochastic: bool | None = None):
    """``stochastic`` (default: ``train``): drop-path on; needs ``rngs={'drop_path': key}``."""
    stochastic = train if stochastic is None else stochastic
    x = layers.patch_embed(x, self.patch, self.width, self.dtype, use_bias=not self.pre_norm)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)  # row-major over the grid, as timm's flatten(2).transpose(1, 2)
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d), jnp.float32)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, 1 + h * w, d), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
    x = x + pos.astype(x.dtype)
    if self.pre_norm:
      x = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name="norm_pre")(x)
    rates = layers.drop_path_rates(self.drop_path_rate, self.depth)
    for i in range(self.depth):
      x = Block(self.heads, self.mlp_ratio, self.epsilon, self.dtype, self.quick_gelu, rates[i],
                name=f"blocks_{i}")(x, stochastic)
    x = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name="norm")(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name=HEAD)(x[:, 0]).astype(jnp.float32)


def build_vit(name: str, num_classes: int, dtype=jnp.float32, drop_path_rate: float = 0.0) -> ViT:
  if name not in VIT_SIZES:
    raise ValueError(f"Unknown ViT {name!r}; choose one of {sorted(VIT_SIZES)}.")
  s = VIT_SIZES[name]
  return ViT(patch=s.patch, width=s.width, depth=s.depth, heads=s.heads, num_classes=num_classes,
             mlp_ratio=s.mlp_ratio, epsilon=1e-5 if s.clip else 1e-6, pre_norm=s.clip,
             quick_gelu=s.clip, dtype=dtype, drop_path_rate=drop_path_rate)
