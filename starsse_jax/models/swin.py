"""Swin Transformers that compute exactly what timm's ``SwinTransformer`` computes (timm 1.0, the
same computation as Microsoft's code).

    model = build_swin("swin_tiny_patch4_window7_224", num_classes=100)
    logits = model.apply({"params": params}, images_nhwc, train=False)

Module names follow timm >= 0.9's state_dict (``patch_embed_proj``, ``layers_1/downsample``,
``layers_2/blocks_3/attn/relative_position_bias_table``, ``head``; converted by
``starsse_jax.weights.timm_layout``, Microsoft's layout by ``starsse_jax.weights.families``).
Patch merging therefore sits at the *start* of stages 1-3. The relative-position index and the
shifted windows' attention masks are numpy constants built from the window size and the feature
map (never read from a file). Done as timm does it: LayerNorm eps 1e-5, exact GELU, fused ``qkv``
(rows q, k, v, head-major within each), mask value -100 (not -inf) between regions, a stage
whose map is no larger than the window uses the map as its window and no shift, feature maps
padded up to whole windows (and to even sizes before merging), drop-path rising linearly over
all blocks. No BatchNorm: the variables are ``{'params'}`` only.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from starsse_jax.models import layers
from starsse_jax.models.layers import HEAD

EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class Size:
  embed_dim: int
  depths: tuple[int, ...]
  heads: tuple[int, ...]
  patch: int = 4
  window: int = 7
  image_size: int = 224


SWIN_SIZES = {
    "swin_tiny_patch4_window7_224": Size(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_small_patch4_window7_224": Size(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_base_patch4_window7_224": Size(128, (2, 2, 18, 2), (4, 8, 16, 32)),
}


def window_and_shift(resolution: tuple[int, int], window: int) -> tuple[tuple[int, int], ...]:
  """(window, shift) per axis: a map no larger than the window is one window, unshifted."""
  win = tuple(r if r <= window else window for r in resolution)
  shift = tuple(0 if r <= window else window // 2 for r in resolution)
  return win, shift


@functools.lru_cache(maxsize=None)
def relative_position_index(win_h: int, win_w: int) -> np.ndarray:
  """``[A, A]`` indices (A = win_h * win_w) into the ``(2 win_h - 1)(2 win_w - 1)`` bias table:
  ``(dh + win_h - 1)(2 win_w - 1) + (dw + win_w - 1)`` for token pair offsets (dh, dw)."""
  coords = np.stack(np.meshgrid(np.arange(win_h), np.arange(win_w), indexing="ij")).reshape(2, -1)
  rel = coords[:, :, None] - coords[:, None, :]
  return (rel[0] + win_h - 1) * (2 * win_w - 1) + (rel[1] + win_w - 1)


def _partition(x, win):
  """[B, H, W, C] -> [B * windows, win_h * win_w, C], windows row-major."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // win[0], win[0], w // win[1], win[1], c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, win[0] * win[1], c)


def _reverse(windows, win, b, h, w):
  c = windows.shape[-1]
  x = windows.reshape(b, h // win[0], w // win[1], win[0], win[1], c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


@functools.lru_cache(maxsize=None)
def attention_mask(height: int, width: int, win: tuple[int, int],
                   shift: tuple[int, int]) -> np.ndarray:
  """``[windows, A, A]``: 0 between tokens of the same region of the rolled (padded) map, -100
  between tokens that were not neighbours before the roll."""
  regions = np.zeros((height, width), np.float32)
  label = 0
  for hs in (slice(0, -win[0]), slice(-win[0], -shift[0]), slice(-shift[0], None)):
    for ws in (slice(0, -win[1]), slice(-win[1], -shift[1]), slice(-shift[1], None)):
      regions[hs, ws] = label
      label += 1
  windows = _partition(regions[None, :, :, None], win)[..., 0]  # [windows, A]
  different = windows[:, None, :] != windows[:, :, None]
  return np.where(different, -100.0, 0.0).astype(np.float32)


class WindowAttention(nn.Module):
  """``softmax(q k^T / sqrt(d) + B + mask) v`` within each window, B the relative-position bias."""
  heads: int
  window: tuple[int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    n_b, n, d = x.shape
    hd = d // self.heads
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       ((2 * self.window[0] - 1) * (2 * self.window[1] - 1), self.heads),
                       jnp.float32)
    index = relative_position_index(*self.window)
    bias = table[index.reshape(-1)].reshape(n, n, self.heads).transpose(2, 0, 1)  # [H, A, A]
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(x)
    qkv = qkv.reshape(n_b, n, 3, self.heads, hd).transpose(2, 0, 3, 1, 4)  # [3, B*, H, A, hd]
    q, k, v = qkv[0] * hd ** -0.5, qkv[1], qkv[2]
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) + bias
    if mask is not None:
      windows = mask.shape[0]
      logits = (logits.reshape(-1, windows, self.heads, n, n) + mask[None, :, None]).reshape(
          n_b, self.heads, n, n)
    weights = nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bhkd->bhqd", weights, v).transpose(0, 2, 1, 3).reshape(n_b, n, d)
    return nn.Dense(d, dtype=self.dtype, name="proj")(out)


class SwinBlock(nn.Module):
  """(Shifted) window attention and an MLP, each a pre-norm residual branch."""
  heads: int
  window: int
  shifted: bool
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, stochastic: bool = False):
    b, h, w, c = x.shape
    win, shift = window_and_shift((h, w), self.window)
    if not self.shifted:
      shift = (0, 0)
    y = layers.layer_norm("norm1", EPSILON, self.dtype)(x)
    if any(shift):
      y = jnp.roll(y, (-shift[0], -shift[1]), axis=(1, 2))
    pad_h, pad_w = -h % win[0], -w % win[1]
    y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    mask = jnp.asarray(attention_mask(hp, wp, win, shift)) if any(shift) else None
    y = WindowAttention(self.heads, win, self.dtype, name="attn")(_partition(y, win), mask)
    y = _reverse(y, win, b, hp, wp)[:, :h, :w]
    if any(shift):
      y = jnp.roll(y, shift, axis=(1, 2))
    x = x + layers.drop_path(self, y, self.drop_path, stochastic)
    y = layers.layer_norm("norm2", EPSILON, self.dtype)(x)
    y = layers.gelu(nn.Dense(int(c * self.mlp_ratio), dtype=self.dtype, name="mlp_fc1")(y))
    y = nn.Dense(c, dtype=self.dtype, name="mlp_fc2")(y)
    return x + layers.drop_path(self, y, self.drop_path, stochastic)


class PatchMerging(nn.Module):
  """2x2 neighbours concatenated in the order (0,0), (1,0), (0,1), (1,1) (row, column offsets),
  LayerNorm, then a linear map 4C -> 2C without bias."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h, w = x.shape[1:3]
    # [B, H/2, 2(row), W/2, 2(col), C] -> [B, H/2, W/2, col, row, C]: row offset varies fastest.
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(
        b, h // 2, w // 2, 4 * c)
    x = layers.layer_norm("norm", EPSILON, self.dtype)(x)
    return nn.Dense(2 * c, use_bias=False, dtype=self.dtype, name="reduction")(x)


class SwinStage(nn.Module):
  depth: int
  heads: int
  window: int
  downsample: bool
  drop_paths: Sequence[float]
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, stochastic: bool = False):
    if self.downsample:
      x = PatchMerging(self.dtype, name="downsample")(x)
    for j in range(self.depth):
      x = SwinBlock(self.heads, self.window, j % 2 == 1, self.mlp_ratio, self.drop_paths[j],
                    self.dtype, name=f"blocks_{j}")(x, stochastic)
    return x


class Swin(nn.Module):
  """timm's ``SwinTransformer`` (``global_pool='avg'``): patch embedding with LayerNorm, four
  stages, final LayerNorm, mean over the map, linear head. NHWC inputs, already normalised."""
  embed_dim: int
  depths: Sequence[int]
  heads: Sequence[int]
  num_classes: int
  patch: int = 4
  window: int = 7
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, stochastic: bool | None = None):
    """``stochastic`` (default: ``train``): drop-path on; needs ``rngs={'drop_path': key}``."""
    stochastic = train if stochastic is None else stochastic
    x = layers.patch_embed(x, self.patch, self.embed_dim, self.dtype)
    x = layers.layer_norm("patch_embed_norm", EPSILON, self.dtype)(x)
    rates = layers.drop_path_rates(self.drop_path_rate, sum(self.depths))
    first = 0
    for i, (depth, heads) in enumerate(zip(self.depths, self.heads)):
      x = SwinStage(depth, heads, self.window, i > 0, tuple(rates[first:first + depth]),
                    self.mlp_ratio, self.dtype, name=f"layers_{i}")(x, stochastic)
      first += depth
    x = layers.layer_norm("norm", EPSILON, self.dtype)(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, name=HEAD)(x)


def build_swin(name: str, num_classes: int, dtype=jnp.float32,
               drop_path_rate: float = 0.0) -> Swin:
  if name not in SWIN_SIZES:
    raise ValueError(f"Unknown Swin {name!r}; choose one of {sorted(SWIN_SIZES)}.")
  s = SWIN_SIZES[name]
  return Swin(embed_dim=s.embed_dim, depths=s.depths, heads=s.heads, num_classes=num_classes,
              patch=s.patch, window=s.window, drop_path_rate=drop_path_rate, dtype=dtype)
