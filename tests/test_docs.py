"""The documentation: the site builds strictly, the configuration reference is current and complete,
and every command shown in the README and in docs/ is executed here (shortened by overrides where
it is long), so an example cannot rot.

A command is a line of a fenced ``bash`` block (a block whose lines share variables runs as one
script) or an inline code span that starts like a command (``python ...``, ``starsse-jax ...``).
``RULES`` says how each is executed; a command no rule matches fails
``test_every_shown_command_has_a_rule``, so a new example needs a way to run before it lands.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from starsse_jax import config_docs

PAGES = ["README.md"] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
COMMAND_START = re.compile(r"(\.venv/bin/)?(python3? |starsse-jax|mkdocs |bash |pip )")

# A tiny model and a few images: every run of the main job or a sweep finishes in seconds. The
# network is narrower than the shipped source networks, so it pre-trains its own (a few steps);
# tests/test_shipped.py runs the default configs on the shipped networks.
SHRINK = ["--config.model.stage_sizes=(1,)", "--config.model.width=4", "--config.model.depth=1",
          "--config.model.heads=2", "--config.model.patch=7",
          "--config.data.target_train_per_class=10", "--config.data.target_val_per_class=4",
          "--config.data.target_test_per_class=10", "--config.pretrain.epochs=0.02",
          "--config.pretrain.batch_size=64", "--config.pretrain.warmup_epochs=0",
          "--config.finetune.epochs=1",
          "--config.finetune.batch_size=10", "--config.finetune.warmup_epochs=0",
          "--config.eval.bn_batch_size=10", "--config.eval.learned_soup_epochs=1",
          "--config.eval.low_precision_bits=(4,)", "--config.eval.low_precision_samples=2",
          "--config.num_members=2", "--config.log_every_steps=1000"]
TINY = ["--config.pretrain.checkpoint="] + SHRINK
SWEEP = ["--config.sweep.lr_ratios=(2.0,)", "--config.sweep.cycle_ratios=(1.0,)",
         "--config.sweep.seeds=(0,)", "--config.sweep.basin_cycle_ratio=1.0",
         "--config.eval.basin_points=3", "--config.pretrain.num_checkpoints=2"]
BENCH = ["--steps=1", "--repeats=1", "--batch=4", "--no-epoch"]


def _pages_text() -> dict[str, str]:
  return {os.path.relpath(p, REPO): open(p, encoding="utf-8").read() for p in PAGES}


def shown_commands(text: str) -> list[str]:
  """Fenced bash blocks (as one script each, continuation lines joined) and inline spans that
  start like a command."""
  found = []
  for block in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
    lines = [line.split("  #")[0].rstrip() for line in block.group(1).replace("\\\n", " ")
             .splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if any("$" in line for line in lines):  # lines that share variables: one script
      found.append("\n".join(" ".join(line.split()) for line in lines))
    else:
      found += [" ".join(line.split()) for line in lines]
  prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
  found += [" ".join(m.group(1).split()) for m in re.finditer(r"`([^`]+)`", prose)
            if COMMAND_START.match(" ".join(m.group(1).split()))]
  return found


def all_commands() -> list[str]:
  out = []
  for text in _pages_text().values():
    for command in shown_commands(text):
      if command not in out:
        out.append(command)
  return out


@dataclasses.dataclass(frozen=True)
class Rule:
  pattern: str  # re.fullmatch against the command
  how: str  # 'run': executed (shortened by `extra`); 'checked': what checks it and why not run
  extra: tuple[str, ...] = ()  # appended to every invocation of the library or a script
  drop: tuple[str, ...] = ()  # flags removed (what needs hardware a CI machine lacks)
  expect_error: str = ""  # runs until it needs what this machine lacks: exit 2 naming it
  why: str = ""


RULES = [
    # The quick start's first command: its install steps are the second's (CI runs that one
    # verbatim), its job is run here shortened.
    Rule(r"apt-get update && apt-get install -y dataset-fashion-mnist python3-venv && .*"
         r"\.venv/bin/python -m starsse_jax\.main --config=starsse --workdir=runs/starsse", "run",
         tuple(TINY)),
    Rule(r"apt-get update && .* python3-torchvision chromium && .* -m pytest -q -n 2 --dist loadfile "
         r"tests", "checked",
         why="CI's own command: .ci/run runs it verbatim (test_ci_runs_the_readme_test_command)"),
    Rule(r"(\.venv/bin/)?python -m starsse_jax\.main --config=\w+ --workdir=\S+", "run",
         tuple(TINY)),
    Rule(r"starsse-jax --config=\w+ --workdir=\S+( --config\.\S+)*", "run", tuple(TINY)),
    Rule(r"starsse-jax --help", "run"),
    Rule(r"python -m starsse_jax\.main|starsse-jax|pip install( \.| git\+URL)?", "checked",
         why="names, not a whole command: test_wheel_installs_and_runs_from_outside_the_repo "
             "installs the wheel and runs the console script"),
    Rule(r"python -m starsse_jax\.config_docs( > docs/configuration\.md)?", "run"),
    Rule(r"mkdocs build --strict", "run"),
    Rule(r"python -m pytest -q( -n 2 --dist loadfile| -m \"not slow\")? tests", "run",
         ("--collect-only",)),
    Rule(r"bash \.ci/run", "checked", why="CI itself (test_ci_runs_the_readme_test_command)"),
    Rule(r"python -m starsse_jax\.main --config=paper/supervised_cifar100:starsse .*"
         r"--config\.pretrain\.checkpoint=resnet50-0676ba61\.pth .*", "run", tuple(SHRINK),
         expect_error="resnet50-0676ba61.pth"),
    Rule(r"python -m starsse_jax\.main --config=starsse --workdir=runs/vit_pets .*"
         r"--config\.pretrain\.checkpoint=vit_small_patch16_224\.safetensors .*", "run",
         tuple(SHRINK), expect_error="vit_small_patch16_224.safetensors"),
    Rule(r"python projects/starsse_paper/sweep\.py --config=sweep(_default|_starsse_settings|_small_target|_small_target_e40)? --workdir=\S+",
         "run", tuple(TINY + SWEEP)),
    Rule(r"python experiments/pretrain_sources\.py --workdir=\S+ --epochs=12 --seeds=5 "
         r"--export=starsse_jax/pretrained", "run", ("--epochs=0.01", "--seeds=2"),
         why="the recipe for a few steps; the export goes to the test's own directory"),
    Rule(r"python experiments/first_model_curve\.py --config=configs/starsse\.py --workdir=\S+ "
         r"--epochs=10,20,40(,80)? --seeds=2", "run",
         (*TINY, "--config.pretrain.epochs=0.02", "--epochs=1", "--seeds=1")),
    Rule(r"python projects/starsse_paper/sweep\.py --config=sweep_cifar100_resnet50 .*", "run",
         tuple(TINY + SWEEP), expect_error="cifar100"),
    Rule(r"python experiments/compare\.py --workdir=\S+", "run",
         ("--seeds=0", "--methods=local_de", "--epochs=1", "--members=2",
          "--test_per_class=10", *(f"--set={a[len('--config.'):]}" for a in TINY
                                   if "finetune.epochs" not in a and "num_members" not in a))),
    Rule(r"python experiments/bench_throughput\.py --model=\w+ --members=1 --no-epoch "
         r"--torch-cpu --torch-python=V/bin/python .*", "run", (*BENCH, "--members=1"),
         drop=("--torch-cpu", "--torch-python=V/bin/python"),
         why="the PyTorch peer's 5.5 GB venv (V) is not part of the tests; JAX's side runs"),
    Rule(r"python experiments/bench_throughput\.py (--model=vit )?--members=.*", "run",
         (*BENCH, "--members=1")),
    Rule(r"python experiments/bench_throughput\.py \$R50 .*", "run",
         (*BENCH, "--members=1", "--strategies=unroll", "--batch=2", "--image-size=32"),
         drop=("--torch",), why="--image-size=32 and one member keep ResNet-50 to seconds; "
                                "--torch (the PyTorch GPU peer) is dropped: it needs CUDA"),
    Rule(r"python3 -m venv V && V/bin/pip install -r experiments/requirements-bench\.txt", "checked",
         why="a 5.5 GB install of the benchmarks' PyTorch peer, never part of the tests; "
             "test_bench_requirements_pin_the_measured_peer reads the file"),
    Rule(r"python experiments/bench_transformers_gpu\.py --steps=10 --repeats=3", "run",
         ("--no-torch", "--members=1", "--steps=1", "--repeats=1", "--batch=1"),
         why="PyTorch's timm peer needs CUDA; JAX's step runs one member on the CPU"),
    Rule(r"python experiments/paper_mock\.py --workdir=W --config=paper/swin_cifar100 --epochs=1",
         "checked", why="writes its Swin-T with timm under PyTorch, which the tests' Python lacks; "
                        "tests/test_swin_paper.py runs this config end to end from a converted "
                        "timm Swin-T"),
    Rule(r"python experiments/profile_step\.py .*", "run",
         ("--steps=1", "--batch=2", "--image-size=0", "--size=28")),
    Rule(r"python experiments/bench_load\.py", "run", ("--n=500", "--folder-n=20")),
    Rule(r"python experiments/bench_startup\.py --repeats=3 --repo=BEFORE --repo=AFTER", "run",
         ("--repeats=1",), why="AFTER (a checkout) becomes this one; BEFORE is left out"),
    Rule(r"python experiments/bench_compile\.py", "run",
         ("--members=2", "--steps=2", "--rounds=1", "--width=4", "--modes=groups")),
    Rule(r"python experiments/bench_checkpoints\.py --repo=BEFORE --repo=AFTER", "run",
         ("--members=2", "--width=4"), why="AFTER (a checkout) becomes this one; BEFORE is left out"),
    Rule(r"python experiments/bench_streaming\.py", "run", ("--steps=3",)),
    Rule(r"python experiments/bench_eval\.py", "run", ("--members=1", "--repeats=1",
                                                       "--config=tiny")),
    Rule(r"python experiments/paper_mock\.py --workdir=\S+ --epochs=1", "run",
         ("--epochs=0.01", "--members=1", "--n-train=1100", "--n-test=100", "--batch=8",
          "--image-size=32"),
         why="ResNet-50 at 32 px on 1,200 images: the paper config's path in seconds"),
    Rule(r"export XLA_FLAGS=.*\nARGS=.*\npython -m starsse_jax\.main \$ARGS .*&\n"
         r"python -m starsse_jax\.main \$ARGS .*", "run",
         tuple(a for a in TINY if "num_members" not in a and "batch_size" not in a)),
    Rule(r"gcloud compute tpus tpu-vm ssh .*", "checked",
         why="needs a TPU pod slice; the same multi-process path runs in the two-process example "
             "above and tests/test_multiprocess.py"),
]


def rule_for(command: str) -> Rule | None:
  matches = [r for r in RULES if re.fullmatch(r.pattern, command, re.S)]
  return matches[0] if matches else None


def test_every_shown_command_has_a_rule():
  missing = [c for c in all_commands() if rule_for(c) is None]
  assert not missing, ("commands shown in the docs that no test runs (add a Rule in "
                       f"tests/test_docs.py): {missing}")


def test_the_rules_find_commands():
  """The extraction is not vacuous: the quick start and several docs commands are found, and a
  made-up command matches no rule."""
  commands = all_commands()
  assert len(commands) >= 20
  assert any(c.startswith("apt-get update") for c in commands)
  assert rule_for("python experiments/unknown.py --x") is None


def test_ci_runs_the_readme_test_command():
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  second = [c for c in shown_commands(readme) if "pytest" in c and c.startswith("apt-get")]
  ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read().strip().splitlines()[-1]
  assert second == [ci]
  first = [c for c in shown_commands(readme) if "starsse_jax.main" in c
           and c.startswith("apt-get")][0]
  for package in re.search(r"install -y (.*?) &&", first).group(1).split():
    assert package in ci  # the first command installs nothing the tested one does not


def test_site_builds_strictly(tmp_path):
  """`mkdocs build --strict`: a broken link or anchor, or a page outside the navigation, fails."""
  proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                         str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  pages = {os.path.splitext(os.path.basename(p))[0] for p in PAGES[1:]}
  built = {os.path.basename(os.path.dirname(p)) for p in glob.glob(str(tmp_path / "site" / "*"
                                                                    / "index.html"))}
  assert pages - {"index"} <= built  # every page of docs/ is on the site


def test_every_config_field_is_documented():
  assert config_docs.undocumented() == []
  assert len(config_docs.fields()) > 100


def _config_with_a_new_field():
  import ml_collections
  c = ml_collections.ConfigDict()
  c.seed = 0  # documented here
  c.eval = ml_collections.ConfigDict()
  # documented by the comment above it
  c.eval.ece_bins = 15
  c.eval.new_field = 3
  return c


def test_an_undocumented_field_is_found(monkeypatch):
  from starsse_jax import configlib
  monkeypatch.setattr(configlib, "base_config", _config_with_a_new_field)
  assert config_docs.undocumented() == ["eval.new_field"]
  docs = {f.name: f.doc for f in config_docs.fields()}
  assert docs["seed"] == "documented here"
  assert docs["eval.ece_bins"] == "documented by the comment above it"


def test_configuration_reference_is_current():
  on_disk = open(os.path.join(REPO, "docs", "configuration.md"), encoding="utf-8").read()
  assert on_disk == config_docs.reference_markdown(), (
      "docs/configuration.md is stale: python -m starsse_jax.config_docs > docs/configuration.md")


def _shortened(command: str, extra: tuple[str, ...]) -> str:
  """The command with ``extra`` after every invocation of the library or an experiment script
  (for a script of several lines, after the ARGS it shares)."""
  if "\nARGS=" in "\n" + command:
    return re.sub(r'^(ARGS=".*?)"$', lambda m: m.group(1) + " " + " ".join(extra) + '"',
                  command, flags=re.M)
  joined = " ".join(shlex.quote(e) for e in extra)
  return command + (" " + joined if joined else "")


def _script(command: str, extra: tuple[str, ...]) -> str:
  """A bash script that runs the command as shown, with this interpreter as `python`."""
  body = command
  if command.startswith("apt-get update"):  # installing is CI's part; the job is run here
    body = command[command.index(".venv/bin/python -m starsse_jax.main"):]
  body = _shortened(body, extra)
  body = re.sub(r"(^|&& |\n)(\.venv/bin/)?python ", r"\1python ", body)
  body = re.sub(r"(^|\n)starsse-jax", r"\1python -c 'from starsse_jax.main import run_cli; "
                                      r"run_cli()'", body)
  body = body.replace("python experiments/", f"python {REPO}/experiments/")
  body = body.replace("python projects/", f"python {REPO}/projects/")
  body = body.replace("--config=configs/", f"--config={REPO}/configs/")  # config files by path
  if "ARGS=" in body:  # two processes: wait for both, fail if either fails
    body = body.replace(" &\n", " & first=$!\n") + "\nwait $first"
  return "set -euo pipefail\n" + body


def _runnable() -> list[str]:
  """The commands to execute, each job once: the README's quick start, the default run's page
  and `starsse-jax` with the same arguments are one job."""
  out, seen = [], set()
  for c in all_commands():
    rule = rule_for(c)
    if rule is None or rule.how != "run":
      continue
    job = _script(c, rule.extra).replace(
        "python -c 'from starsse_jax.main import run_cli; run_cli()'", "python -m starsse_jax.main")
    if job not in seen:
      seen.add(job)
      out.append(c)
  return out


RUNNABLE = _runnable()


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE, ids=[c.split("\n")[0][:60] for c in RUNNABLE])
def test_shown_command_runs(command, tmp_path):
  rule = rule_for(command)
  python_dir = os.path.dirname(sys.executable)
  env = dict(os.environ, PATH=f"{python_dir}:{os.environ['PATH']}",
             PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
  env.pop("XLA_FLAGS", None)
  cwd = REPO if command.startswith(("mkdocs", "python -m pytest", "python -m starsse_jax.config_"
                                    )) else tmp_path
  for flag in rule.drop:
    command = re.sub(rf" {re.escape(flag)}(?= |$)", "", command)
  command = command.replace("/tmp/", f"{tmp_path}/")  # the docs' scratch paths, per test
  script = _script(command, rule.extra)
  if "ARGS=" in command:  # a free port for the processes to meet on, not the one shown
    with socket.socket() as sock:
      sock.bind(("127.0.0.1", 0))
      script = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{sock.getsockname()[1]}", script)
  script = script.replace("--repo=BEFORE ", "").replace("--repo=AFTER", f"--repo={REPO}")
  if "$R50" in command:  # defined in the prose beside the commands that use it
    definition = re.search(r'`(R50="[^"`]*")`', "".join(_pages_text().values())).group(1)
    script = script.replace("set -euo pipefail\n", f"set -euo pipefail\n{definition}\n")
  if command.startswith("python -m starsse_jax.config_docs"):
    script = script.split(" >")[0] + f" > {tmp_path}/configuration.md"
  if command.startswith("mkdocs"):
    script = script.replace("mkdocs build --strict",
                            f"python -m mkdocs build --strict -d {tmp_path}/site")
  proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=900)
  out = proc.stdout + proc.stderr
  if rule.expect_error:
    assert proc.returncode == 2, out[-3000:]
    assert rule.expect_error in proc.stderr and "error:" in proc.stderr, out[-3000:]
    return
  assert proc.returncode == 0, f"{script}\n{out[-4000:]}"
  if "--help" in command:
    assert "finetune.lr_ratio" in proc.stdout and "paper/supervised_cifar100" in proc.stdout
  elif re.search(r"starsse_jax\.main|run_cli|compare\.py|sweep\.py", script):
    # Every job writes its page: a run's, the sweep's, the comparison's.
    workdir = re.search(r"--workdir=(\S+?)\"?(\s|$)", command).group(1)
    assert os.path.exists(os.path.join(tmp_path, workdir, "report.html")), out[-3000:]
    if "compare.py" in command:
      assert os.path.exists(os.path.join(tmp_path, workdir, "compare.png"))
    else:
      assert re.search(r"ensemble of|StarSSE", proc.stdout), out[-3000:]
  if command.startswith("python -m starsse_jax.config_docs"):
    assert (tmp_path / "configuration.md").read_text() == config_docs.reference_markdown()
  if command.startswith("python -m pytest"):
    assert re.search(r"\d+ tests collected", proc.stdout), proc.stdout[-2000:]


def test_bench_requirements_pin_the_measured_peer():
  """The benchmarks' PyTorch peer is the one docs/performance.md measured: PyPI's torch, pinned."""
  lines = open(os.path.join(REPO, "experiments", "requirements-bench.txt")).read().splitlines()
  pins = dict(l.split("==") for l in lines if l and not l.startswith("#"))
  assert pins["torch"] == "2.14.1" and "timm" in pins and "torchvision" in pins
  assert "2.14.1" in open(os.path.join(REPO, "docs", "performance.md")).read()
