"""Command line: ``python -m starsse_jax.main --config=configs/starsse.py [--workdir=DIR]``.

Any config field can be overridden, e.g. ``--config.num_members=3 --config.finetune.lr_ratio=0.25``.
"""
import jax
from absl import app, flags
from ml_collections import config_flags

from starsse_jax import api, distributed, report, resume

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default",
                               "Where checkpoints, results.json and plots go.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  report.quiet_cli_logging()
  try:
    results = api.run(_CONFIG.value, _WORKDIR.value)
  except resume.Interrupted as stopped:
    print(f"\n{stopped}")
    return 0
  if not distributed.is_writer():
    print(f"\nProcess {jax.process_index()} done; process 0 writes {_WORKDIR.value}/results.json.")
    return 0
  print(f"\nTest metrics on the target task ({_WORKDIR.value}/results.json):\n")
  print(report.table(results))
  print(f"\ntiming (s): {results['timing']}")


if __name__ == "__main__":
  app.run(main)
