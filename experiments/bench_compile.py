"""First-step (compile) time and steady speed of a phase against its number of members K.

  python experiments/bench_compile.py [--members=5,10,20] [--steps=25] [--modes=groups,one] \
      [--rounds=2]

Runs ``train.run_phase`` (the phase runner every method uses) for K members of the default
config's network on synthetic 28 px images in host memory, each K in a fresh process (nothing
compiled before, no persistent compilation cache). ``groups`` is the library's behaviour: above
10 unrolled members a phase runs as equal groups of at most 5, each a call of one compiled step
(``members.group_size``); ``one`` forces a single unrolled program for every K (the behaviour
before groups; for K <= 10 both are the same program, so their difference is the machine's noise).
Reported: the first step's time (compilation, mostly) and member-img/s over the remaining steps,
each the median of ``--rounds`` rounds; a round runs every (K, mode) once, modes alternating
within each K, so a drifting machine speed hits both alike. All rows come from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(k: int, mode: str, steps: int, batch: int, width: int = 0) -> dict:
  import types  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from starsse_jax import build, configlib, members, models, train  # pylint: disable=g-import-not-at-top
  from starsse_jax.sources.common import Split  # pylint: disable=g-import-not-at-top
  if mode == "one":
    members.MAX_ONE_PROGRAM = 10 ** 6
  config = configlib.base_config()
  if width:
    config.model.width = width
  rng = np.random.default_rng(0)
  split = Split(rng.integers(0, 256, (500, 28, 28, 1), dtype=np.uint8),
                rng.integers(0, 5, 500).astype(np.int32))
  model = models.build_model(config.model, 5)

  norm = types.SimpleNamespace(mean=np.array([0.5], np.float32), std=np.array([0.25], np.float32))
  trainer = build.make_trainer(config, model, norm, config.finetune)
  states = members.stack([trainer.init_variables(s, (28, 28, 1)) for s in range(k)])
  states["opt_state"] = jax.vmap(trainer.tx.init)(states["params"])
  table = np.full((steps, k), 0.01, np.float32)
  result = train.run_phase(trainer, states, np.arange(k), split, table, batch, "bench",
                           train.PhaseLoop(actions=train.Actions(log_every=10 ** 6)))
  steady = (result.seconds - result.first_step_seconds) / (steps - 1)
  return {"first_step_s": result.first_step_seconds, "member_img_s": k * batch / steady,
          "groups": -(-k // members.group_size(k, trainer.strategy)) if mode == "groups" else 1}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", default="5,10,20")
  parser.add_argument("--modes", default="groups,one")
  parser.add_argument("--steps", type=int, default=25)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--batch", type=int, default=50)
  parser.add_argument("--width", type=int, default=0, help="network width (0: the config's)")
  parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print("RESULT", json.dumps(one(int(args.worker[0]), args.worker[1], args.steps, args.batch,
                                      args.width)))
    return
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["PYTHONPATH"] = REPO
  runs = {}
  for _ in range(args.rounds):
    for k in map(int, args.members.split(",")):
      for mode in args.modes.split(","):
        run = subprocess.run([sys.executable, __file__, "--worker", str(k), mode,
                              f"--steps={args.steps}", f"--batch={args.batch}",
                              f"--width={args.width}"], cwd=REPO,
                             env=env, capture_output=True, text=True, check=False)
        if run.returncode:
          raise RuntimeError(run.stderr[-3000:])
        line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
        runs.setdefault((mode, k), []).append(json.loads(line[len("RESULT "):]))
        print(mode, k, runs[(mode, k)][-1], flush=True, file=sys.stderr)
  rows = [(mode, k, {key: statistics.median([r[key] for r in rs]) for key in rs[0]})
          for (mode, k), rs in sorted(runs.items())]
  print(f"| mode | K | programs per step | first step s | vs K = {rows[0][1]} | member-img/s |"
        "\n|---|---|---|---|---|---|")
  for mode, k, r in rows:
    base = next(r0 for m0, k0, r0 in rows if m0 == mode)
    print(f"| {mode} | {k} | {r['groups']:.0f} | {r['first_step_s']:.1f} | "
          f"{r['first_step_s'] / base['first_step_s']:.2f}x | {r['member_img_s']:.0f} |")


if __name__ == "__main__":
  main()
