"""Learning-rate schedules of the methods, as ``optax`` schedules over the step within a phase.

Every phase of a plan gives each member one schedule ``step -> lr``; the phase runner evaluates
them once into a table ``[steps, members]`` that the jitted step reads row by row (and that the
learning-rate plot draws).

- Cosine cycle (fine-tuning, SSE, StarSSE; Loshchilov & Hutter 2017, no warm-up):
  ``lr(t) = peak * (1 + cos(pi * t / T)) / 2`` for ``t in [0, T)``.
- Linear warm-up then cosine (the official Swin-T fine-tuning, ``linear_warmup_cosine``): over
  ``W`` warm-up units ``lr(u) = (1 - u/W) lr_0 + (u/W) peak``, then
  ``peak * (1 + cos(pi (u - W) / (T - W))) / 2``; a unit is a step, or an epoch when the
  schedule is stepped once per epoch (``u = floor(t / steps_per_epoch)``), as the official code does.
- FGE triangular cycle of length ``c`` steps (Garipov et al. 2018): with ``u = (t mod c) / c``,
  ``lr = (1 - 2u) lr_1 + 2u lr_2`` for ``u < 1/2`` and ``(2u - 1) lr_1 + (2 - 2u) lr_2`` otherwise;
  a member is collected where ``lr = lr_2`` (the middle of each cycle).
- SWA (Izmailov et al. 2018): constant ``lr``, or a sawtooth falling linearly from ``lr_1`` to
  ``lr_2`` within each collection period.
"""
from __future__ import annotations

import numpy as np
import optax


def cosine_cycle(peak_lr: float, num_steps: int) -> optax.Schedule:
  """One cosine cycle from ``peak_lr`` to 0 over ``num_steps`` steps."""
  if peak_lr <= 0 or num_steps <= 0:
    raise ValueError(f"A cosine cycle needs peak_lr > 0 and num_steps > 0, got {peak_lr}, "
                     f"{num_steps}.")
  return optax.schedules.cosine_decay_schedule(init_value=peak_lr, decay_steps=num_steps)


def warmup_cosine(peak_lr: float, num_steps: int, warmup_steps: int = 0, warmup_lr: float = 0.0,
                  unit_steps: int = 1) -> optax.Schedule:
  """Linear warm-up from ``warmup_lr`` to ``peak_lr`` over ``warmup_steps``, then a cosine to 0
  at ``num_steps``; the value changes once per ``unit_steps`` steps (1: every step; steps per
  epoch: once per epoch). Without warm-up and with ``unit_steps=1`` it is ``cosine_cycle``."""
  if peak_lr <= 0 or num_steps <= 0 or not 0 <= warmup_steps < num_steps or unit_steps < 1:
    raise ValueError(f"A warm-up cosine needs peak_lr > 0, 0 <= warmup_steps < num_steps, "
                     f"unit_steps >= 1; got {peak_lr}, {warmup_steps}, {num_steps}, {unit_steps}.")
  total, warm = num_steps / unit_steps, warmup_steps / unit_steps

  def schedule(step):
    u = np.floor_divide(np.asarray(step), unit_steps).astype(np.float64)
    alpha = u / max(warm, 1e-12)
    rising = (1 - alpha) * warmup_lr + alpha * peak_lr
    falling = peak_lr * 0.5 * (1 + np.cos(np.pi * (u - warm) / (total - warm)))
    return np.where(u < warm, rising, falling)

  return schedule


def triangular_cycle(lr_1: float, lr_2: float, cycle_steps: int,
                     offset_steps: int = 0) -> optax.Schedule:
  """FGE's cycle: linear ``lr_1 -> lr_2`` over half a cycle, then back up; repeats.

  ``offset_steps`` shifts the start, so that a phase can begin mid-cycle (at ``lr_2``).
  """
  if cycle_steps < 2:
    raise ValueError(f"An FGE cycle needs at least 2 steps, got {cycle_steps}.")
  half = cycle_steps // 2
  down = optax.schedules.linear_schedule(lr_1, lr_2, half)
  up = optax.schedules.linear_schedule(lr_2, lr_1, cycle_steps - half)
  one_cycle = optax.schedules.join_schedules([down, up], boundaries=[half])
  return lambda step: one_cycle((step + offset_steps) % cycle_steps)


def constant(lr: float) -> optax.Schedule:
  """``lr`` at every step (SWA's constant schedule)."""
  if lr <= 0:
    raise ValueError(f"A constant schedule needs lr > 0, got {lr}.")
  return optax.schedules.constant_schedule(lr)


def sawtooth(lr_1: float, lr_2: float, period_steps: int) -> optax.Schedule:
  """SWA's cyclic schedule: within each period of ``c`` steps, with ``u = (t mod c + 1) / c``,
  ``lr = (1 - u) lr_1 + u lr_2``, so the last step of a period (where SWA collects) is at
  ``lr_2`` and the next period restarts near ``lr_1``."""
  if period_steps < 1 or lr_1 <= 0 or lr_2 < 0:
    raise ValueError(f"A sawtooth needs period >= 1, lr_1 > 0, lr_2 >= 0; got {period_steps}, "
                     f"{lr_1}, {lr_2}.")

  def schedule(step):
    u = (step % period_steps + 1) / period_steps
    return (1 - u) * lr_1 + u * lr_2

  return schedule


def table(schedules, num_steps: int) -> np.ndarray:
  """Evaluates per-member schedules at steps ``0..num_steps-1``: float32 array ``[steps, K]``."""
  steps = np.arange(num_steps)
  # broadcast: a constant schedule returns one value for any step array
  return np.stack([np.broadcast_to(np.asarray(s(steps), dtype=np.float32), steps.shape)
                   for s in schedules], axis=1)
