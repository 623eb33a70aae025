"""Methods as plans: where each member starts and which schedule it follows.

A plan is a list of phases. Every phase trains its members together in one jitted step and
appends them, in order, to the ensemble. A member starts from a fresh initialisation (pre-training),
from pre-trained checkpoint ``k`` with a new seeded head, or from ensemble member ``j``
(weights, BatchNorm statistics and head; optimizer state too unless the phase resets it).

Notation: ``E`` = fine-tuning epochs, ``lr`` = its peak learning rate, ``K`` = members.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import optax

from starsse_jax import schedules


@dataclasses.dataclass(frozen=True)
class Start:
  """Where one member of a phase starts: ``kind`` is 'init', 'pretrained' or 'member'."""
  kind: str
  index: int


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  starts: tuple[Start, ...]
  schedules: tuple[optax.Schedule, ...]
  num_steps: int
  reset_optimizer: bool = True

  @property
  def num_members(self) -> int:
    return len(self.starts)


@dataclasses.dataclass(frozen=True)
class Budget:
  """What a plan needs to know about the fine-tuning run (steps, not epochs)."""
  num_members: int
  steps_per_epoch: int
  epochs: float
  lr: float
  lr_ratio: float = 1.0
  cycle_ratio: float = 1.0
  fge_cycle_epochs: int = 2
  fge_lr_1: float = 0.05
  fge_lr_2: float = 1e-4

  def steps(self, epochs: float) -> int:
    return max(1, int(round(epochs * self.steps_per_epoch)))


def _finetune(b: Budget, sources) -> Phase:
  """Ordinary fine-tuning of one member per source checkpoint: cosine from lr over E epochs."""
  n = b.steps(b.epochs)
  starts = tuple(Start("pretrained", s) for s in sources)
  return Phase("finetune", starts, (schedules.cosine_cycle(b.lr, n),) * len(starts), n)


def _cycle(b: Budget, name: str, sources) -> Phase:
  """One SSE/StarSSE cycle: peak lr_ratio x lr, cycle_ratio x E epochs, optimizer reset."""
  n = b.steps(b.cycle_ratio * b.epochs)
  starts = tuple(Start("member", s) for s in sources)
  lr = schedules.cosine_cycle(b.lr_ratio * b.lr, n)
  return Phase(name, starts, (lr,) * len(starts), n)


def local_de(b: Budget) -> list[Phase]:
  """K members fine-tuned from the same checkpoint, all at once."""
  return [_finetune(b, [0] * b.num_members)]


def global_de(b: Budget) -> list[Phase]:
  """Member k fine-tuned from pre-trained checkpoint k."""
  return [_finetune(b, range(b.num_members))]


def sse(b: Budget) -> list[Phase]:
  """Snapshot ensemble in transfer: member j+1 continues from member j with one more cycle."""
  return [_finetune(b, [0])] + [_cycle(b, f"sse_cycle_{j + 1}", [j])
                                for j in range(b.num_members - 1)]


def starsse(b: Budget) -> list[Phase]:
  """StarSSE: every member j >= 2 branches from member 1; the K-1 branches train together."""
  plan = [_finetune(b, [0])]
  if b.num_members > 1:
    plan.append(_cycle(b, "star_branches", [0] * (b.num_members - 1)))
  return plan


def fge(b: Budget) -> list[Phase]:
  """Fast Geometric Ensembling from the fine-tuned model: a member at each cycle's lr minimum.

  Momentum is carried across collections (one continuous run), so phases after the first do not
  reset the optimizer. The first phase runs half a cycle (lr_1 down to lr_2); each later one runs
  the second half of a cycle and the first half of the next.
  """
  c = b.steps(b.fge_cycle_epochs)
  plan = [_finetune(b, [0])]
  for j in range(b.num_members - 1):
    first = j == 0
    lr = schedules.triangular_cycle(b.fge_lr_1, b.fge_lr_2, c, offset_steps=0 if first else c // 2)
    plan.append(Phase(f"fge_cycle_{j + 1}", (Start("member", j),), (lr,),
                      c // 2 if first else c, reset_optimizer=first))
  return plan


METHODS: dict[str, Callable[[Budget], list[Phase]]] = {
    "local_de": local_de,
    "global_de": global_de,
    "sse": sse,
    "starsse": starsse,
    "fge": fge,
}


def pretrain_plan(num_checkpoints: int, steps_per_epoch: int, epochs: float,
                  lr: float) -> list[Phase]:
  """Independent pre-training runs from fresh initialisations, stacked into one phase."""
  n = max(1, int(round(epochs * steps_per_epoch)))
  starts = tuple(Start("init", k) for k in range(num_checkpoints))
  return [Phase("pretrain", starts, (schedules.cosine_cycle(lr, n),) * num_checkpoints, n)]


def build_plan(method: str, budget: Budget) -> list[Phase]:
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; choose one of {sorted(METHODS)}.")
  return METHODS[method](budget)


def checkpoints_needed(method: str, num_members: int) -> int:
  """How many pre-trained checkpoints a method reads."""
  return num_members if method == "global_de" else 1
