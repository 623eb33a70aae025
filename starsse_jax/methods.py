"""Methods as plans: where each member starts and which schedule it follows.

A plan is a list of phases. Every phase trains its members together in one jitted step and
appends them, in order, to the ensemble. A member starts from a fresh initialisation (pre-training),
from pre-trained checkpoint ``k`` with a new seeded head, or from ensemble member ``j``
(weights, BatchNorm statistics and head; optimizer state too unless the phase resets it).

Notation: ``E`` = fine-tuning epochs, ``lr`` = its peak learning rate, ``K`` = members.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import optax

from starsse_jax import schedules


@dataclasses.dataclass(frozen=True)
class Start:
  """Where one member of a phase starts: ``kind`` is 'init', 'pretrained' or 'member'."""
  kind: str
  index: int


@dataclasses.dataclass(frozen=True)
class Averaging:
  """A running mean of each member's weights (SWA), collected after step ``start_step + j *
  every_steps`` for j = 1, 2, ...; at the end of the phase the members *are* their averages."""
  start_step: int
  every_steps: int

  def table(self, num_steps: int) -> np.ndarray:
    """``[steps]``: 1 where the weights after that step are collected."""
    done = np.arange(1, num_steps + 1) - self.start_step
    return ((done > 0) & (done % self.every_steps == 0)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  starts: tuple[Start, ...]
  schedules: tuple[optax.Schedule, ...]
  num_steps: int
  reset_optimizer: bool = True
  average: Averaging | None = None

  @property
  def num_members(self) -> int:
    return len(self.starts)


# Settings a method reads from ``config.finetune`` besides the generic ones. Their defaults are the
# config's (``configlib.base_config``), stated nowhere else: a hand-built Budget names the ones its
# method reads, and a plan stops with a message naming any that is missing.
METHOD_FIELDS = ("lr_ratio", "cycle_ratio", "fge_cycle_epochs", "fge_lr_1", "fge_lr_2",
                 "swa_epochs", "swa_lr", "swa_lr_min", "swa_schedule", "swa_start",
                 "swa_collect_every")


@dataclasses.dataclass(frozen=True)
class Budget:
  """What a plan needs to know about the fine-tuning run (steps, not epochs). The method's own
  settings (``METHOD_FIELDS``) are None unless given; ``from_config`` gives them all."""
  num_members: int
  steps_per_epoch: int
  epochs: float
  lr: float
  warmup_epochs: float = 0.0  # the first fine-tuning: linear warm-up from warmup_lr, then cosine
  warmup_lr: float = 0.0
  per_epoch: bool = False  # learning rates change once per epoch (the official Swin-T code)
  lr_ratio: float | None = None
  cycle_ratio: float | None = None
  fge_cycle_epochs: int | None = None
  fge_lr_1: float | None = None
  fge_lr_2: float | None = None
  swa_epochs: float | None = None
  swa_lr: float | None = None
  swa_lr_min: float | None = None
  swa_schedule: str | None = None
  swa_start: float | None = None  # epochs into the SWA phase before collecting starts
  swa_collect_every: float | None = None  # epochs

  @classmethod
  def from_config(cls, section, num_members: int, steps_per_epoch: int) -> "Budget":
    """The budget of a training section (``config.finetune``) for ``num_members`` members."""
    return cls(num_members=num_members, steps_per_epoch=steps_per_epoch, epochs=section.epochs,
               lr=section.lr, warmup_epochs=section.warmup_epochs, warmup_lr=section.warmup_lr,
               per_epoch=section.schedule_unit == "epoch",
               **{name: section[name] for name in METHOD_FIELDS})

  def need(self, name: str):
    """The method setting ``name``; a ValueError when this budget was built without it."""
    value = getattr(self, name)
    if value is None:
      raise ValueError(f"This plan reads finetune.{name}, which the Budget was built without: "
                       f"give {name}= (Budget.from_config gives every setting).")
    return value

  def steps(self, epochs: float) -> int:
    return max(1, int(round(epochs * self.steps_per_epoch)))

  def first_schedule(self, num_steps: int) -> optax.Schedule:
    """The first fine-tuning's schedule (warm-up if any, then cosine from ``lr``)."""
    warmup = int(round(self.warmup_epochs * self.steps_per_epoch)) if self.warmup_epochs else 0
    if not warmup and not self.per_epoch:
      return schedules.cosine_cycle(self.lr, num_steps)
    return schedules.warmup_cosine(self.lr, num_steps, warmup, self.warmup_lr, self._unit())

  def cycle_schedule(self, peak: float, num_steps: int) -> optax.Schedule:
    """A cycle's schedule: cosine from ``peak``, never a warm-up."""
    if not self.per_epoch:
      return schedules.cosine_cycle(peak, num_steps)
    return schedules.warmup_cosine(peak, num_steps, 0, 0.0, self._unit())

  def _unit(self) -> int:
    return self.steps_per_epoch if self.per_epoch else 1


def _finetune(b: Budget, sources) -> Phase:
  """Ordinary fine-tuning of one member per source checkpoint: cosine from lr over E epochs."""
  n = b.steps(b.epochs)
  starts = tuple(Start("pretrained", s) for s in sources)
  return Phase("finetune", starts, (b.first_schedule(n),) * len(starts), n)


def _cycle(b: Budget, name: str, sources) -> Phase:
  """One SSE/StarSSE cycle: peak lr_ratio x lr, cycle_ratio x E epochs, optimizer reset."""
  n = b.steps(b.need("cycle_ratio") * b.epochs)
  starts = tuple(Start("member", s) for s in sources)
  lr = b.cycle_schedule(b.need("lr_ratio") * b.lr, n)
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
  c = b.steps(b.need("fge_cycle_epochs"))
  lr_1, lr_2 = b.need("fge_lr_1"), b.need("fge_lr_2")
  plan = [_finetune(b, [0])]
  for j in range(b.num_members - 1):
    first = j == 0
    lr = schedules.triangular_cycle(lr_1, lr_2, c, offset_steps=0 if first else c // 2)
    plan.append(Phase(f"fge_cycle_{j + 1}", (Start("member", j),), (lr,),
                      c // 2 if first else c, reset_optimizer=first))
  return plan


def swa(b: Budget) -> list[Phase]:
  """SWA (Izmailov et al. 2018) from the fine-tuned model: K-1 runs from member 1 at a constant
  ``swa_lr`` (or a sawtooth ``swa_lr -> swa_lr_min`` per collection period, collected at its
  end), each averaging its weights every ``swa_collect_every`` epochs after ``swa_start``; BatchNorm
  statistics are recomputed for the averages. K = 2 is SWA alone; K > 2 gives K-1 SWA solutions
  branching from member 1 (SWA of StarSSE-style branches), trained together.
  """
  epochs, collect_every, swa_start = (b.need("swa_epochs"), b.need("swa_collect_every"),
                                      b.need("swa_start"))
  n, every = b.steps(epochs), b.steps(collect_every)
  start = int(round(swa_start * b.steps_per_epoch))
  schedule = b.need("swa_schedule")
  if schedule == "cyclic":  # collections fall at the ends of the sawtooth's periods
    start = -(-start // every) * every
    lr = schedules.sawtooth(b.need("swa_lr"), b.need("swa_lr_min"), every)
  elif schedule == "constant":
    lr = schedules.constant(b.need("swa_lr"))
  else:
    raise ValueError(f"Unknown SWA schedule {schedule!r}; use 'constant' or 'cyclic'.")
  if start + every > n:
    raise ValueError(f"SWA collects nothing: the first collection (epoch {swa_start:g} + "
                     f"{collect_every:g}) falls after the phase's {epochs:g} epochs; "
                     "lower swa_start or swa_collect_every, or raise swa_epochs.")
  plan = [_finetune(b, [0])]
  if b.num_members > 1:
    plan.append(Phase("swa", (Start("member", 0),) * (b.num_members - 1),
                      (lr,) * (b.num_members - 1), n, average=Averaging(start, every)))
  return plan


def mc_dropout(b: Budget) -> list[Phase]:
  """MC-dropout: K members fine-tuned with dropout from the same checkpoint (as Local DE); the
  ensemble is each member's ``eval.mc_samples`` stochastic test passes (``model.dropout_rate``).
  The plan is Local DE's; dropout lives in the model and the evaluation."""
  return local_de(b)


def _positive(*names) -> Callable[[Any], list[tuple[bool, str]]]:
  """The check that a method's settings ``names`` (in ``config.finetune``) are positive."""
  return lambda config: [(config.finetune[name] > 0,
                          f"finetune.{name}={config.finetune[name]!r} must be positive.")
                         for name in names]


def _check_swa(config) -> list[tuple[bool, str]]:
  ft = config.finetune
  return [
      (ft.swa_schedule in ("constant", "cyclic"),
       f"finetune.swa_schedule={ft.swa_schedule!r}; use 'constant' or 'cyclic'."),
      *_positive("swa_epochs", "swa_lr", "swa_collect_every")(config),
      (ft.swa_start >= 0 and ft.swa_lr_min >= 0,
       "finetune.swa_start and finetune.swa_lr_min must not be negative."),
      (ft.swa_start + ft.swa_collect_every <= ft.swa_epochs,
       f"finetune.swa_start + swa_collect_every = {ft.swa_start + ft.swa_collect_every:g} epochs "
       f"is past the SWA phase's swa_epochs={ft.swa_epochs:g}: nothing would be averaged.")]


def _check_mc_dropout(config) -> list[tuple[bool, str]]:
  from starsse_jax import models  # pylint: disable=g-import-not-at-top
  # A model of the user's own says itself whether it has dropout (checked when it is built).
  dropout = (config.model.dropout_rate > 0 or config.model.block_dropout_rate > 0
             or not models.is_builtin(config.model.name))
  return [(dropout, "method='mc_dropout' needs dropout: set model.dropout_rate (e.g. 0.2) and/or "
           "model.block_dropout_rate."),
          (config.eval.mc_samples >= 2, f"method='mc_dropout' needs eval.mc_samples >= 2 "
           f"stochastic passes, got {config.eval.mc_samples}.")]


def _check_global_de(config) -> list[tuple[bool, str]]:
  k = config.num_members
  return [(bool(config.pretrain.checkpoint) or config.pretrain.num_checkpoints >= k,
           f"method='global_de' with num_members={k} needs pretrain.num_checkpoints >= {k} (one "
           f"pre-trained checkpoint per member), got {config.pretrain.num_checkpoints}.")]


@dataclasses.dataclass(frozen=True)
class Method:
  """A method, whole: its plan, the pre-trained checkpoints it reads, whether a Local DE of its
  training compute is a fair baseline, and the checks of its own config fields (``fields``, in
  ``config.finetune``; their defaults are ``configlib.base_config``'s)."""
  name: str
  plan: Callable[[Budget], list[Phase]]
  fields: tuple[str, ...] = ()
  checkpoint_per_member: bool = False  # member k starts from pre-trained checkpoint k
  # Later members start from the fine-tuned member 0: a Local DE sharing member 0 and costing
  # what the method costs is its baseline (eval.baseline='local_de').
  from_first_model: bool = False
  min_members: int = 1
  needs_dropout: bool = False  # the model must have dropout (checked when it is built)
  check: Callable[[Any], list[tuple[bool, str]]] | None = None

  def checkpoints_needed(self, num_members: int) -> int:
    return num_members if self.checkpoint_per_member else 1

  def problems(self, config) -> list[str]:
    """What is wrong with ``config`` for this method (empty when nothing is)."""
    found = [] if config.num_members >= self.min_members else [
        f"method={self.name!r} needs num_members >= {self.min_members}: the fine-tuned model "
        "and at least one member from it."]
    if config.eval.baseline and not (self.from_first_model and config.num_members >= 2):
      found.append(f"eval.baseline={config.eval.baseline!r} compares a method that starts from "
                   "one fine-tuned model (starsse, sse, fge, swa; num_members >= 2) with Local "
                   f"DE; method={self.name!r} with num_members={config.num_members} has none: "
                   "set eval.baseline=''.")
    if self.check is not None:
      found += [message for ok, message in self.check(config) if not ok]
    return found


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("local_de", local_de),
    Method("global_de", global_de, checkpoint_per_member=True, check=_check_global_de),
    Method("sse", sse, ("lr_ratio", "cycle_ratio"), from_first_model=True, check=_positive("lr_ratio", "cycle_ratio")),
    Method("starsse", starsse, ("lr_ratio", "cycle_ratio"), from_first_model=True,
           check=_positive("lr_ratio", "cycle_ratio")),
    Method("fge", fge, ("fge_cycle_epochs", "fge_lr_1", "fge_lr_2"), from_first_model=True,
           check=_positive("fge_cycle_epochs", "fge_lr_1", "fge_lr_2")),
    Method("swa", swa, ("swa_epochs", "swa_lr", "swa_lr_min", "swa_schedule", "swa_start",
                        "swa_collect_every"), from_first_model=True, min_members=2,
           check=_check_swa),
    Method("mc_dropout", mc_dropout, needs_dropout=True, check=_check_mc_dropout),
)}


BASELINES = ("", "local_de")
BASELINE_PHASE = "local_de_baseline"


def with_local_de_baseline(plan: list[Phase]) -> list[Phase]:
  """``plan`` followed by the other members of a Local DE that costs what ``plan`` costs, so that
  one run compares a method with Local DE on the same data, checkpoint and training compute.

  The plan's first model (member 0: ordinary fine-tuning from pre-trained checkpoint 0) is also
  the Local DE's first member; the appended phase fine-tunes more members from the same checkpoint
  with the same schedule (new heads, data orders and augmentation). The Local DE has
  ``round(plan's member-steps / first phase's steps)`` members (at least 2): K for StarSSE and
  SSE at cycle_ratio 1, 1 + (K-1) x cycle_ratio in general. The method's members keep their ids.
  """
  first = plan[0]
  if first.starts != (Start("pretrained", 0),) or len(plan) < 2:
    raise ValueError("A Local DE baseline needs a method whose first phase fine-tunes one model "
                     "from the pre-trained checkpoint and whose later phases start from it "
                     "(starsse, sse, fge, swa); for local_de, global_de and mc_dropout set "
                     "eval.baseline=''.")
  member_steps = sum(p.num_members * p.num_steps for p in plan)
  extra = max(2, int(round(member_steps / first.num_steps))) - 1
  return plan + [Phase(BASELINE_PHASE, (first.starts[0],) * extra, first.schedules * extra,
                       first.num_steps)]


def pretrain_plan(num_checkpoints: int, steps_per_epoch: int, epochs: float, lr: float,
                  warmup_epochs: float = 0.0, warmup_lr: float = 0.0,
                  per_epoch: bool = False) -> list[Phase]:
  """Independent pre-training runs from fresh initialisations, stacked into one phase."""
  b = Budget(num_checkpoints, steps_per_epoch, epochs, lr, warmup_epochs=warmup_epochs,
             warmup_lr=warmup_lr, per_epoch=per_epoch)
  n = b.steps(epochs)
  starts = tuple(Start("init", k) for k in range(num_checkpoints))
  return [Phase("pretrain", starts, (b.first_schedule(n),) * num_checkpoints, n)]


@dataclasses.dataclass(frozen=True)
class SweepPlan:
  """The phases of a whole sweep and, per grid cell, which plan members form its ensemble.

  ``ensembles[(method, lr_ratio, cycle_ratio)]`` lists member ids (positions in plan order);
  Local and Global DE have ``lr_ratio = cycle_ratio = None``; ``local_de_matched`` and
  ``global_de_matched`` at ``cycle_ratio = c`` are their first ``matched_members(K, c)`` members:
  the Local / Global DE of the training compute of SSE and StarSSE at cycle ratio c.
  """
  phases: list[Phase]
  ensembles: dict[tuple[str, float | None, float | None], list[int]]


def matched_members(num_members: int, cycle_ratio: float) -> int:
  """Members of a Deep Ensemble that cost what SSE or StarSSE of ``num_members`` members at
  ``cycle_ratio`` cost: 1 + (K-1) x cycle_ratio first-model trainings, rounded, at least 2."""
  return max(2, int(round(1 + (num_members - 1) * cycle_ratio)))


def sweep_plan(b: Budget, lr_ratios, cycle_ratios, local_checkpoint: int = 0,
               sse: bool = True) -> SweepPlan:
  """Local DE, Global DE, and SSE and StarSSE at every (lr_ratio, cycle_ratio), as one plan.

  Phase 1 fine-tunes K members from checkpoint ``local_checkpoint`` (Local DE; its member 0 is
  also the first model of every SSE and StarSSE ensemble, as in the paper) and K members from
  checkpoints 0..K-1 (Global DE). Per cycle ratio, one phase holds the K-1 StarSSE branches of
  every lr ratio (all start from member 0; each follows its own peak learning rate), and K-1
  phases advance one SSE chain per lr ratio by one cycle (``sse`` False leaves SSE out: a scan of
  StarSSE's settings costs a third less). Members of a phase share one step, so the grid costs
  ``len(cycle_ratios) * K`` phases, not one run per cell.
  """
  k, lr = b.num_members, b.lr
  n = b.steps(b.epochs)
  first = [Start("pretrained", local_checkpoint)] * k + [Start("pretrained", i) for i in range(k)]
  phases = [Phase("finetune", tuple(first), (b.first_schedule(n),) * 2 * k, n)]
  ensembles = {("local_de", None, None): list(range(k)),
               ("global_de", None, None): list(range(k, 2 * k))}
  next_id = 2 * k
  for c in cycle_ratios:
    m = matched_members(k, c)
    if m <= k:  # (above K, the Deep Ensembles trained here are too small to match)
      ensembles[("local_de_matched", None, c)] = list(range(m))
      ensembles[("global_de_matched", None, c)] = list(range(k, k + m))
  for c in cycle_ratios:
    n = b.steps(c * b.epochs)
    peak = {r: b.cycle_schedule(r * lr, n) for r in lr_ratios}
    branches = [(r, j) for r in lr_ratios for j in range(k - 1)]
    if branches:
      phases.append(Phase(f"starsse_c{c:g}", tuple(Start("member", 0) for _ in branches),
                          tuple(peak[r] for r, _ in branches), n))
    for r in lr_ratios:
      ensembles[("starsse", r, c)] = [0] + [next_id + i for i, (rr, _) in enumerate(branches)
                                            if rr == r]
    next_id += len(branches)
    if not sse:
      continue
    chains = {r: [0] for r in lr_ratios}
    for j in range(k - 1):
      phases.append(Phase(f"sse_c{c:g}_cycle{j + 1}",
                          tuple(Start("member", chains[r][-1]) for r in lr_ratios),
                          tuple(peak[r] for r in lr_ratios), n))
      for i, r in enumerate(lr_ratios):
        chains[r].append(next_id + i)
      next_id += len(lr_ratios)
    for r in lr_ratios:
      ensembles[("sse", r, c)] = chains[r]
  return SweepPlan(phases, ensembles)


def get(method: str) -> Method:
  """The record of ``method``; a ValueError naming the known ones."""
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; choose one of {sorted(METHODS)}.")
  return METHODS[method]


def build_plan(method: str, budget: Budget) -> list[Phase]:
  return get(method).plan(budget)


def checkpoints_needed(method: str, num_members: int) -> int:
  """How many pre-trained checkpoints a method reads."""
  return get(method).checkpoints_needed(num_members)
