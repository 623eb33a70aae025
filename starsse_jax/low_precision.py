"""Low-precision ensembling (Nam & Lee, "Ex Uno Pluria", NeurIPS 2024): members drawn from one
trained model, without training, by rounding its weights stochastically onto a b-bit grid.

The grid is symmetric signed integers ``{-L, ..., L} * s`` with ``L = 2^(b-1) - 1`` (zero exact,
one code of INT-b unused) and scale ``s = max|w| / L``, taken over the whole tensor
(``per_channel=False``) or per output channel (the last axis of Flax's conv and dense kernels).
Stochastic rounding of ``x = w / s`` gives ``floor(x) + 1`` with probability ``x - floor(x)``,
else ``floor(x)``: unbiased (``E[q s] = w``), and ``|x| <= L`` by the choice of ``s``, so no
value is ever clipped. Round-to-nearest is the deterministic baseline (one model, no ensemble).

Only kernels (``QUANTIZED``) are rounded: BatchNorm scales and biases and the head's bias stay
float32, as in weight-only quantisation of ResNets; ``memory_bits`` counts them at 32 bits, and
one float32 scale per tensor or channel. BatchNorm statistics of a rounded network can be kept
(those of the float model) or recomputed on training data; the caller chooses (``evaluate``
reports both).
"""
from __future__ import annotations

import dataclasses

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from starsse_jax import members, metrics, uncertainty

QUANTIZED = ("kernel",)


def levels(bits: int) -> int:
  """``L``: the grid is ``{-L, ..., L}`` times the scale."""
  if not 2 <= bits <= 16:
    raise ValueError(f"bits={bits}; low-precision grids need 2 to 16 bits.")
  return 2 ** (bits - 1) - 1


def grid_scale(w, bits: int, per_channel: bool = True):
  """``max|w| / L`` over the tensor, or per output channel (last axis), broadcastable to ``w``."""
  axes = tuple(range(w.ndim - 1)) if per_channel and w.ndim > 1 else None
  amax = jnp.max(jnp.abs(w), axis=axes, keepdims=True)
  return jnp.where(amax > 0, amax / levels(bits), 1.0)


def stochastic_round(key, w, bits: int, per_channel: bool = True):
  """``w`` rounded stochastically onto its b-bit grid (returned dequantised, in ``w``'s dtype)."""
  s = grid_scale(w, bits, per_channel)
  x = w / s
  low = jnp.floor(x)
  q = low + (jax.random.uniform(key, w.shape) < (x - low))
  return (jnp.clip(q, -levels(bits), levels(bits)) * s).astype(w.dtype)


def round_to_nearest(w, bits: int, per_channel: bool = True):
  """``w`` rounded to the nearest point of its b-bit grid."""
  s = grid_scale(w, bits, per_channel)
  return (jnp.clip(jnp.round(w / s), -levels(bits), levels(bits)) * s).astype(w.dtype)


def _quantized(path) -> bool:
  return getattr(path[-1], "key", None) in QUANTIZED


def quantize(params: Any, bits: int, key=None, per_channel: bool = True) -> Any:
  """Every kernel of ``params`` on its b-bit grid: stochastically with ``key`` (each tensor its own
  fold of it), or round-to-nearest when ``key`` is None."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, (path, w) in enumerate(leaves):
    if not _quantized(path):
      out.append(w)
    elif key is None:
      out.append(round_to_nearest(w, bits, per_channel))
    else:
      out.append(stochastic_round(jax.random.fold_in(key, i), w, bits, per_channel))
  return jax.tree.unflatten(treedef, out)


def draw(key, params: Any, bits: int, num: int, per_channel: bool = True) -> Any:
  """``num`` stochastic roundings of one model's ``params``, stacked (members of an LPE)."""
  return jax.vmap(lambda k: quantize(params, bits, k, per_channel))(jax.random.split(key, num))


def memory_bits(params: Any, bits: int | None, per_channel: bool = True) -> int:
  """Bits to store one model: b per kernel weight plus a float32 scale per tensor or output
  channel; everything else, and every weight when ``bits`` is None, at 32 bits."""
  total = 0
  for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
    size = int(np.prod(np.shape(w)))
    if bits is None or not _quantized(path):
      total += 32 * size
    else:
      scales = np.shape(w)[-1] if per_channel and np.ndim(w) > 1 else 1
      total += bits * size + 32 * scales
  return total


@dataclasses.dataclass(frozen=True)
class Settings:
  """Which low-precision models ``evaluate`` reports: bit widths, draws per model, the seed of
  the draws, one grid scale per output channel (else per tensor), ECE bins."""
  bits: tuple[int, ...] = (4, 5, 6)
  samples: int = 5
  seed: int = 0
  per_channel: bool = True
  ece_bins: int = 15


def evaluate(variables: dict[str, Any], predict: Callable, recompute: Callable, test, val,
             settings: Settings = Settings()):
  """Round-to-nearest and low-precision ensembles of every bit width in ``settings.bits``.

  ``variables``: stacked ``{'params', 'batch_stats'}`` members (K >= 1). ``predict(variables,
                                                                                   images)`` gives
  ``[K', N, C]`` probabilities of stacked variables; ``recompute(params, batch_stats)`` their
  BatchNorm statistics on training data. ``test``/``val``: (images, labels). Member 0 gives the
  round-to-nearest model and the LPE of ``samples`` draws; with K > 1, ``plus_lpe`` is every
  member's ``samples`` draws together (K x samples models). Each is reported with the float
  model's BatchNorm statistics (``bn_kept``) and with statistics recomputed (``bn_recomputed``);
  a model without BatchNorm has ``bn_kept`` only (there is nothing to recompute).
  """
  params, batch_stats = variables["params"], variables["batch_stats"]
  bits_list, samples, seed = settings.bits, settings.samples, settings.seed
  per_channel, ece_bins = settings.per_channel, settings.ece_bins
  k = members.num_members(params)
  first = members.take(params, 0)
  out = {"scale": "per output channel" if per_channel else "per tensor", "samples": samples,
         "float32_bits": memory_bits(first, None), "bits": {},
         "batchnorm": bool(jax.tree.leaves(batch_stats))}

  for bits in bits_list:
    key = jax.random.fold_in(jax.random.key(seed), bits)
    entry = {"bits_per_model": memory_bits(first, bits, per_channel)}
    rtn = members.broadcast(quantize(first, bits, None, per_channel), 1)
    draws = [draw(jax.random.fold_in(key, m), members.take(params, m), bits, samples, per_channel)
             for m in range(k)]
    candidates = {"round_to_nearest": rtn, "lpe": draws[0]}
    if k > 1:
      candidates["plus_lpe"] = members.concat(draws)
    for name, stacked in candidates.items():
      n = members.num_members(stacked)
      owner = [0] * n if name != "plus_lpe" else [m for m in range(k) for _ in range(samples)]
      kept = members.take(batch_stats, owner)
      entry[name] = {"models": n}
      modes = {"bn_kept": kept}
      if out["batchnorm"]:
        modes["bn_recomputed"] = recompute(stacked, kept)
      for mode, stats in modes.items():
        variables = {"params": stacked, "batch_stats": stats}
        test_p, val_p = predict(variables, test[0]), predict(variables, val[0])
        ens_test, ens_val = metrics.ensemble(test_p), metrics.ensemble(val_p)
        entry[name][mode] = {
            "test": metrics.summary(ens_test, test[1], ece_bins),
            "calibrated_nll": uncertainty.calibrated_nll(ens_val, val[1], ens_test, test[1]),
            "member_accuracy": float(np.mean([metrics.accuracy(p, test[1]) for p in test_p]))}
    out["bits"][str(bits)] = entry
  return out
