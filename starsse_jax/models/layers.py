"""Names and small pieces every model family shares."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The classifier's module name: fine-tuning swaps it for a freshly initialised one.
HEAD = "head"
# PRNG collections (``model.apply(..., rngs={DROPOUT: key, DROP_PATH: key})``): dropout masks and
# stochastic depth each draw from a stream of their own.
DROPOUT = "dropout"
DROP_PATH = "drop_path"


def drop_path(module: nn.Module, x, rate: float, stochastic: bool):
  """Stochastic depth (timm's ``DropPath``): each sample's residual branch is zeroed with
  probability ``rate`` and the kept ones scaled by ``1 / (1 - rate)``. Identity when not
  ``stochastic`` or ``rate`` is 0, so evaluation never draws a random number."""
  if not stochastic or rate <= 0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng(DROP_PATH), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * (mask.astype(x.dtype) / jnp.asarray(keep, x.dtype))


def drop_path_rates(rate: float, depth: int) -> list[float]:
  """timm's per-block rates: ``linspace(0, rate, depth)`` over all blocks of the network."""
  return [float(r) for r in np.linspace(0.0, rate, depth, dtype=np.float32)] if depth else []


def gelu(x):
  """timm's ``nn.GELU``: the exact (erf) form; Flax's ``nn.gelu`` defaults to the tanh one."""
  return nn.gelu(x, approximate=False)


def quick_gelu(x):
  """OpenAI CLIP's activation, ``x * sigmoid(1.702 x)``."""
  return x * nn.sigmoid(1.702 * x)


def patch_embed(x, patch: int, features: int, dtype, use_bias: bool = True):
  """Non-overlapping ``patch x patch`` patches projected to ``features`` (timm's ``PatchEmbed``
  conv, named ``patch_embed_proj``); an image size the patch does not divide is refused."""
  if x.shape[1] % patch or x.shape[2] % patch:
    raise ValueError(f"Image size {x.shape[1:3]} is not divisible by the patch size {patch}.")
  return nn.Conv(features, (patch, patch), strides=patch, padding="VALID", use_bias=use_bias,
                 dtype=dtype, name="patch_embed_proj")(x.astype(dtype))


def layer_norm(name: str, epsilon: float, dtype):
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name)
