"""Command line: ``python -m starsse_jax.main --config=configs/starsse.py [--workdir=DIR]``.

Any config field can be overridden, e.g. ``--config.num_members=3 --config.finetune.lr_ratio=0.25``.
A bad input stops with exit status 2 and one line on stderr (``starsse_jax.cli``).
"""
import shlex
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from starsse_jax import api, cli, distributed, report, resume
from starsse_jax.cli import INPUT_ERRORS, fail_input, parse_flags, stopped_cleanly

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default",
                               "Where checkpoints, results.json and plots go.")
flags.mark_flags_as_required(["config"])


def main(argv):
  config = cli.start(argv, _CONFIG)
  try:
    results = api.run(config, _WORKDIR.value,
                      command=" ".join(shlex.quote(a) for a in ["python", "-m", "starsse_jax.main"]
                                       + sys.argv[1:]))
  except resume.Interrupted as stopped:
    stopped_cleanly(stopped)
    return 0
  except INPUT_ERRORS as e:
    fail_input(e)
  if not distributed.is_writer():
    print(f"\nProcess {jax.process_index()} done; process 0 writes {_WORKDIR.value}/results.json.")
    return 0
  print(f"\nTest metrics on the target task ({_WORKDIR.value}/results.json):\n")
  print(report.table(results))
  print(f"\ntiming (s): {results['timing']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
