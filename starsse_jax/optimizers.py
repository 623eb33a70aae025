"""The optimisers of the recipes, as optax chains with the learning rate injected per step.

- ``sgd``: PyTorch's ``SGD(momentum, weight_decay)``: ``buf = m buf + (g + wd w)``,
  ``w -= lr buf``; L2 decay on every weight (the ResNet recipe of the paper).
- ``adamw``: PyTorch's ``AdamW`` (Loshchilov & Hutter 2019): Adam moments, then
  ``w -= lr (m_hat / (sqrt(v_hat) + eps) + wd w)``, the decay applied only where ``decay_mask``
  is true: not to 1-D tensors (biases, norm scales), class tokens, position embeddings or
  relative-position tables (the official Swin-T and timm recipes).

Both optionally clip the gradient to a global norm first (``torch.nn.utils.clip_grad_norm_``).
The learning rate is an injected hyperparameter so that each member follows its own schedule
inside one jitted step; the optimiser state is per member (stacked), reset where a plan says.
"""
from __future__ import annotations

import dataclasses

import jax
import optax

OPTIMIZERS = ("sgd", "adamw")
# Parameters never decayed by AdamW, by leaf name (timm's ``no_weight_decay``).
NO_DECAY_NAMES = ("cls_token", "pos_embed", "relative_position_bias_table")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str = "sgd"
  weight_decay: float = 0.0
  momentum: float = 0.9  # sgd
  b1: float = 0.9  # adamw
  b2: float = 0.999
  eps: float = 1e-8
  grad_clip_norm: float = 0.0  # 0: no clipping

  @classmethod
  def from_config(cls, section) -> "OptimizerConfig":
    """From a config section (``config.pretrain`` / ``config.finetune``)."""
    get = lambda name, default: section.get(name, default) if hasattr(section, "get") else (
        getattr(section, name, default))
    return cls(name=get("optimizer", "sgd"), weight_decay=get("weight_decay", 0.0),
               momentum=get("momentum", 0.9), b1=get("b1", 0.9), b2=get("b2", 0.999),
               eps=get("eps", 1e-8), grad_clip_norm=get("grad_clip_norm", 0.0))


def decay_mask(params):
  """True for the leaves AdamW decays: tensors of 2 or more dimensions that are not class
  tokens, position embeddings or relative-position tables."""

  def keep(path, leaf):
    name = getattr(path[-1], "key", "")
    return leaf.ndim >= 2 and name not in NO_DECAY_NAMES

  return jax.tree_util.tree_map_with_path(keep, params)


def make(cfg: OptimizerConfig) -> optax.GradientTransformation:
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"optimizer={cfg.name!r}; choose one of {OPTIMIZERS}.")

  def build(learning_rate):
    parts = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else []
    if cfg.name == "sgd":
      parts += [optax.add_decayed_weights(cfg.weight_decay),
                optax.sgd(learning_rate, momentum=cfg.momentum)]
    else:
      parts.append(optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                               weight_decay=cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)

  return optax.inject_hyperparams(build)(learning_rate=0.0)
