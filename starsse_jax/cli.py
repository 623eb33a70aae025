"""What the command lines share: one-line errors with exit status 2, flag parsing that reports
ml_collections' nearest-name suggestion, and a clean exit on a stop request.

A bad input (a config value, a flag, a data set, a weight file, a workdir) stops a command before
any compute with exit status 2 and one line on stderr, ``error: <what> ... <how to fix it>``;
``STARSSE_JAX_TRACEBACK=1`` shows the traceback instead.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

from absl import flags

from starsse_jax import config_docs, configs, report, resume, train

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


def stopped_cleanly(stopped: resume.Interrupted) -> None:
  """Prints why the run stopped; further signals are ignored while the process exits (the
  progress is saved: a repeated SIGTERM must not turn a clean exit into a killed one)."""
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)
  print(f"\n{stopped}", flush=True)


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
                f"{suggestion.group(0) if suggestion else 'See --help for the fields.'}")
    error = error.__cause__ or error.__context__
  return None


def _with_config_resolved(argv: list[str]) -> list[str]:
  """``--config=NAME`` names a shipped config (``starsse``, ``paper/byol_sun397:sse``) as well as a
  file; the name becomes the file's path before absl reads it."""
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith("--config="):
      out[i] = "--config=" + configs.resolve(a[len("--config="):])
    elif a == "--config" and i + 1 < len(out):
      out[i + 1] = configs.resolve(out[i + 1])
  return out


def print_help(doc: str, module) -> None:
  """``--help``: the command's own text, its flags, then every config field with its default and
  documentation (``config_docs``)."""
  print(doc.strip())
  print("\nflags:")
  for flag in flags.FLAGS.get_flags_for_module(module) if module else ():
    print(f"  --{flag.name}: {flag.help}" + (f" (default {flag.default!r})" if flag.default else ""))
  print("\nshipped configs (--config=NAME[:ARG], or a path to a config file):\n  "
        + "\n  ".join(configs.names()))
  print("\nconfig fields (--config.FIELD=VALUE; defaults of base_config):")
  for field in config_docs.fields():
    print(f"  {field.name} = {field.default!r}\n      {field.doc}")


def parse_flags(argv: list[str], doc: str = "", module=None) -> list[str]:
  """absl's flag parsing, with every error as one line (``fail``); ``--help``/``-h`` prints the
  config fields too."""
  if any(a in ("--help", "-h", "-help", "--helpshort") for a in argv[1:]):
    print_help(doc, module)
    sys.exit(0)
  try:
    argv = _with_config_resolved(argv)
  except ValueError as e:
    fail(str(e), e)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --helpfull)", e)
  except (KeyError, AttributeError) as e:
    fail(_typo(e, argv) or f"invalid flags: {e}", e)
  except (ValueError, OSError, TypeError) as e:
    fail(f"invalid flags: {e}", e)


def fail_input(error: BaseException):
  """``fail`` for one of ``INPUT_ERRORS``: this library's own error classes are named, since
  their names say what failed (``WeightsError``, ``CheckpointMismatchError``, ...)."""
  ours = type(error).__module__.startswith("starsse_jax")
  fail(f"{type(error).__name__}: {error}" if ours else str(error), error)


def start(argv: list[str], config_flag) -> Any:
  """What every command does first: refuse stray arguments, quiet the logs, read the config file
  (its errors surface when it is first used)."""
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}; config fields are set as --config.FIELD=VALUE.")
  report.quiet_cli_logging()
  try:
    return config_flag.value
  except (OSError, ValueError, SyntaxError) as e:
    fail(f"--config: {e}", e)
