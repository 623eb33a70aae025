"""Device-side training augmentation and the views a model sees, as pure jittable functions.

In the order a training batch meets them (``train_batch``), each drawn from its own stream of the
step's key, so that turning one on does not change the others' draws:

1. Crop and flip: a zero-padded random crop at the native size (``crop_padding``), or torchvision's
   ``RandomResizedCrop`` to ``image_size`` (bilinear or bicubic), and a horizontal flip with
   probability 1/2.
2. RandAugment (below), per image, on pixel values in [0, 255].
3. Normalisation: ``(x / 255 - mean) / std`` per channel.
4. Random erasing (Zhong et al. 2020), timm's ``RandomErasing(mode='pixel')``: with probability
   ``p`` per image, a box of area in [0.02, 1/3] of the image and log-uniform aspect ratio in
   [0.3, 3.3] (first of 10 draws that fits) is filled with standard-normal noise.
5. Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019), timm's ``Mixup`` in ``mode='batch'``:
   one ``lam ~ Beta(alpha, alpha)`` per batch; each image is mixed with the batch's reverse
   (image i with image B-1-i); with both enabled, CutMix is chosen with ``switch_prob``; the whole
   batch is mixed with probability ``mix_prob``. CutMix pastes a box of area ``(1 - lam)``
   (clipped at the border, ``lam`` then corrected to the pasted area). The loss mixes the targets
   with the same ``lam`` (``losses``).

Evaluation sees ``eval_view``: the images unchanged, or centre-cropped and resized to
``image_size``.

RandAugment:
   RandAugment (Cubuk et al. 2020) as timm's ``rand-mM-mstdS-inc1`` policy, on the device.

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
import numpy as np

# Folded into a step's key to give each random choice a stream of its own.
MIX_STREAM = 0x313C
ERASE_STREAM = 0xE2A5
RANDAUG_STREAM = 0x2A6D


@dataclasses.dataclass(frozen=True)
class RandAugment:
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.5
  prob: float = 0.5

@dataclasses.dataclass(frozen=True)
class Augment:
  """A training section's augmentation (see the module docstring for each step)."""
  crop_padding: int = 0
  flip: bool = False
  image_size: int = 0  # 0: padded crop at the native size; N: random-resized crop to N px
  resize: str = "bilinear"
  rand_augment: RandAugment | None = None
  erase_prob: float = 0.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  mix_prob: float = 1.0
  switch_prob: float = 0.5

  @property
  def mixing(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0

  @classmethod
  def from_config(cls, data_config, section) -> "Augment":
    """``data.crop_padding/flip/image_size/resize`` and a training section's recipe fields."""
    return cls(crop_padding=data_config.crop_padding, flip=data_config.flip,
               image_size=data_config.image_size, resize=data_config.resize,
               rand_augment=RandAugment(section.rand_augment_ops, section.rand_augment_magnitude,
                                        section.rand_augment_std, section.rand_augment_prob)
               if section.rand_augment_ops > 0 else None,
               erase_prob=section.random_erase_prob, mixup_alpha=section.mixup_alpha,
               cutmix_alpha=section.cutmix_alpha, mix_prob=section.mix_prob,
               switch_prob=section.mix_switch_prob)


def train_batch(aug: Augment, rng, images, mean, std, data_axis: str | None = None,
                data_shards: int = 1):
  """The training view of a batch of uint8 images ``[B, H, W, C]``: ``(x, lam)``, ``x`` normalised
  and ``lam`` the mixing weight of the targets (None without mixup/CutMix).

  On a mesh (``data_axis``, ``data_shards`` > 1) each data shard holds its slice of the batch:
  crops and flips are drawn for the whole batch and sliced, so they match the single-device draw;
  RandAugment and erasing draw per shard; the mixing weight is one per step on every shard.
  """
  local = images.shape[0]

  def stream(which):
    key = jax.random.fold_in(rng, which)
    return key if data_axis is None else jax.random.fold_in(key, jax.lax.axis_index(data_axis))

  params = augment_params(rng, local * data_shards, aug.crop_padding, aug.flip, images.shape[1:3],
                          aug.image_size)
  if data_axis is not None:
    start = jax.lax.axis_index(data_axis) * local
    params = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, local), params)
  x = apply_augment(images, params, aug.crop_padding, aug.image_size, aug.resize)
  if aug.rand_augment is not None:  # per image, on pixel values
    x = rand_augment(stream(RANDAUG_STREAM), x, aug.rand_augment, np.asarray(mean) * 255.0)
  x = normalize(x, mean, std)
  if aug.erase_prob > 0:  # each image its own box
    x = random_erase(stream(ERASE_STREAM), x, aug.erase_prob)
  lam = None
  if aug.mixing:  # one lam per member and step (the same on every shard; pairs within a shard)
    x, lam = mix(jax.random.fold_in(rng, MIX_STREAM), x, aug)
  return x, lam


# ------------------------------------------------------------------------ crop, flip, views


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 images -> float32, standardised per channel."""
  return (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean)) / jnp.asarray(std)


def augment_params(rng: jax.Array, n: int, padding: int, flip: bool, image_hw=None,
                   image_size: int = 0) -> dict[str, jax.Array]:
  """Random augmentation of ``n`` images: flip flags, and crop offsets (``padding`` pixels of
  zero padding) or, when ``image_size`` is set, random-resized-crop boxes in ``image_hw``."""
  crop_key, flip_key = jax.random.split(rng)
  params = {"flips": jax.random.bernoulli(flip_key, 0.5, (n,)) if flip else jnp.zeros(n, bool)}
  if image_size:
    params["boxes"] = random_resized_crop_params(crop_key, n, *image_hw)
  else:
    params["offsets"] = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
  return params


RESIZE_METHODS = {"bilinear": "linear", "bicubic": "cubic"}  # config name -> jax.image's


def apply_augment(images: jax.Array, params: dict[str, jax.Array], padding: int,
                  image_size: int = 0, resize: str = "bilinear") -> jax.Array:
  """Crops (padded crop, or random-resized crop to ``image_size``, resized ``bilinear`` or
  ``bicubic``) and flips where flagged."""
  if image_size:
    images = crop_and_resize(images, params["boxes"], image_size, resize)
  elif padding > 0:
    _, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    images = jax.vmap(crop)(padded, params["offsets"])
  return jnp.where(params["flips"][:, None, None, None], images[:, :, ::-1, :], images)


def augment(rng: jax.Array, images: jax.Array, padding: int, flip: bool,
            image_size: int = 0, resize: str = "bilinear") -> jax.Array:
  """Training view of a batch: random crop (padded, or resized to ``image_size``) and flip."""
  params = augment_params(rng, images.shape[0], padding, flip, images.shape[1:3], image_size)
  return apply_augment(images, params, padding, image_size, resize)


def eval_view(images: jax.Array, image_size: int = 0, resize: str = "bilinear") -> jax.Array:
  """Evaluation view of a batch: unchanged, or centre-cropped and resized to ``image_size``."""
  return center_resize(images, image_size, resize=resize) if image_size else images


def random_resized_crop_params(rng: jax.Array, n: int, height: int, width: int,
                               scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> jax.Array:
  """Boxes ``[n, 4]`` = (top, left, height, width) as torchvision's ``RandomResizedCrop`` draws.

  Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``; where the box would
  not fit, its sides are clipped to the image (torchvision retries, then falls back to a centre
  crop; clipping keeps the draw a single vectorised step).
  """
  k_area, k_ratio, k_top, k_left = jax.random.split(rng, 4)
  area = jax.random.uniform(k_area, (n,), minval=scale[0], maxval=scale[1]) * height * width
  aspect = jnp.exp(jax.random.uniform(k_ratio, (n,), minval=np.log(ratio[0]),
                                      maxval=np.log(ratio[1])))
  w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
  h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
  top = jax.random.uniform(k_top, (n,)) * (height - h)
  left = jax.random.uniform(k_left, (n,)) * (width - w)
  return jnp.stack([top, left, h, w], axis=-1)


def crop_and_resize(images: jax.Array, boxes: jax.Array, size: int,
                    resize: str = "bilinear") -> jax.Array:
  """Resize of each image's box to ``size x size`` (float32, pixel values kept), ``bilinear`` or
  ``bicubic`` (Keys' cubic, a = -0.5, antialiased when shrinking, as ``jax.image``)."""
  method = RESIZE_METHODS[resize]

  def one(image, box):
    top, left, h, w = box[0], box[1], box[2], box[3]
    scale = jnp.stack([size / h, size / w])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(image.astype(jnp.float32), (size, size, image.shape[-1]),
                                         (0, 1), scale, translation, method=method)

  return jax.vmap(one)(images, boxes)


def center_resize(images: jax.Array, size: int, crop_fraction: float = 0.875,
                  resize: str = "bilinear") -> jax.Array:
  """Evaluation view: the central ``crop_fraction`` of each image resized to ``size`` (the
  'resize to 256, centre-crop 224' of ImageNet evaluation is ``crop_fraction = 224 / 256``)."""
  n, height, width, _ = images.shape
  h, w = height * crop_fraction, width * crop_fraction
  box = jnp.asarray([(height - h) / 2, (width - w) / 2, h, w], jnp.float32)
  return crop_and_resize(images, jnp.broadcast_to(box, (n, 4)), size, resize)


# ------------------------------------------------------------------ mixing and erasing


def cutmix_box(key, lam, height: int, width: int):
  """timm's ``rand_bbox``: a box of sides ``sqrt(1 - lam)`` times the image's, centred at a
  uniform pixel, clipped at the border. Returns (y0, y1, x0, x1) and the corrected ``lam``."""
  ratio = jnp.sqrt(1.0 - lam)
  ch, cw = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
  ky, kx = jax.random.split(key)
  cy = jax.random.randint(ky, (), 0, height)
  cx = jax.random.randint(kx, (), 0, width)
  y0, y1 = jnp.clip(cy - ch // 2, 0, height), jnp.clip(cy + ch // 2, 0, height)
  x0, x1 = jnp.clip(cx - cw // 2, 0, width), jnp.clip(cx + cw // 2, 0, width)
  corrected = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
  return (y0, y1, x0, x1), corrected


def mix(key, images, reg: Augment):
  """Mixup or CutMix of a batch (NHWC): ``(mixed images, lam)``; mix the targets with
  ``mix_targets(targets, lam)``."""
  k_switch, k_lam, k_apply, k_box = jax.random.split(key, 4)
  if reg.mixup_alpha > 0 and reg.cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(k_switch) < reg.switch_prob
  else:
    use_cutmix = jnp.asarray(reg.cutmix_alpha > 0)
  alpha = jnp.where(use_cutmix, reg.cutmix_alpha or 1.0, reg.mixup_alpha or 1.0)
  lam = jax.random.beta(k_lam, alpha, alpha)
  lam = jnp.where(jax.random.uniform(k_apply) < reg.mix_prob, lam, 1.0)
  other = images[::-1]
  h, w = images.shape[1:3]
  (y0, y1, x0, x1), lam_box = cutmix_box(k_box, lam, h, w)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  inside = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1))[None, :, :, None]
  cut = jnp.where(inside, other, images)
  blended = lam * images + (1.0 - lam) * other
  mixed = jnp.where(use_cutmix, cut, blended.astype(images.dtype))
  return mixed, jnp.where(use_cutmix, lam_box, lam)


def random_erase(key, images, prob: float, attempts: int = 10):
  """Each image, with probability ``prob``: one box filled with N(0, 1) noise (see module doc)."""
  b, h, w, c = images.shape
  k_apply, k_area, k_ratio, k_y, k_x, k_noise = jax.random.split(key, 6)
  area = jax.random.uniform(k_area, (b, attempts), minval=0.02, maxval=1 / 3) * (h * w)
  ratio = jnp.exp(jax.random.uniform(k_ratio, (b, attempts), minval=jnp.log(0.3),
                                     maxval=jnp.log(1 / 0.3)))
  eh = jnp.round(jnp.sqrt(area * ratio)).astype(jnp.int32)
  ew = jnp.round(jnp.sqrt(area / ratio)).astype(jnp.int32)
  fits = (eh < h) & (ew < w)
  first = jnp.argmax(fits, axis=1)
  pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=1)[:, 0]
  eh, ew, any_fits = pick(eh), pick(ew), jnp.any(fits, axis=1)
  top = (jax.random.uniform(k_y, (b,)) * (h - eh + 1)).astype(jnp.int32)
  left = (jax.random.uniform(k_x, (b,)) * (w - ew + 1)).astype(jnp.int32)
  on = (jax.random.uniform(k_apply, (b,)) < prob) & any_fits
  rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
  box = ((rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None]) &
         (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None]) &
         on[:, None, None])[..., None]
  noise = jax.random.normal(k_noise, images.shape, jnp.float32).astype(images.dtype)
  return jnp.where(box, noise, images)


# ------------------------------------------------------------------------------ RandAugment


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
