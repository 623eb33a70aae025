"""Model families and how the library calls a model.

Families, each a module of its own computing what its reference computes:
``resnet`` (torchvision's ResNets), ``vit`` (timm's ViTs, CLIP's image tower), ``swin`` (timm's
Swin Transformers). ``build_model(config.model, num_classes)`` picks one by ``model.name``;
``register(prefix, factory)`` adds a family or a model of one's own.

Any Flax module works with the library if it takes normalised NHWC images, returns logits, and
names its classifier ``head`` (or the name given as ``config.model.head``). Its mode argument
may be ``train``, ``training``, ``is_training`` or ``deterministic``, or it may have none
(``calling``); ``nn.Dropout`` and ``nn.BatchNorm`` driven by it work everywhere (MC-dropout
turns the ``nn.Dropout`` layers on). Optional: a ``stochastic`` argument (dropout on in
evaluation), BatchNorm statistics in a ``batch_stats`` collection (recomputed after weight
averaging), a ``bn_axis_name`` attribute (BatchNorm synchronised over a data-parallel mesh axis).
Collections that a module only writes with ``sow`` are ignored; ``params`` and ``batch_stats``
are the only collections a module may read.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from starsse_jax.models import calling, swin, vit
from starsse_jax.models.layers import DROP_PATH, DROPOUT, HEAD
from starsse_jax.models.resnet import STEMS, TORCHVISION, BatchNorm, ResNet
from starsse_jax.models import resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# name (or name prefix ending in '*') -> factory(model_config, num_classes, dtype) -> module
_FACTORIES: dict[str, Callable[..., Any]] = {}


def register(name: str, factory: Callable[..., Any]) -> None:
  """Makes ``config.model.name = name`` build ``factory(model_config, num_classes, dtype)``.

  ``name`` may end in ``*`` to claim every name with that prefix."""
  _FACTORIES[name] = factory


def _vit(model_config, num_classes, dtype):
  return vit.build_vit(model_config.name, num_classes, dtype,
                       model_config.get("drop_path_rate", 0.0))


def _vit_sized(model_config, num_classes, dtype):
  """``model.name='vit'``: a ViT of ``model.width``, ``model.depth``, ``model.heads``,
  ``model.patch`` (small ones for small images, e.g. the embedded data)."""
  return vit.ViT(patch=model_config.patch, width=model_config.width, depth=model_config.depth,
                 heads=model_config.heads, num_classes=num_classes, dtype=dtype,
                 drop_path_rate=model_config.get("drop_path_rate", 0.0))


def _swin(model_config, num_classes, dtype):
  return swin.build_swin(model_config.name, num_classes, dtype,
                         model_config.get("drop_path_rate", 0.0))


for _name in resnet.NAMES:
  register(_name, resnet.build)
register("vit", _vit_sized)
for _name in vit.VIT_SIZES:
  register(_name, _vit)
for _name in swin.SWIN_SIZES:
  register(_name, _swin)


def names() -> tuple[str, ...]:
  return tuple(_FACTORIES)


def _factory(name: str):
  if name in _FACTORIES:
    return _FACTORIES[name]
  for key, factory in _FACTORIES.items():
    if key.endswith("*") and name.startswith(key[:-1]):
      return factory
  return None


def is_known(name: str) -> bool:
  return _factory(name) is not None


def is_builtin(name: str) -> bool:
  return (name in resnet.NAMES or name == "vit" or name in vit.VIT_SIZES
          or name in swin.SWIN_SIZES)


def build_model(model_config, num_classes: int):
  """The model named by ``config.model.name`` with ``num_classes`` outputs."""
  factory = _factory(model_config.name)
  if factory is None:
    raise ValueError(f"Unknown model {model_config.name!r}; choose one of {names()} or register "
                     "a factory (starsse_jax.models.register).")
  return factory(model_config, num_classes, DTYPES[model_config.dtype])


# Back-compatible name: the built-in model names.
MODELS = names()


def family(model) -> str:
  """'resnet', 'vit', 'swin' or 'custom'."""
  if isinstance(model, ResNet):
    return "resnet"
  if isinstance(model, vit.ViT):
    return "vit"
  if isinstance(model, swin.Swin):
    return "swin"
  return "custom"


def accepts_stochastic(model) -> bool:
  """Whether ``model`` takes ``stochastic`` (randomness on in evaluation: MC-dropout)."""
  return calling.accepts_stochastic(model)


_RATES = ("dropout_rate", "block_dropout_rate", "drop_path_rate")


def is_random_in_training(model) -> bool:
  """Whether training needs PRNG keys: a built-in model with a dropout or drop-path rate, or any
  module of the user's own (which may draw from ``'dropout'``)."""
  if family(model) == "custom":
    return True
  return any(getattr(model, r, 0.0) > 0 for r in _RATES)


def has_dropout(model, image_shape=None) -> bool:
  """Whether evaluation with dropout on (MC-dropout) differs from the deterministic one: a
  built-in model with a dropout or drop-path rate; a module of one's own that takes
  ``stochastic``, or (given the ``image_shape`` it is called on) calls an ``nn.Dropout`` of rate
  above 0."""
  if family(model) == "custom":
    return accepts_stochastic(model) or (
        image_shape is not None and calling.has_flax_dropout(model, image_shape))
  return any(getattr(model, r, 0.0) > 0 for r in _RATES)


apply = calling.apply
init = calling.init


def without_dropout(model):
  """``model`` with dropout off (pre-training is the same for every method); drop-path, part of a
  transformer's recipe, stays."""
  off = {r: 0.0 for r in ("dropout_rate", "block_dropout_rate") if hasattr(model, r)}
  return model.clone(**off) if off else model


def with_bn_axis(model, axis_name: str | None):
  """``model`` with BatchNorm synchronised over ``axis_name``, where the model supports it."""
  if axis_name is None or not hasattr(model, "bn_axis_name"):
    return model
  return model.clone(bn_axis_name=axis_name)


__all__ = ["BatchNorm", "ResNet", "STEMS", "TORCHVISION", "HEAD", "DROPOUT", "DROP_PATH",
           "DTYPES", "MODELS", "build_model", "register", "names", "is_known", "family", "apply",
           "accepts_stochastic", "has_dropout", "init", "calling", "is_random_in_training", "with_bn_axis",
           "without_dropout", "swin",
           "vit", "resnet"]
