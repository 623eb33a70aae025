"""The library's layout holds: no module reads another's private names, no function takes more
than eight parameters, a method's settings have one default (the config's), and loading a config
imports no JAX."""
import ast
import dataclasses
import glob
import os
import subprocess
import sys

import pytest

from starsse_jax import configlib, methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = sorted(glob.glob(os.path.join(ROOT, "starsse_jax", "**", "*.py"), recursive=True))
CALLERS = LIBRARY + sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")) +
                           glob.glob(os.path.join(ROOT, "projects", "**", "*.py"), recursive=True)
                           + glob.glob(os.path.join(ROOT, "tests", "*.py")))


def _imported_modules(tree) -> dict[str, str]:
  """Local name -> starsse_jax module, for every ``import``/``from ... import`` of one."""
  names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module == "starsse_jax" or node.module.startswith("starsse_jax.")):
      for alias in node.names:
        names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("starsse_jax"):
          names[alias.asname or alias.name.split(".")[0]] = alias.name
  return names


def _private_uses(path: str) -> list[str]:
  with open(path) as f:
    tree = ast.parse(f.read())
  modules = _imported_modules(tree)
  return [f"{os.path.relpath(path, ROOT)}:{node.lineno}: {node.value.id}.{node.attr}"
          for node in ast.walk(tree)
          if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in modules and node.attr.startswith("_")
          and not node.attr.startswith("__")]


def test_no_module_reads_another_modules_private_names():
  found = [use for path in CALLERS for use in _private_uses(path)]
  assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_private_name_check_finds_a_private_use(tmp_path):
  path = tmp_path / "caller.py"
  path.write_text("from starsse_jax import members\nmembers._secret()\nmembers.public()\n")
  assert _private_uses(str(path)) == [f"{os.path.relpath(str(path), ROOT)}:2: members._secret"]


def _over_eight(path: str) -> list[str]:
  with open(path) as f:
    tree = ast.parse(f.read())
  out = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      a = node.args
      params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs
                if p.arg not in ("self", "cls")]
      if len(params) > 8:
        out.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name} ({len(params)})")
  return out


# A drop-in for jax.lax.conv_general_dilated (flax calls it with lax's signature).
SIGNATURES_NOT_OURS = {"conv_general_dilated"}


def test_no_library_function_takes_more_than_eight_parameters():
  found = [f for path in LIBRARY for f in _over_eight(path)
           if f.split()[1] not in SIGNATURES_NOT_OURS]
  assert not found, "functions over 8 parameters:\n" + "\n".join(found)


def test_a_budget_states_no_method_default_of_its_own():
  """A method's settings default to the config's: a Budget field the config has either has no
  default (None: the plan asks for it) or the config's value."""
  finetune = configlib.base_config().finetune
  for field in dataclasses.fields(methods.Budget):
    if field.name in methods.METHOD_FIELDS:
      assert field.default is None, field.name
      assert field.name in finetune, field.name
    elif field.name in finetune and field.default is not dataclasses.MISSING:
      assert field.default == finetune[field.name], field.name
  # Every setting a method names is one the config defines.
  for method in methods.METHODS.values():
    assert set(method.fields) <= set(methods.METHOD_FIELDS), method.name


def test_a_budget_from_the_config_gives_every_method_its_settings():
  config = configlib.base_config()
  budget = methods.Budget.from_config(config.finetune, 5, 10)
  for name in methods.METHOD_FIELDS:
    assert getattr(budget, name) == config.finetune[name]
  for name in methods.METHODS:
    assert methods.build_plan(name, budget)
  with pytest.raises(ValueError, match="finetune.cycle_ratio"):
    methods.build_plan("starsse", methods.Budget(5, 10, 20.0, 0.1, lr_ratio=2.0))


def test_loading_a_config_imports_no_jax():
  code = ("import sys; from starsse_jax import configs; c = configs.load('starsse'); "
          "c2 = configs.load('paper/swin_cifar100:starsse'); "
          "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith('jax.')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       check=True)
  assert out.stdout.strip() == "[]", out.stdout
