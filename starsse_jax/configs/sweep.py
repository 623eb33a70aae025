"""The paper's sweep on the embedded Fashion-MNIST transfer split, sized for a 2-core CPU.

  python projects/starsse_paper/sweep.py --config=sweep --workdir=runs/sweep

SSE and StarSSE at lr_ratio {0.25, 0.5, 1, 2, 4} and cycle_ratio 0.25, K = 5, against Local
and Global DE (K = 5), seeds 0-4; five pre-trained checkpoints (Global DE) shared by all seeds,
seed s fine-tunes its Local DE / SSE / StarSSE from checkpoint s. Sizing for two CPU cores: a
narrower ResNet (width 8), 50 target training images per class, batch 25, a fixed 2,000-image test
subset. The first model is fine-tuned to a plateau: E = 40 epochs (400 steps), where the
validation NLL of ordinary fine-tuning stops improving (0.256 at E = 40, 0.254 at E = 80; 0.430
at the previous sweep's E = 10; ``experiments/first_model_curve.py --config=sweep``,
in ``experiments/results/first_model/sweep/``). Cycles are therefore short: 0.25 x E (100
steps), so StarSSE and SSE train 2 x E member-epochs for K = 5 where Local DE trains 5 x E.
Each claim is decided by a paired comparison over the seeds (``starsse_jax.stats``). Results and
the wall time are in docs/paper.md.
"""
import ml_collections

from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.num_members = 5
  config.log_every_steps = 100
  config.checkpoint_every_steps = 0  # phases are short: save at phase ends and on signals
  config.model.width = 8
  config.data.target_train_per_class = 50
  config.data.target_test_per_class = 400
  config.data.target_val_per_class = 100
  config.pretrain.num_checkpoints = 5
  config.pretrain.epochs = 2.0
  config.finetune.epochs = 40.0
  config.finetune.lr = 0.05
  config.finetune.batch_size = 25
  config.eval.bn_batch_size = 125
  config.eval.learned_soup = False  # the sweep's table has the uniform and greedy soups only
  config.eval.ood = "none"  # and no OOD column
  config.sweep = ml_collections.ConfigDict()
  config.sweep.lr_ratios = (0.25, 0.5, 1.0, 2.0, 4.0)
  config.sweep.cycle_ratios = (0.25,)
  config.sweep.seeds = (0, 1, 2, 3, 4)
  config.sweep.basin_cycle_ratio = 0.25  # interpolation curves at this cycle ratio, every seed
  return config
