"""Command line: ``starsse-jax --config=NAME [--workdir=DIR]`` (or ``python -m starsse_jax.main``).

NAME is a shipped config (``starsse``, ``paper/supervised_cifar100:starsse``; ``--help`` lists
them) or the path of a config file. Any config field can be overridden, e.g. ``--config.num_members=3 --config.finetune.lr_ratio=0.25``.
A bad input stops with exit status 2 and one line on stderr (``starsse_jax.cli``).
"""
import os
import shlex
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from starsse_jax import api, cli, distributed, report, resume
from starsse_jax.cli import INPUT_ERRORS, fail_input, parse_flags, stopped_cleanly

_CONFIG = config_flags.DEFINE_config_file("config", None, "A shipped config's name or a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default",
                               "Where checkpoints, results.json and plots go.")
flags.mark_flags_as_required(["config"])


def _command_line() -> str:
  """How this process was started, as the report shows it."""
  prog = (["starsse-jax"] if os.path.basename(sys.argv[0]).startswith("starsse-jax")
          else ["python", "-m", "starsse_jax.main"])
  return " ".join(shlex.quote(a) for a in prog + sys.argv[1:])


def main(argv):
  config = cli.start(argv, _CONFIG)
  try:
    results = api.run(config, _WORKDIR.value,
                      command=_command_line())
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


def run_cli():
  """The ``starsse-jax`` console script."""
  module = sys.modules[__name__]
  app.run(main, flags_parser=lambda argv: parse_flags(argv, __doc__, module))


if __name__ == "__main__":
  run_cli()
