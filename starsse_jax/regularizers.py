"""Batch regularisers of the transformer recipe, as pure jittable functions of a PRNG key.

- Label smoothing (Szegedy et al. 2016), timm's convention: the target is ``1 - s + s/C`` on the
  true class and ``s/C`` elsewhere.
- Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019), timm's ``Mixup`` in ``mode='batch'``:
  one ``lam ~ Beta(alpha, alpha)`` per batch; each image is mixed with the batch's reverse
  (image i with image B-1-i); with both enabled, CutMix is chosen with ``switch_prob``; the whole
  batch is mixed with probability ``mix_prob``. CutMix pastes a box of area ``(1 - lam)`` (clipped
  at the border, ``lam`` then corrected to the pasted area). Targets are mixed with the same
  ``lam`` and trained with soft-target cross-entropy.
- Random erasing (Zhong et al. 2020), timm's ``RandomErasing(mode='pixel')``: with probability
  ``p`` per image, a box of area in [0.02, 1/3] of the image and log-uniform aspect ratio in
  [0.3, 3.3] (first of 10 draws that fits) is filled with standard-normal noise, after
  normalisation.

RandAugment (``rand_augment``) runs before normalisation, on pixel values; these after it.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from starsse_jax.rand_augment import RandAugment


@dataclasses.dataclass(frozen=True)
class Regularizers:
  label_smoothing: float = 0.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  mix_prob: float = 1.0
  switch_prob: float = 0.5
  erase_prob: float = 0.0
  rand_augment: RandAugment | None = None

  @property
  def mixing(self) -> bool:
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0

  @property
  def soft(self) -> bool:
    """Whether the loss needs soft targets (else integer-label cross-entropy, as before)."""
    return self.mixing or self.label_smoothing > 0

  @classmethod
  def from_config(cls, section) -> "Regularizers":
    get = lambda name, default: section.get(name, default)
    return cls(label_smoothing=get("label_smoothing", 0.0), mixup_alpha=get("mixup_alpha", 0.0),
               cutmix_alpha=get("cutmix_alpha", 0.0), mix_prob=get("mix_prob", 1.0),
               switch_prob=get("mix_switch_prob", 0.5), erase_prob=get("random_erase_prob", 0.0),
               rand_augment=RandAugment(
                   get("rand_augment_ops", 0), get("rand_augment_magnitude", 9.0),
                   get("rand_augment_std", 0.5), get("rand_augment_prob", 0.5))
               if get("rand_augment_ops", 0) > 0 else None)


def smooth_targets(labels, num_classes: int, smoothing: float):
  """``[B, C]`` targets: ``1 - s + s/C`` on the label, ``s/C`` elsewhere."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def soft_cross_entropy(logits, targets):
  """Mean over the batch of ``-sum_c t_c log softmax(logits)_c``."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))


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


def mix(key, images, reg: Regularizers):
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


def mix_targets(targets, lam):
  """Soft targets ``[B, C]`` mixed as their images were: ``lam t_i + (1 - lam) t_{B-1-i}``."""
  return lam * targets + (1.0 - lam) * targets[::-1]


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
