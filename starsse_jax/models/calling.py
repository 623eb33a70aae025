"""How the library calls a Flax module: its mode argument, its dropout and its random streams.

A module is called ``module.apply(variables, images, <mode>=...)``; the mode argument may be
named (first match in the ``__call__`` signature):

- ``train``, ``training`` or ``is_training``: true while training;
- ``deterministic``: false while training (``nn.Dropout``'s own convention);
- none of them: the module has one behaviour, used for training and evaluation alike.

Randomness in training draws from the ``'dropout'`` and ``'drop_path'`` streams (``rngs``); a
module of one's own may draw from either.

Three computations need dropout set apart from the mode (BatchNorm in train mode with dropout
off, or BatchNorm on its running averages with dropout on):

- **BatchNorm statistics recomputed after weight averaging** (soups, SWA, low-precision
  ensembles, the basin curves) and the learned soup's mixing: BatchNorm in train mode, dropout
  *off*. The statistics are those of the network as it is evaluated (dropout off), which also
  avoids the variance shift dropout causes in the BatchNorm after it (Li et al., CVPR 2019).
  (PyTorch's ``swa_utils.update_bn`` leaves dropout on; this library does not.)
- **MC-dropout evaluation**: BatchNorm on its running averages, dropout *on*.

A module with a ``stochastic`` argument is told so directly (the built-in families). For any
other module, each ``flax.linen.Dropout`` layer's ``deterministic`` is overridden for that call
(``flax.linen.intercept_methods``); randomness drawn some other way follows the module's own
mode and is seeded by a fixed key where no key is given.
"""
from __future__ import annotations

import contextlib
import functools
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from starsse_jax.models.layers import DROP_PATH, DROPOUT

# Accepted names of the mode argument, and whether each is true while training.
MODE_ARGUMENTS = {"train": True, "training": True, "is_training": True, "deterministic": False}
# The key of randomness drawn by computations that need one but are not given one (the
# statistics recompute of a module that draws other than through ``nn.Dropout``).
_FIXED_SEED = 0


@functools.lru_cache(maxsize=None)
def _parameters(cls) -> tuple[str, ...]:
  try:
    return tuple(inspect.signature(cls.__call__).parameters)
  except (TypeError, ValueError):
    return ()


def mode_argument(model) -> str | None:
  """The name of ``model``'s mode argument (see ``MODE_ARGUMENTS``), or None."""
  names = _parameters(type(model))
  return next((name for name in MODE_ARGUMENTS if name in names), None)


def accepts_stochastic(model) -> bool:
  """Whether ``model`` takes ``stochastic`` (randomness on in evaluation: MC-dropout)."""
  return "stochastic" in _parameters(type(model))


def mode_kwargs(model, train: bool) -> dict:
  """``{name: value}`` of the mode argument for ``train``; empty for a module without one."""
  name = mode_argument(model)
  return {} if name is None else {name: train if MODE_ARGUMENTS[name] else not train}


@contextlib.contextmanager
def _dropout_forced(on: bool | None):
  """Within it, every ``nn.Dropout`` is on (``on``) or off, whatever the module passes."""
  if on is None:
    yield
    return

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if not (isinstance(module, nn.Dropout) and context.method_name == "__call__"):
      return next_fun(*args, **kwargs)
    # ``deterministic`` may be fixed in the layer's constructor, so the layer cannot be told;
    # its computation (``nn.Dropout.__call__``) is done here instead.
    inputs = args[0] if args else kwargs["inputs"]
    if not on or module.rate == 0.0:
      return inputs
    if module.rate == 1.0:
      return jnp.zeros_like(inputs)
    rng = kwargs.get("rng") if len(args) < 3 else args[2]
    if rng is None:
      rng = module.make_rng(module.rng_collection)
    shape = [1 if d in module.broadcast_dims else n for d, n in enumerate(inputs.shape)]
    keep = 1.0 - module.rate
    mask = jnp.broadcast_to(jax.random.bernoulli(rng, p=keep, shape=shape), inputs.shape)
    return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))

  with nn.intercept_methods(interceptor):
    yield


def rngs_from(key) -> dict:
  """The random streams a model draws from, from one key."""
  return {DROPOUT: key, DROP_PATH: jax.random.fold_in(key, 1)}


def apply(model, variables, x, *, train: bool, stochastic: bool | None = None, key=None,
          mutable=False):
  """``model.apply`` as the library calls every model.

  ``train``: the module's mode (BatchNorm on batch statistics, randomness on). ``stochastic``:
  dropout on or off whatever the mode (None: as the mode); passed to a module that takes it, else
  applied to its ``nn.Dropout`` layers. ``key`` feeds the dropout and drop-path streams (a fixed
  key when none is given). With ``mutable`` the updated collections come back as for ``apply``.
  """
  kwargs = mode_kwargs(model, train)
  forced = None
  if stochastic is not None and accepts_stochastic(model):
    kwargs["stochastic"] = stochastic
  elif stochastic is not None and stochastic != train:
    forced = stochastic
  if key is None:
    key = jax.random.key(_FIXED_SEED)
  with _dropout_forced(forced):
    return model.apply(variables, x, rngs=rngs_from(key), mutable=mutable, **kwargs)


def init(model, key, x):
  """``model.init`` in evaluation mode: ``{'params', 'batch_stats', ...}``."""
  return model.init({"params": key, **rngs_from(key)}, x, **mode_kwargs(model, False))


@functools.lru_cache(maxsize=None)
def _dropout_rates(model, image_shape: tuple) -> tuple[float, ...]:
  rates = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
      rates.append(float(context.module.rate))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: init(model, jax.random.key(0),
                                np.zeros((1,) + image_shape, np.float32)))
  return tuple(rates)


def has_flax_dropout(model, image_shape) -> bool:
  """Whether ``model`` on images of ``image_shape`` calls an ``nn.Dropout`` of rate above 0."""
  return any(r > 0 for r in _dropout_rates(model, tuple(image_shape)))
