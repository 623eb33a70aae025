"""Every config field with its default and its documentation, read from ``configlib``'s source.

The comment beside a field's assignment in ``base_config`` (or ``recipe``, for the fields that
``pretrain`` and ``finetune`` both have), or else the comment lines directly above it, is that
field's documentation: the config defines itself once, and ``--help``, the generated
configuration reference (``docs/configuration.md``) and the test that refuses an undocumented
field all read it from there.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize

from starsse_jax import configlib

# The sections whose fields recipe defines (``section.X``).
RECIPE_SECTIONS = ("pretrain", "finetune")


@dataclasses.dataclass(frozen=True)
class Field:
  name: str  # dotted, e.g. 'finetune.lr_ratio'
  default: object
  doc: str  # '' when the source has no comment for it


def _comments(source: str) -> dict[int, str]:
  """Line number (1-based) -> the text of the comment on that line."""
  found = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      found[tok.start[0]] = tok.string.lstrip("#").strip()
  return found


def _assigned_docs(function) -> dict[str, str]:
  """Attribute path below the assigned name (``c.data.flip`` -> ``data.flip``) -> documentation."""
  source = textwrap.dedent(inspect.getsource(function))
  lines = source.splitlines()
  comments = _comments(source)
  docs = {}
  for node in ast.walk(ast.parse(source)):
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
      continue
    parts, target = [], node.targets[0]
    while isinstance(target, ast.Attribute):
      parts.insert(0, target.attr)
      target = target.value
    if not parts or not isinstance(target, ast.Name):
      continue
    doc = comments.get(node.lineno, "")
    if not doc:  # the block of comment-only lines directly above
      above, line = [], node.lineno - 1
      while line >= 1 and lines[line - 1].strip().startswith("#"):
        above.insert(0, comments[line])
        line -= 1
      doc = " ".join(above)
    docs[".".join(parts)] = doc
  return docs


def _flatten(config, prefix: str = "") -> dict[str, object]:
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def fields() -> list[Field]:
  """Every leaf of ``configlib.base_config()`` (sorted by name) with its documentation."""
  own = _assigned_docs(configlib.base_config)
  recipe = _assigned_docs(configlib.recipe)
  result = []
  for name, default in _flatten(configlib.base_config()).items():
    section, _, leaf = name.rpartition(".")
    doc = own.get(name, "")
    if not doc and section in RECIPE_SECTIONS:
      doc = recipe.get(leaf, "")
    result.append(Field(name, default, doc))
  return result


def undocumented() -> list[str]:
  return [f.name for f in fields() if not f.doc]


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def reference_markdown() -> str:
  """The configuration reference page: one table per section."""
  out = ["# Configuration reference", "",
         "Generated from the comments in `starsse_jax/configlib.py` by "
         "`python -m starsse_jax.config_docs > docs/configuration.md` (a test checks that this page "
         "is current and that every field has documentation). Override any field on the command "
         "line as `--config.FIELD=VALUE`, e.g. `--config.finetune.lr_ratio=2`; `starsse-jax --help` "
         "prints the same list.", ""]
  section = None
  # Top-level fields first, then one table per section.
  for f in sorted(fields(), key=lambda f: ("." in f.name, f.name)):
    this = f.name.split(".")[0] if "." in f.name else "(top level)"
    if this != section:
      section = this
      out += ["", f"## {section}", "", "| field | default | what it does |", "|---|---|---|"]
    out.append(f"| `{f.name}` | `{_cell(repr(f.default))}` | {_cell(f.doc)} |")
  return "\n".join(out) + "\n"


if __name__ == "__main__":
  print(reference_markdown(), end="")
