"""Command line: ``python -m starsse_jax.main --config=configs/starsse.py [--workdir=DIR]``.

Any config field can be overridden, e.g. ``--config.num_members=3 --config.finetune.lr_ratio=0.25``.

A bad input (a config value, a flag, a data set, a weight file, a workdir) stops the run before
any compute with exit status 2 and one line on stderr, ``error: <what> ... <how to fix it>``;
set ``STARSSE_JAX_TRACEBACK=1`` to see the traceback instead.
"""
import os
import re
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from starsse_jax import api, distributed, report, resume, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default",
                               "Where checkpoints, results.json and plots go.")
flags.mark_flags_as_required(["config"])

TRACEBACK_ENV = "STARSSE_JAX_TRACEBACK"
# What a user's input can cause; the library raises these with messages that name the input and
# the fix. Anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, OSError, train.NonFiniteLossError)
EXIT_BAD_INPUT = 2


def one_line(text: str) -> str:
  return " ".join(str(text).split())


def fail(message: str, error: BaseException | None = None):
  """Stops with exit status 2 and ``error: message`` on stderr (the traceback on request)."""
  if error is not None and os.environ.get(TRACEBACK_ENV):
    raise error
  print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(EXIT_BAD_INPUT)


def _typo(error: BaseException, argv: list[str]) -> str | None:
  """ml_collections' message for an override of a field that does not exist: its nearest-name
  suggestion, with the flag that named the field."""
  while error is not None:
    text = str(error.args[0]) if error.args else ""
    if isinstance(error, (KeyError, AttributeError)) and text:
      field = re.match(r"""['"]*([A-Za-z_0-9]+)""", text)
      suggestion = re.search(r"Did you mean .*\?", text)
      if field:
        flag = next((a for a in argv if re.search(rf"\.{field.group(1)}(=|$)", a)), "--config")
        return (f"{flag}: the config has no field {field.group(1)!r}. "
                f"{suggestion.group(0) if suggestion else 'See configs/ for the fields.'}")
    error = error.__cause__ or error.__context__
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every error as one line (``fail``)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --helpfull)", e)
  except (KeyError, AttributeError) as e:
    fail(_typo(e, argv) or f"invalid flags: {e}", e)
  except (ValueError, OSError, TypeError) as e:
    fail(f"invalid flags: {e}", e)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}; config fields are set as --config.FIELD=VALUE.")
  report.quiet_cli_logging()
  try:
    config = _CONFIG.value
  except (OSError, ValueError, SyntaxError) as e:  # the config file is read when first used
    fail(f"--config: {e}", e)
  try:
    results = api.run(config, _WORKDIR.value)
  except resume.Interrupted as stopped:
    print(f"\n{stopped}")
    return 0
  except INPUT_ERRORS as e:
    ours = type(e).__module__.startswith("starsse_jax")  # its class name says what failed
    fail(f"{type(e).__name__}: {e}" if ours else str(e), e)
  if not distributed.is_writer():
    print(f"\nProcess {jax.process_index()} done; process 0 writes {_WORKDIR.value}/results.json.")
    return 0
  print(f"\nTest metrics on the target task ({_WORKDIR.value}/results.json):\n")
  print(report.table(results))
  print(f"\ntiming (s): {results['timing']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
