"""Convolutions whose kernel gradient is one small matrix product per kernel tap.

XLA computes the gradient of a convolution with respect to its kernel as another convolution,
with the batch as the contracted feature dimension and the output image as a window as large as
the input. On a CPU that convolution is the slowest op of a training step by far: for the
default model (28 px, 16-64 channels, batch 128) the kernel gradients took 127 of a step's
270 ms of op time on a 2-core CPU, plus 36 ms of transposes into the layouts they want
(``experiments/profile_step.py --kernel-grad=xla``; docs/performance.md). Here the same
gradient is written as what it is,

  dK[i, j] = sum over (n, h, w) of  X_pad[n, s*h + i, s*w + j, :]^T  dY[n, h, w, :],

one ``[N*Ho*Wo, Cin]^T x [N*Ho*Wo, Cout]`` product per tap (i, j), the taps taken one after
another by ``lax.map``: running them concurrently (as independent ops would be) thrashes the
caches of a small CPU. The forward pass and the input gradient stay XLA's own. The result is
the same function; only the order of the floating-point sums in dK differs.

``kernel_grad`` picks the formulation: ``'xla'`` (XLA's, the same program as ``flax.linen.Conv``
by default), ``'taps'`` (the above) or ``'auto'`` (``'taps'`` on CPU, ``'xla'`` elsewhere: GPUs
and TPUs keep the program they were measured with).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

KERNEL_GRADS = ("auto", "xla", "taps")

_NHWC = ("NHWC", "HWIO", "NHWC")


def resolve_kernel_grad(kernel_grad: str, backend: str | None = None) -> str:
  """The concrete formulation for ``kernel_grad`` on ``backend`` (default: JAX's default)."""
  if kernel_grad not in KERNEL_GRADS:
    raise ValueError(f"Unknown kernel gradient {kernel_grad!r}; choose one of {KERNEL_GRADS}.")
  if kernel_grad != "auto":
    return kernel_grad
  return "taps" if (backend or jax.default_backend()) == "cpu" else "xla"


def conv_function(kernel_grad: str):
  """What ``flax.linen.Conv(conv_general_dilated=...)`` should call for ``kernel_grad``: None
  (Flax's default, ``lax.conv_general_dilated``) for ``'xla'``, else a function with its
  signature whose kernel gradient follows ``kernel_grad`` (``'auto'`` resolved when traced)."""
  resolve_kernel_grad(kernel_grad)  # validates
  return None if kernel_grad == "xla" else _CONV_FUNCTIONS[kernel_grad]


def _lax_conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def kernel_grad_by_taps(x: jax.Array, dy: jax.Array, kernel_size: Sequence[int],
                        strides: Sequence[int], padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Gradient ``[kh, kw, Cin, Cout]`` of an NHWC/HWIO convolution with respect to its kernel,
  given its input ``x`` ``[N, H, W, Cin]`` and output cotangent ``dy`` ``[N, Ho, Wo, Cout]``.

  The padded input is folded into ``[N, Hp/sh, sh, Wp/sw, sw, Cin]`` so that every tap's strided
  window is one ``dynamic_slice`` (stride phase ``i % s``, offset ``i // s``).
  """
  n, cin, cout = x.shape[0], x.shape[-1], dy.shape[-1]
  outs = dy.shape[1:3]
  pads, folded = [(0, 0, 0)], [n]
  for size, k, s, (lo, _), out in zip(x.shape[1:3], kernel_size, strides, padding, outs):
    padded = s * ((k - 1) // s + out)  # rows that some tap reads, rounded up to a multiple of s
    pads.append((lo, padded - size - lo, 0))  # a negative high pad crops rows no tap reads
    folded += [padded // s, s]
  pads.append((0, 0, 0))
  xp = lax.pad(x, jnp.zeros((), x.dtype), pads).reshape(folded + [cin])
  dy_rows = dy.reshape(-1, cout)
  kw = kernel_size[1]
  (sh, sw) = strides

  def tap(t):
    i, j = t // kw, t % kw
    window = lax.dynamic_slice(xp, (0, i // sh, i % sh, j // sw, j % sw, 0),
                               (n, outs[0], 1, outs[1], 1, cin))
    return lax.dot_general(window.reshape(-1, cin), dy_rows, (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32)

  taps = jnp.arange(kernel_size[0] * kw)
  grads = tap(taps[0])[None] if taps.size == 1 else lax.map(tap, taps)
  return grads.reshape(tuple(kernel_size) + (cin, cout))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_taps(x, kernel, strides, padding):
  return _lax_conv(x, kernel, strides, padding)


def _conv_taps_fwd(x, kernel, strides, padding):
  return _lax_conv(x, kernel, strides, padding), (x, kernel)


def _conv_taps_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _lax_conv(x, kernel, strides, padding), x)
  (dx,) = input_vjp(dy)
  dk = kernel_grad_by_taps(x, dy, kernel.shape[:2], strides, padding)
  # Inside shard_map a kernel replicated over an axis that splits the batch gets the sum of the
  # shards' gradients, as the transpose of the implicit broadcast gives it on XLA's path.
  spread = tuple(sorted(_varying_axes(dk) - _varying_axes(kernel)))
  if spread:
    dk = lax.psum(dk, spread)
  return dx, dk.astype(kernel.dtype)


def _varying_axes(a) -> frozenset:
  """The manual mesh axes along which ``a`` varies (empty outside ``shard_map``)."""
  aval = jax.typeof(a)
  axis_type = getattr(aval, "manual_axis_type", None)  # JAX >= 0.10; earlier: ``vma``
  return frozenset(axis_type.varying if axis_type is not None else getattr(aval, "vma", ()))


_conv_taps.defvjp(_conv_taps_fwd, _conv_taps_bwd)


def _plain(lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
           ndim) -> bool:
  """Whether a convolution is one ``kernel_grad_by_taps`` covers: 2-D NHWC/HWIO, no dilation,
  no groups."""
  ones = lambda d: d is None or all(v == 1 for v in d)
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    nhwc = dimension_numbers == lax.conv_dimension_numbers((1,) * 4, (1,) * 4, _NHWC)
  else:
    nhwc = dimension_numbers is not None and tuple(dimension_numbers) == _NHWC
  return (ndim == 4 and nhwc and ones(lhs_dilation) and ones(rhs_dilation)
          and feature_group_count == 1 and batch_group_count == 1)


def _make_conv(kernel_grad: str):
  def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                           batch_group_count=1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` with the kernel gradient of ``kernel_grad``."""
    concrete = resolve_kernel_grad(kernel_grad)
    if concrete == "taps" and precision is None and preferred_element_type is None and _plain(
        lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
        lhs.ndim):
      if isinstance(padding, str):  # 'SAME' / 'VALID' as explicit (low, high) pairs
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
      return _conv_taps(lhs, rhs, tuple(window_strides),
                        tuple((int(lo), int(hi)) for lo, hi in padding))
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)

  conv_general_dilated.__name__ = f"conv_general_dilated_{kernel_grad}"
  return conv_general_dilated


_CONV_FUNCTIONS = {name: _make_conv(name) for name in ("auto", "taps")}
