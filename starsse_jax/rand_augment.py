"""RandAugment (Cubuk et al. 2020) as timm's ``rand-mM-mstdS-inc1`` policy, on the device.

Each image draws its own ops: ``num_ops`` times, one of the 15 operations below chosen uniformly
(with replacement) is applied with probability ``prob`` at a magnitude drawn from
``N(magnitude, magnitude_std)`` clipped to [0, 10]. The "increasing" variants (``inc1``): every
operation gets stronger as the magnitude grows. Operations, as timm's ``auto_augment.py`` sets
their arguments from the magnitude level ``l = m / 10`` (a random sign where timm draws one):

    AutoContrast, Equalize, Invert; Rotate (+-30 l degrees); Posterize (4 - int(4 l) bits);
    Solarize (threshold 256 - int(256 l)); SolarizeAdd (+int(110 l) below 128);
    Color, Contrast, Brightness, Sharpness (factor 1 +- 0.9 l); ShearX/Y (+-0.3 l);
    TranslateX/Y (+-0.45 l of the image side); geometric ops fill with the mean pixel.

Images are float pixel values in [0, 255] (NHWC), before normalisation, as timm applies it to
PIL images; results are clipped to [0, 255] but not rounded to integers between operations, and
geometric ops interpolate bilinearly (PIL: bilinear or bicubic at random). Everything is
jittable: a batched ``lax.switch`` computes every operation and keeps the chosen one, which costs
about 15 cheap image operations per op slot.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class RandAugment:
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.5
  prob: float = 0.5


def _gray(img):
  if img.shape[-1] == 3:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
  return img[..., 0]


def _blend(a, b, factor):
  """``b + factor (a - b)``, PIL's ``ImageEnhance`` (factor 1: ``a``), clipped."""
  return jnp.clip(b + factor * (a - b), 0.0, 255.0)


def auto_contrast(img, level, sign, fill):
  lo = img.min(axis=(0, 1), keepdims=True)
  hi = img.max(axis=(0, 1), keepdims=True)
  scale = jnp.where(hi > lo, 255.0 / jnp.maximum(hi - lo, 1e-6), 1.0)
  return jnp.where(hi > lo, (img - lo) * scale, img)


def equalize(img, level, sign, fill):
  """PIL's ``ImageOps.equalize`` per channel: a lookup table from the cumulative histogram."""
  v = jnp.clip(jnp.round(img), 0, 255).astype(jnp.int32)

  def channel(c):
    hist = jnp.zeros(256, jnp.int32).at[c.reshape(-1)].add(1)
    last = hist[255 - jnp.argmax(hist[::-1] > 0)]
    step = (c.size - last) // 255
    before = jnp.cumsum(hist) - hist
    lut = jnp.minimum((before + step // 2) // jnp.maximum(step, 1), 255)
    return jnp.where(step > 0, lut[c], c).astype(jnp.float32)

  return jnp.stack([channel(v[..., i]) for i in range(img.shape[-1])], axis=-1)


def invert(img, level, sign, fill):
  return 255.0 - img


def posterize(img, level, sign, fill):
  bits = 4 - jnp.floor(level * 4)
  unit = 2.0 ** (8 - bits)
  return jnp.floor(jnp.clip(img, 0, 255) / unit) * unit


def solarize(img, level, sign, fill):
  threshold = 256 - jnp.floor(level * 256)
  return jnp.where(img >= threshold, 255.0 - img, img)


def solarize_add(img, level, sign, fill):
  return jnp.where(img < 128, jnp.minimum(img + jnp.floor(level * 110), 255.0), img)


def color(img, level, sign, fill):
  if img.shape[-1] != 3:
    return img
  return _blend(img, _gray(img)[..., None], 1.0 + 0.9 * level * sign)


def contrast(img, level, sign, fill):
  mean = jnp.mean(_gray(img))
  return _blend(img, mean, 1.0 + 0.9 * level * sign)


def brightness(img, level, sign, fill):
  return _blend(img, 0.0, 1.0 + 0.9 * level * sign)


def sharpness(img, level, sign, fill):
  """PIL's ``SHARPEN`` degenerate image: a 3x3 smoothing (centre 5, others 1, /13) inside, the
  border pixels unchanged."""
  kernel = jnp.asarray([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13.0
  padded = jnp.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = img.shape[:2]
  smooth = sum(kernel[i, j] * padded[i:i + h, j:j + w] for i in range(3) for j in range(3))
  inside = jnp.zeros((h, w, 1), bool).at[1:-1, 1:-1].set(True)
  return _blend(img, jnp.where(inside, smooth, img), 1.0 + 0.9 * level * sign)


def _warp(img, matrix, fill):
  """Output pixel (y, x) reads input ``matrix @ (y, x, 1)`` bilinearly; outside: ``fill``."""
  h, w = img.shape[:2]
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  src_y = matrix[0, 0] * ys + matrix[0, 1] * xs + matrix[0, 2]
  src_x = matrix[1, 0] * ys + matrix[1, 1] * xs + matrix[1, 2]
  out = [jax.scipy.ndimage.map_coordinates(img[..., c] - fill[c], [src_y, src_x], order=1,
                                           mode="constant", cval=0.0) + fill[c]
         for c in range(img.shape[-1])]
  return jnp.stack(out, axis=-1)


def rotate(img, level, sign, fill):
  theta = jnp.deg2rad(30.0 * level * sign)
  h, w = img.shape[:2]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  c, s = jnp.cos(theta), jnp.sin(theta)
  matrix = jnp.asarray([[c, -s, cy - c * cy + s * cx], [s, c, cx - s * cy - c * cx]])
  return _warp(img, matrix, fill)


def shear_x(img, level, sign, fill):
  k = 0.3 * level * sign
  return _warp(img, jnp.asarray([[1.0, 0.0, 0.0], [k, 1.0, 0.0]]), fill)


def shear_y(img, level, sign, fill):
  k = 0.3 * level * sign
  return _warp(img, jnp.asarray([[1.0, k, 0.0], [0.0, 1.0, 0.0]]), fill)


def translate_x(img, level, sign, fill):
  pixels = 0.45 * level * sign * img.shape[1]
  return _warp(img, jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, pixels]]), fill)


def translate_y(img, level, sign, fill):
  pixels = 0.45 * level * sign * img.shape[0]
  return _warp(img, jnp.asarray([[1.0, 0.0, pixels], [0.0, 1.0, 0.0]]), fill)


OPS = (auto_contrast, equalize, invert, rotate, posterize, solarize, solarize_add, color,
       contrast, brightness, sharpness, shear_x, shear_y, translate_x, translate_y)


def rand_augment(key, images, policy: RandAugment, fill):
  """``images`` [B, H, W, C] (pixel values in [0, 255]) with each image's own random ops;
  ``fill`` [C]: the pixel value geometric ops fill with (timm: the mean pixel)."""
  fill = jnp.asarray(fill, jnp.float32)

  def one(k, img):
    for i in range(policy.num_ops):
      k_op, k_apply, k_mag, k_sign = jax.random.split(jax.random.fold_in(k, i), 4)
      op = jax.random.randint(k_op, (), 0, len(OPS))
      level = jnp.clip(policy.magnitude + policy.magnitude_std * jax.random.normal(k_mag),
                       0.0, 10.0) / 10.0
      sign = jnp.where(jax.random.bernoulli(k_sign), 1.0, -1.0)
      out = jax.lax.switch(op, [lambda x, f=f: f(x, level, sign, fill) for f in OPS], img)
      img = jnp.where(jax.random.uniform(k_apply) < policy.prob, jnp.clip(out, 0.0, 255.0), img)
    return img

  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(one)(keys, images.astype(jnp.float32))
