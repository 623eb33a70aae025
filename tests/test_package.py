"""The package as a user installs it: a wheel holding the library and its configs, and the
`starsse-jax` console script, run from outside the repository."""
import glob
import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp("dist")
  # No build isolation: the test environment's setuptools builds it, with no download.
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                         "-w", str(out), REPO], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  (path,) = glob.glob(str(out / "starsse_jax-*.whl"))
  return path


def test_wheel_holds_the_configs_and_the_console_script(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  assert "starsse_jax/configs/starsse.py" in names
  assert "starsse_jax/configs/paper/supervised_cifar100.py" in names
  assert "starsse_jax/configs/paper/common.py" in names
  # The shipped source networks the default configs import, and their record.
  assert {f"starsse_jax/pretrained/fashion_mnist_source_seed{k}.safetensors" for k in range(5)
          } | {"starsse_jax/pretrained/fashion_mnist_source.json"} <= set(names)
  assert not any(n.startswith(("tests/", "experiments/", "configs/")) for n in names)
  entry_points = next(n for n in names if n.endswith("entry_points.txt"))
  assert "starsse-jax = starsse_jax.main:run_cli" in zipfile.ZipFile(wheel).read(
      entry_points).decode()


@pytest.mark.slow
def test_wheel_installs_and_runs_from_outside_the_repo(wheel, tmp_path):
  """A fresh virtual environment gets the wheel (its dependencies come from this environment's
  site-packages through a .pth file, so nothing is downloaded); the console script then runs the
  tiny config by name in a directory outside the repository, and the package it imports is the
  installed one."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
  py = venv / "bin" / "python"
  site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(site, "test_dependencies.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", wheel], check=True,
                 capture_output=True, timeout=300)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  where = subprocess.run([str(py), "-c", "import starsse_jax, sys; print(starsse_jax.__file__); "
                          "print(starsse_jax.configs.load('paper/swin_cifar100:sse').method)"],
                         cwd=outside, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.split()[0].startswith(str(venv)) and where.stdout.split()[1] == "sse"
  script = venv / "bin" / "starsse-jax"
  helped = subprocess.run([str(script), "--help"], cwd=outside, env=env, capture_output=True,
                          text=True, timeout=300)
  assert helped.returncode == 0, helped.stderr[-2000:]
  assert "finetune.lr_ratio" in helped.stdout and "paper/swin_cifar100" in helped.stdout
  proc = subprocess.run([str(script), "--config=tiny", "--workdir=run",
                         "--config.finetune.epochs=1", "--config.eval.soups=False"],
                        cwd=outside, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "ensemble of 3" in proc.stdout
  page = (outside / "run" / "report.html").read_text()
  assert "starsse-jax --config=tiny --workdir=run" in page
