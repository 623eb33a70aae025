"""The paper's sweep: SSE and StarSSE over lr_ratio x cycle_ratio against Local / Global DE.

  python projects/starsse_paper/sweep.py --config=configs/sweep.py --workdir=runs/sweep
  # the paper's setting, where CIFAR-100 is prepared for TFDS and a GPU/TPU is present:
  python projects/starsse_paper/sweep.py --config=configs/sweep_cifar100_resnet50.py --workdir=runs/sweep100

The grid runs as ``starsse_jax.sweep.run_sweep`` runs any grid of plans; this project adds the
paper's summary (``claims``: best setting per method, basin barriers, the paper's claims with
paired intervals) and figures (``plots``). Writes sweep.csv, basin.csv, summary.md and
sweep_*.png to the workdir and prints the summary.
Interrupting (Ctrl-C / SIGTERM) saves the progress; rerunning the same command resumes.
"""
import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from projects.starsse_paper import claims  # noqa: E402
from starsse_jax import cli, resume, sweep  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a sweep config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/sweep", "Where checkpoints, CSVs and plots go.")
flags.mark_flags_as_required(["config"])


def main(argv):
  config = cli.start(argv, _CONFIG)
  if "sweep" not in config:
    cli.fail("This config has no 'sweep' section; start from configs/sweep.py.")
  try:
    with resume.StopRequest() as stop:
      command = " ".join(shlex.quote(a) for a in
                         ["python", "projects/starsse_paper/sweep.py"] + sys.argv[1:])
      out = sweep.run_sweep(config, _WORKDIR.value, stop=stop, command=command,
                            outputs=claims.Paper())
  except resume.Interrupted as stopped:
    cli.stopped_cleanly(stopped)
    return 0
  except cli.INPUT_ERRORS as e:
    cli.fail_input(e)
  print(f"\n{out['summary']}\nwall time: {out['timing']['total_s']:.0f} s; "
        f"outputs in {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, __doc__, sys.modules[__name__]))
