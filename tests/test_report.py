"""What the plots hold (their labelled series), on a hand-made results dict."""
import os
import re

import numpy as np
import pytest

from starsse_jax import report


def _model(acc, nll, cal):
  return {"accuracy": acc, "nll": nll}, {"calibrated": {"nll": cal}}


def _results():
  members = [_model(0.80, 0.60, 0.55), _model(0.78, 0.65, 0.58), _model(0.79, 0.62, 0.57)]
  curve = [{"accuracy": a, "nll": n} for a, n in ((0.80, 0.60), (0.81, 0.58), (0.82, 0.56))]
  soup = lambda m, a: {"members": m, "test": {"accuracy": a, "nll": 0.59},
                       "uncertainty": {"calibrated": {"nll": 0.54}}}
  return {
      "method": "starsse",
      "test": {"members": [m for m, _ in members], "size_curve": curve},
      "uncertainty": {"members": [u for _, u in members],
                      "size_curve_calibrated_nll": [0.55, 0.53, 0.52]},
      "baseline": {"test": {"size_curve": curve[:2]},
                   "uncertainty": {"size_curve_calibrated_nll": [0.55, 0.50]}},
      "greedy_ensemble": {"members": [0, 2], **soup([0, 2], 0.815)},
      "soups": {"uniform": soup([0, 1, 2], 0.805), "greedy": soup([0], 0.80)},
  }


def test_size_plot_holds_baseline_members_soups_and_greedy_ensemble(tmp_path):
  series = report.size_curve_series(_results())
  assert set(series) == {"accuracy", "nll", "cal. nll"}
  acc = series["accuracy"]
  assert acc["starsse ensemble"] == ([1, 2, 3], [0.80, 0.81, 0.82], "line")
  assert acc["local DE (baseline)"] == ([1, 2], [0.80, 0.81], "line")
  assert acc["members"] == ([1, 1, 1], [0.80, 0.78, 0.79], "points")
  assert acc["uniform soup"] == ([3], [0.805], "points")
  assert acc["greedy soup"] == ([1], [0.80], "points")
  assert acc["greedy ensemble"] == ([2], [0.815], "points")
  cal = series["cal. nll"]
  assert cal["starsse ensemble"][1] == [0.55, 0.53, 0.52]
  assert cal["local DE (baseline)"][1] == [0.55, 0.50]
  assert cal["members"][1] == [0.55, 0.58, 0.57]
  report.plot_size_curve(str(tmp_path / "size.png"), _results())
  assert (tmp_path / "size.png").stat().st_size > 1000


def test_size_plot_without_baseline_or_soups_has_the_method_and_members():
  r = _results()
  del r["baseline"], r["soups"], r["greedy_ensemble"]
  series = report.size_curve_series(r)
  assert set(series["nll"]) == {"starsse ensemble", "members"}


def test_reliability_bins_carry_their_counts(tmp_path):
  curves = {"ensemble": {"reliability": {"confidence": [0.1, 0.5, 0.9], "accuracy": [0.0, 0.4, 0.95],
                                         "count": [0, 7, 93]}}}
  assert report.reliability_series(curves) == {"ensemble": [(0.5, 0.4, 7), (0.9, 0.95, 93)]}
  report.plot_reliability(str(tmp_path / "rel.png"), curves)
  assert (tmp_path / "rel.png").stat().st_size > 1000


def _page_results():
  r = _results()
  r["test"]["diversity"] = {"disagreement": 0.1, "kl_to_ensemble": 0.01}
  r["test"]["ensemble"] = {"accuracy": 0.82, "nll": 0.56, "ece": 0.01, "brier": 0.2}
  r["baseline"]["test"].update(members=[{"accuracy": 0.8}, {"accuracy": 0.79}],
                               ensemble={"accuracy": 0.81, "nll": 0.57},
                               diversity={"disagreement": 0.05})
  r["baseline"]["uncertainty"]["ensemble"] = {}
  r["member_names"] = ["finetune[0]", "star_branches[0]", "star_branches[1]"]
  r["config"] = {"method": "starsse", "num_members": 3}
  r["timing"] = {"data_s": 1.0, "phases": [{"name": "finetune", "seconds": 3.0,
                                            "first_step_s": 1.0, "member_img_per_s": 100.0}]}
  return r


def test_report_page_holds_the_tables_plots_config_and_command(tmp_path):
  r = _page_results()
  report.plot_size_curve(str(tmp_path / "size.png"), r)
  page = report.html_page(r, {"size": str(tmp_path / "size.png")}, "python -m starsse_jax.main x")
  assert page.count("<table>") == 2  # the metrics table and the timings
  assert "<td>ensemble of 3 (starsse)</td><td>0.8200</td>" in page
  assert "<td>local DE of 2 (baseline)</td>" in page
  assert page.count("data:image/png;base64,") == 1
  assert "python -m starsse_jax.main x" in page and "&quot;num_members&quot;: 3" in page
  assert "phase finetune" in page


def test_interval_series_of_a_comparison():
  rows = [{"method": "starsse", "model": "ensemble of 4", "accuracy_mean": 0.93,
           "accuracy_std": 0.004, "nll_mean": 0.24, "nll_std": 0.015, "cal_nll_mean": None,
           "cal_nll_std": 0.0},
          {"method": "local_de", "model": "ensemble of 4", "accuracy_mean": 0.92,
           "accuracy_std": 0.003, "nll_mean": 0.29, "nll_std": 0.01,
           "cal_nll_mean": 0.239, "cal_nll_std": 0.006}]
  series = report.interval_series(rows)
  assert series["accuracy"] == [("starsse: ensemble of 4", 0.93, 0.004),
                                ("local_de: ensemble of 4", 0.92, 0.003)]
  assert series["cal_nll"] == [("local_de: ensemble of 4", 0.239, 0.006)]  # None left out


CHROMIUM = "/usr/bin/chromium"


def _render(page_path, tmp_path):
  """Loads a page in headless Chromium: the DOM after load with a check script's verdict (every
  image decoded, every table laid out), and a screenshot."""
  import json
  import subprocess
  checked = tmp_path / "checked.html"
  checked.write_text(page_path.read_text().replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images], tables = [...document.querySelectorAll('table')];
  document.body.setAttribute('data-check', JSON.stringify({
    images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    tables: tables.length, shown: tables.filter(t => t.offsetHeight > 0).length}));
});
</script></body>"""))
  flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
  dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", checked.as_uri()], capture_output=True,
                       text=True, timeout=120)
  assert dom.returncode == 0, dom.stderr[-2000:]
  verdict = json.loads(re.search(r"data-check=\"([^\"]*)\"", dom.stdout).group(1)
                       .replace("&quot;", '"'))
  shot = tmp_path / "page.png"
  subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400",
                  page_path.as_uri()], capture_output=True, timeout=120, check=True)
  return verdict, shot


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="the test command installs Debian's "
                    "chromium; without it this check cannot run")
def test_report_page_renders_in_chromium(tmp_path):
  from PIL import Image
  r = _page_results()
  report.plot_size_curve(str(tmp_path / "size.png"), r)
  path = tmp_path / "report.html"
  report.write_html(str(path), r, {"size": str(tmp_path / "size.png")}, "python -m x")
  verdict, shot = _render(path, tmp_path)
  assert verdict == {"images": 1, "decoded": 1, "tables": 2, "shown": 2}
  pixels = np.asarray(Image.open(shot).convert("L"))
  assert pixels.shape[1] == 1200 and pixels.std() > 5  # not a blank page


class _Terminal:
  """A stream that says it is a terminal, collecting what is written."""

  def __init__(self):
    self.text = ""

  def isatty(self):
    return True

  def write(self, s):
    self.text += s

  def flush(self):
    pass


def test_progress_is_a_bar_on_a_terminal_and_silent_otherwise():
  import io
  term = _Terminal()
  bar = report.Progress("finetune", 10, stream=term)
  assert bar.active
  for done in range(1, 11):
    bar.update(done)
  bar.describe(loss="[0.5]")
  bar.close()
  assert "finetune" in term.text and "10/10" in term.text and "100%" in term.text
  piped = io.StringIO()
  quiet = report.Progress("finetune", 10, stream=piped)
  quiet.update(5)
  quiet.close()
  assert not quiet.active and piped.getvalue() == ""


def test_member_gains_against_the_best_member_and_the_one_picked_on_validation():
  member = lambda acc, nll: {"accuracy": acc, "nll": nll}
  results = {
      "test": {"members": [member(0.90, 0.30), member(0.93, 0.28), member(0.92, 0.25)],
               "ensemble": member(0.94, 0.26), "diversity": {"disagreement": 0.1,
                                                              "kl_to_ensemble": 0.01}},
      # On validation member 0 is the most accurate and member 1 has the lowest NLL.
      "val": {"members": [member(0.95, 0.31), member(0.91, 0.20), member(0.94, 0.22)]},
      "member_names": ["a", "b", "c"], "method": "starsse"}
  g = report.member_gains(results)
  assert g["best"]["members"] == (1, 2) and g["picked"]["members"] == (0, 1)
  assert g["best"]["accuracy"] == pytest.approx(0.01) and g["best"]["nll"] == pytest.approx(-0.01)
  assert g["picked"]["accuracy"] == pytest.approx(0.04)
  assert g["picked"]["nll"] == pytest.approx(0.02)
  line = [x for x in report.table(results).splitlines() if x.startswith("ensemble gain")]
  assert line == ["ensemble gain over its members (test; accuracy up, NLL down): over the best "
                  "member there +0.0100 / -0.0100; over the member picked on validation "
                  "(member 0 / 1) +0.0400 / +0.0200"]
