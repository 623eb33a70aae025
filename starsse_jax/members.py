"""The member axis: stacked pytrees and how a function runs over them.

Ensemble state is a pytree whose every leaf has a leading member axis of size K. Storage is always
stacked; *execution* over that axis is one switch (``member_map``), because the fastest choice
depends on the backend and model: ``jax.vmap`` turns a convolution over stacked kernels into a
grouped convolution, which XLA runs several times slower than K ordinary ones on CPU and GPU alike
(measured: ResNet-50 on an H100, 697 vs 4,431 member-img/s; ResNet-8 on a 2-core CPU, 4.5x).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

STRATEGIES = ("auto", "unroll", "map", "vmap", "chunked")

# Above this many members an unrolled program compiles slowly; lax.map keeps compile time flat.
_MAX_UNROLL = 8


def stack(trees: Sequence[Any]) -> Any:
  """Stacks K pytrees of equal structure into one pytree with a leading member axis."""
  if not trees:
    raise ValueError("stack() needs at least one pytree.")
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any) -> list[Any]:
  """Inverse of ``stack``: the K member pytrees of a stacked pytree."""
  return [take(tree, k) for k in range(num_members(tree))]


def take(tree: Any, index) -> Any:
  """Member ``index`` (an int) or members ``index`` (a sequence) of a stacked pytree."""
  if isinstance(index, (list, tuple, np.ndarray)):
    index = np.asarray(index, dtype=np.int32)
  return jax.tree.map(lambda leaf: leaf[index], tree)


def concat(trees: Sequence[Any]) -> Any:
  """Joins stacked pytrees along the member axis (``None`` entries are skipped)."""
  trees = [t for t in trees if t is not None]
  return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *trees)


def broadcast(tree: Any, k: int) -> Any:
  """K identical copies of one (unstacked) pytree, stacked."""
  return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (k,) + jnp.shape(leaf)), tree)


def num_members(tree: Any) -> int:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError("Empty pytree has no member axis.")
  return int(leaves[0].shape[0])


def mean(tree: Any) -> Any:
  """Mean over the member axis (a uniform weight average)."""
  return jax.tree.map(lambda leaf: jnp.mean(leaf, axis=0), tree)


def resolve_strategy(strategy: str, num: int, backend: str | None = None) -> str:
  """Picks the concrete strategy for ``auto``.

  Measured (docs/performance.md): on an H100, ResNet-50 bf16 members run at 1.01-1.02x one member's
  member-img/s with ``unroll`` and 0.99-1.00x with ``lax.map`` (``vmap`` several times slower); a
  small ResNet is launch-bound there and every strategy gains ~2x. On a 2-core CPU ``unroll``
  matches one member while ``lax.map`` is ~20x and ``vmap`` ~4x slower. Large K switches to
  ``map`` on accelerators to bound compile time (ResNet-50, K = 8: 120 s unrolled, 21 s mapped).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown member strategy {strategy!r}; choose one of {STRATEGIES}.")
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  if num <= _MAX_UNROLL or backend == "cpu":
    return "unroll"
  return "map"


def member_map(fn: Callable[..., Any], strategy: str) -> Callable[..., Any]:
  """Lifts ``fn(*member_args)`` to stacked arguments (every leaf has a leading member axis).

  Use it inside ``jax.jit``. All strategies compute the same function; they differ in the
  program XLA sees.
  """

  def lifted(*args):
    k = num_members(args)
    concrete = resolve_strategy(strategy, k)
    if concrete == "vmap":
      return jax.vmap(fn)(*args)
    if concrete == "map":
      return jax.lax.map(lambda a: fn(*a), args)
    if concrete == "chunked":
      return _chunked(fn, args, k)
    return stack([fn(*take(args, i)) for i in range(k)])

  return lifted


def chunking(k: int, max_chunk: int = _MAX_UNROLL) -> tuple[int, int]:
  """``(groups, chunk)`` for K members: the fewest groups of at most ``max_chunk`` members, as
  equal as possible; ``groups * chunk - K`` padding members (fewer than ``groups``)."""
  groups = -(-k // max_chunk)
  return groups, -(-k // groups)


# An unrolled program's compile time grows with its members on a CPU (default network: 5 members
# 13 s, 10 members 29-36 s, 20 members 79 s; experiments/bench_compile.py), but at K = 10 one
# program ran faster per member than two groups of 5 in two runs (812 and 856 against 678 and
# 740 member-img/s): phases of more than MAX_ONE_PROGRAM members run as groups of _GROUP or less.
MAX_ONE_PROGRAM, _GROUP = 10, 5


def group_size(k: int, strategy: str, backend: str | None = None) -> int:
  """Members per compiled program for a phase of ``k`` members run without a mesh on a CPU.

  A phase of more than 10 unrolled members is split into equal groups of at most 5 (the last
  padded with copies of its last member), each advanced by a call of the same compiled step:
  compile time stays that of 5 members whatever K, and each call runs at the unrolled program's
  speed (``lax.map``'s loop, the other way to bound compile time, runs ~3x slower on a CPU). Up
  to 10 members one program is kept: it compiles in at most twice 5 members' time and runs
  faster per member than two groups.
  Measured by ``experiments/bench_compile.py`` (docs/performance.md). Accelerators keep one
  program per phase (unrolled up to 8 members, ``lax.map`` above), as measured there; ``map``,
  ``vmap`` and ``chunked`` phases are one program everywhere.
  """
  backend = backend or jax.default_backend()
  if (backend != "cpu" or resolve_strategy(strategy, k, backend) != "unroll"
      or k <= MAX_ONE_PROGRAM):
    return k
  return chunking(k, _GROUP)[1]


def pad_members(tree: Any, total: int) -> Any:
  """``tree``'s members followed by copies of its last member up to ``total`` (numpy leaves
  stay numpy)."""
  def pad(leaf):
    extra = total - leaf.shape[0]
    if not extra:
      return leaf
    xp = np if isinstance(leaf, np.ndarray) else jnp
    return xp.concatenate([leaf, xp.repeat(leaf[-1:], extra, axis=0)])

  return jax.tree.map(pad, tree)


def split_groups(tree: Any, size: int) -> list[Any]:
  """Stacked members as groups of ``size``; the last is padded with copies of the last member."""
  groups = -(-num_members(tree) // size)
  tree = pad_members(tree, groups * size)
  return [jax.tree.map(lambda leaf, g=g: leaf[g * size:(g + 1) * size], tree)
          for g in range(groups)]


def join_groups(groups: Sequence[Any], k: int) -> Any:
  """Inverse of ``split_groups``: the first ``k`` members of the groups, stacked."""
  joined = groups[0] if len(groups) == 1 else concat(groups)
  return joined if num_members(joined) == k else take(joined, np.arange(k))


def _chunked(fn, args, k: int):
  """``lax.map`` over groups of members, each group unrolled: the program holds one group's
  members, so compile time stays flat in K. K pads to whole groups by repeating the last member;
  the copies' outputs are dropped (their extra compute is at most groups - 1 members)."""
  groups, chunk = chunking(k)
  padded = pad_members(args, groups * chunk)
  grouped = jax.tree.map(lambda leaf: leaf.reshape((groups, chunk) + leaf.shape[1:]), padded)
  out = jax.lax.map(lambda a: stack([fn(*take(a, i)) for i in range(chunk)]), grouped)
  return jax.tree.map(lambda leaf: leaf.reshape((groups * chunk,) + leaf.shape[2:])[:k], out)
