"""StarSSE's cycle on a smaller target set, chosen on the validation slice: 100 labelled images
per class (500 in all, a fifth of the default's until 2026-12-02) and a validation slice of 500
per class, peaks of 1, 2 and 4 x lr over cycles of 0.5 and 1 x E, five seeds, beside the Local
and Global DE of the same seeds.

  python projects/starsse_paper/sweep.py --config=sweep_small_target --workdir=runs/small_target

On 1,000 target images (``configs/sweep_starsse_settings.py``) no ensemble's accuracy gain over
its best member stood clear of the seed spread, Deep Ensembles' included: the members were nearly
as good as their ensemble. With fewer images the members differ more; and a validation slice of
2,500 images measures a gain of a few tenths of a point, where 1,000 measured one or two images.
The summary's gain table also gives the gain over the member picked on validation, the member a
user would deploy. Five seeds, 2-core CPU, about six minutes a seed: peak 2 x lr over 0.5 x E has
the largest validation gain (+0.0009 +- 0.0007 in accuracy, +0.0074 +- 0.0010 in NLL; on the test
set +0.0015 +- 0.0007 and +0.0069 +- 0.0006, positive in every seed) and is the default
(docs/default-run.md).
"""
from starsse_jax.configs import sweep_starsse_settings


def get_config():
  config = sweep_starsse_settings.get_config()
  config.data.target_train_per_class = 100
  config.data.target_val_per_class = 500
  config.finetune.epochs = 20.0  # 200 steps (configs/sweep_small_target_e40.py: E = 40)
  config.sweep.lr_ratios = (1.0, 2.0, 4.0)
  config.sweep.cycle_ratios = (0.5, 1.0)
  config.sweep.seeds = (0, 1, 2, 3, 4)
  config.sweep.basin_cycle_ratio = 1.0
  return config
