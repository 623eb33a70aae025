"""The training loss: cross-entropy with integer labels, or with soft targets.

- Label smoothing (Szegedy et al. 2016), timm's convention: the target is ``1 - s + s/C`` on the
  true class and ``s/C`` elsewhere.
- Mixed targets (mixup / CutMix, drawn in ``augment``): ``lam t_i + (1 - lam) t_{B-1-i}``, the
  targets mixed as their images were.
- Soft-target cross-entropy: the batch mean of ``-sum_c t_c log softmax(z)_c``.

With neither, the loss is optax's integer-label cross-entropy. Changing the loss is this file:
``cross_entropy`` is what the train step calls.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, label_smoothing: float = 0.0, lam=None):
  """The step's loss on ``logits [B, C]``: soft targets when smoothing or mixing (``lam``, the
  mixing weight of ``augment.train_batch``) is on, else integer-label cross-entropy."""
  if label_smoothing == 0 and lam is None:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  targets = smooth_targets(labels, logits.shape[-1], label_smoothing)
  if lam is not None:
    targets = mix_targets(targets, lam)
  return soft_cross_entropy(logits, targets)


def smooth_targets(labels, num_classes: int, smoothing: float):
  """``[B, C]`` targets: ``1 - s + s/C`` on the label, ``s/C`` elsewhere."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def mix_targets(targets, lam):
  """Soft targets ``[B, C]`` mixed as their images were: ``lam t_i + (1 - lam) t_{B-1-i}``."""
  return lam * targets + (1.0 - lam) * targets[::-1]


def soft_cross_entropy(logits, targets):
  """Mean over the batch of ``-sum_c t_c log softmax(logits)_c``."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))
