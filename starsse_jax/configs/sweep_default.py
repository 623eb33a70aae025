"""The default setting over five seeds: StarSSE and SSE against Local and Global DE at equal K and
at equal training compute, fine-tuned from the five shipped source networks.

  python projects/starsse_paper/sweep.py --config=sweep_default --workdir=runs/sweep_default

Everything is the default run's (``configs/starsse.py``: network, E, learning rate) but the
target set and the cycle, pinned to the default's until 2026-12-02: 200 training and 200
validation images per class, cycles of 0.25 x E at the peaks ``sweep.lr_ratios``. Per
seed s: Local DE (K = 5) from shipped network s, Global DE (K = 5) from networks 0-4, StarSSE and
SSE from Local DE's member 0 (the first model), and the Deep Ensembles of the compute StarSSE and
SSE cost (1 + (K-1) x 0.25 = 2 fine-tunings: the first two members of Local / Global DE). The
summary gives each cell's ensemble gain over its best member with its seed spread, and every claim
of the paper as a paired 95% interval over the seeds. Five seeds, 2-core CPU, about 12 minutes a
seed: no StarSSE cell's ensemble above its first model; the default moved to the closer setting
of ``configs/sweep_starsse_settings.py`` and then to a smaller target set
(``configs/sweep_small_target.py``; docs/default-run.md).
"""
import ml_collections

from starsse_jax.configs import starsse


def get_config():
  config = starsse.get_config()
  # The default run's cycle until 2026-12-02 (peak 3 x lr over 0.25 x E), which this sweep measured;
  # pinned so that its committed seed files stay this config's (they are named by its hash).
  config.finetune.lr_ratio = 3.0
  config.finetune.cycle_ratio = 0.25
  config.data.target_train_per_class = 200  # the default target set until 2026-12-02, likewise
  config.data.target_val_per_class = 200
  config.pretrain.num_checkpoints = 5  # all five shipped networks: Global DE
  config.checkpoint_every_steps = 0  # save at phase ends and on signals
  config.log_every_steps = 200
  config.eval.baseline = ""  # the sweep's own Local DE cells are the baselines
  # Ensembles only: soups (greedy soups recompute BatchNorm per candidate) and fine interpolation
  # curves made one seed's evaluation longer than its training on a 2-core CPU.
  config.eval.soups = False
  config.eval.basin_points = 5
  config.eval.ood = "none"
  config.sweep = ml_collections.ConfigDict()
  config.sweep.lr_ratios = (2.0, 3.0, 4.0)
  config.sweep.cycle_ratios = (config.finetune.cycle_ratio,)
  config.sweep.seeds = (0, 1, 2, 3, 4)
  config.sweep.basin_cycle_ratio = config.finetune.cycle_ratio
  return config
