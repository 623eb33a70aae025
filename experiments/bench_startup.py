"""Start-up time of the command line: process start to the first training step.

  python experiments/bench_startup.py [--repeats=3] [--repo=.]

Starts ``python -m starsse_jax.main --config=configs/tiny.py`` in a fresh workdir, reads its log as it is
written and stops the process at the first progress line of the first phase; the time from
``Popen`` to the line announcing the phase (imports, data, model, writer set-up: what a user waits
for before any compute) and to the first progress line (plus the first step's compilation) are
printed for each repeat, with the median. ``--repo`` runs another checkout's code (to measure
before and after a change in one run, alternating, on one machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one(repo: str) -> tuple[float, float]:
  with tempfile.TemporaryDirectory() as workdir:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = repo
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "starsse_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}",
         "--config.log_every_steps=1"], cwd=repo, env=env, stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL, text=True)
    phase = first = None
    for line in proc.stderr:
      if phase is None and "Phase 1/" in line:
        phase = time.perf_counter() - start
      if phase is not None and " step 1/" in line:
        first = time.perf_counter() - start
        break
    proc.kill()
    proc.wait()
    if first is None:
      raise RuntimeError(f"{repo}: the run ended before its first step")
    return phase, first


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--repo", action="append", default=None,
                      help="checkouts to compare (default: this one); given twice, alternated")
  args = parser.parse_args()
  repos = args.repo or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
  times = {r: [] for r in repos}
  for _ in range(args.repeats):
    for repo in repos:  # alternating: a drifting machine speed hits every checkout alike
      times[repo].append(one(repo))
      print(f"{repo}: phase announced {times[repo][-1][0]:.1f} s, first step logged "
            f"{times[repo][-1][1]:.1f} s", flush=True)
  print("\n| checkout | to the phase (median s) | to the first step (median s) |\n|---|---|---|")
  for repo, values in times.items():
    print(f"| {repo} | {statistics.median(v[0] for v in values):.1f} | "
          f"{statistics.median(v[1] for v in values):.1f} |")


if __name__ == "__main__":
  main()
