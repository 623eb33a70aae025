"""The default configuration and its validation.

Config files in ``configs/`` start from ``base_config()`` and change what their method needs.
Every default is stated here once (a method's own settings included: ``methods.Method.fields``).
Loading a config imports no JAX: ``validate``, which asks the plug-ins (models, sources, weight
files, methods) what they accept, imports them when a run starts; it runs before any data is read
or step compiled, so a bad value costs nothing.
"""
from __future__ import annotations

import ml_collections

from starsse_jax import pretrained


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # data split, initialisation, data order, augmentation, dropout masks
  # local_de, global_de, sse, starsse, fge, swa, mc_dropout (docs/methods.md)
  c.method = "starsse"
  c.num_members = 5  # K: members of the ensemble
  c.log_every_steps = 50  # progress lines and metric-writer interval
  c.drop_diverged_members = False  # True: a member whose loss turns NaN/inf is dropped, not fatal
  c.checkpoint_every_steps = 200  # progress checkpoints (also at phase ends and on SIGTERM/SIGINT)

  c.data = ml_collections.ConfigDict()
  # 'split': fine-tune on data.target_classes of data.name (pre-train on data.source_classes);
  # or a whole dataset: 'tfds:NAME', 'folder:PATH', 'npz:PATH', 'fashion_mnist'.
  c.data.target = "split"
  c.data.name = "fashion_mnist"  # the dataset that 'split' cuts: or a prepared TFDS dataset name
  c.data.fashion_mnist_dir = "/usr/share/datasets/fashion-mnist"  # its four IDX files (Debian)
  c.data.tfds_data_dir = ""  # TFDS data directory of prepared datasets ("" = TFDS's default)
  c.data.source_classes = (0, 1, 2, 3, 4)  # 'split': classes of the pre-training (source) task
  c.data.target_classes = (5, 6, 7, 8, 9)  # 'split': classes of the fine-tuning (target) task
  # 0 (whole-dataset targets only): all but the val slice. 100: where ensembles' gains over their
  # best member stand clear of the seed spread (docs/default-run.md)
  c.data.target_train_per_class = 100
  # chooses settings, greedy members/soups, and fits temperatures; 500 measures a gain of a few
  # tenths of a point, 200 measured one or two images
  c.data.target_val_per_class = 500
  c.data.target_test_per_class = 0  # 0: the whole test split of the target classes
  # Whole-dataset targets and notebook arrays: this fraction of each class's training images is
  # the validation slice (stratified, seeded) and all the others train; 0 = use the per-class
  # counts above instead. The class split ('split') always uses the counts
  c.data.val_fraction = 0.1
  c.data.val_min_per_class = 1  # val_fraction's floor: validation images of every class
  c.data.crop_padding = 2  # training augmentation at native size: zero padding, then a random crop
  c.data.image_size = 0  # 0: native size, padded crop; N: random-resized-crop to N px (e.g. 224)
  c.data.flip = True  # random horizontal flips in training
  c.data.resize = "bilinear"  # how crops are resized to data.image_size: 'bilinear' or 'bicubic'
  c.data.stored_size = 0  # N > 0: images resized (shorter side) + centre-cropped to N x N on load
  c.data.cache_dir = ""  # decoded image folders and data streamed from disk (~/.cache/starsse_jax)
  # Images above this many MB (per split) stay on disk, memory-mapped in data.cache_dir, and are
  # read a batch at a time (fashion_mnist and folder sources); 0 = no limit, all in memory
  c.data.host_memory_mb = 0
  # 'device': training images on the accelerator; 'host': each batch sent per step; 'auto': device
  # when they take at most a quarter of its memory
  c.data.placement = "auto"

  c.model = ml_collections.ConfigDict()
  # resnet_small (CIFAR stem, stage_sizes, width), resnet18/34/50/101/152 (torchvision's), vit
  # (sized by width, depth, heads, patch), timm's vit_* and swin_* names, or a registered name
  c.model.name = "resnet_small"
  c.model.stage_sizes = (1, 1, 1)  # resnet_small: residual blocks per stage
  c.model.width = 16  # resnet_small: channels of the first stage; vit: embedding width
  c.model.dtype = "float32"  # compute dtype ('bfloat16' on accelerators); weights stay float32
  c.model.bn_momentum = 0.9  # BatchNorm running statistics: new = m * old + (1 - m) * batch
  c.model.stem = ""  # '' = per model (resnet_small: 'cifar', resnetNN: 'imagenet'), or either
  c.model.dropout_rate = 0.0  # dropout before the head in fine-tuning (MC-dropout); 0 = none
  c.model.block_dropout_rate = 0.0  # dropout inside every residual block; 0 = none
  c.model.drop_path_rate = 0.0  # ViT/Swin: stochastic depth, rising linearly to this rate
  c.model.head = "head"  # the classifier's name in params (replaced by a fresh one per member)
  # model.name='vit': a ViT of model.width with these (timm's names, vit_*/swin_*, fix their own)
  c.model.patch = 4  # vit: patch size in pixels
  c.model.depth = 6  # vit: transformer blocks
  c.model.heads = 3  # vit: attention heads (dividing model.width)

  c.pretrain = ml_collections.ConfigDict()
  # Pre-trained weights from elsewhere (torchvision/timm ResNet layout): a file, several files
  # separated by commas, or a glob (sorted); Global DE needs num_members of them. When set, no
  # pre-training runs and no source data is read.
  c.pretrain.checkpoint = ""
  c.pretrain.checkpoint_prefix = "auto"  # e.g. 'module.', 'module.encoder_q.'; auto: detect
  c.pretrain.checkpoint_key = "auto"  # the entry holding the state_dict, e.g. 'state_dict'
  c.pretrain.input_mean = (0.485, 0.456, 0.406)  # the imported network's input mean (ImageNet's)
  c.pretrain.input_std = (0.229, 0.224, 0.225)  # the imported network's input std (ImageNet's)
  c.pretrain.checkpoint_dir = ""  # this library's own pre-training: default WORKDIR/pretrained
  c.pretrain.num_checkpoints = 1  # independent pre-trainings; Global DE needs num_members of them
  c.pretrain.epochs = 3.0  # source-task training (this library's own pre-training)
  c.pretrain.lr = 0.1  # peak learning rate of the pre-training's cosine
  c.pretrain.weight_decay = 5e-4  # L2 (sgd) or decoupled (adamw) weight decay
  c.pretrain.momentum = 0.9  # SGD momentum
  c.pretrain.batch_size = 128  # images per step (per member)
  recipe(c.pretrain)

  c.finetune = ml_collections.ConfigDict()
  # E; chosen on validation with the target set by the ensemble's gain (docs/default-run.md); the
  # first model's own validation NLL is lowest at 40 on 100 images a class
  c.finetune.epochs = 20.0
  c.finetune.lr = 0.05  # peak learning rate of the first fine-tuning's cosine
  c.finetune.weight_decay = 5e-4  # L2 (sgd) or decoupled (adamw) weight decay
  c.finetune.momentum = 0.9  # SGD momentum
  c.finetune.batch_size = 50  # images per step, per member
  c.finetune.lr_ratio = 2.0  # SSE / StarSSE cycle peak = lr_ratio * lr
  c.finetune.cycle_ratio = 0.25  # SSE / StarSSE cycle length = cycle_ratio * E epochs
  c.finetune.fge_cycle_epochs = 4  # FGE: epochs of one triangular cycle (a member at each minimum)
  c.finetune.fge_lr_1 = 0.01  # FGE: the cycle's highest learning rate
  c.finetune.fge_lr_2 = 1e-4  # FGE: the cycle's lowest learning rate
  # SWA (method 'swa'): from the fine-tuned model, swa_epochs at a constant swa_lr ('constant') or
  # a sawtooth swa_lr -> swa_lr_min per collection period ('cyclic'); weights averaged every
  # swa_collect_every epochs after swa_start epochs.
  c.finetune.swa_epochs = 5.0  # = cycle_ratio x E: one SWA run costs one StarSSE branch
  c.finetune.swa_lr = 0.01  # SWA: the constant rate, or the sawtooth's top
  c.finetune.swa_lr_min = 1e-4  # SWA 'cyclic': the sawtooth's bottom
  c.finetune.swa_schedule = "constant"  # SWA: 'constant' or 'cyclic'
  c.finetune.swa_start = 0.0  # SWA: epochs before the first collection
  c.finetune.swa_collect_every = 1.0  # SWA: epochs between collections
  recipe(c.finetune)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 500  # images per prediction step
  c.eval.ece_bins = 15  # equal-width confidence bins of ECE and the reliability diagram
  # OOD set: 'auto' (the split's source classes), 'none', or a source ('tfds:NAME', 'npz:PATH', ...)
  c.eval.ood = "auto"
  # A Local DE results.json whose calibrated-NLL size curve is the DEE reference ('' = none; a
  # local_de run is its own reference).
  c.eval.dee_reference = ""
  # 'local_de': also train a Local DE of the method's training compute (member 0 shared; K members
  # for StarSSE and SSE at cycle_ratio 1, 1 + (K-1) x cycle_ratio in general) and report it beside
  # the method, as the DEE reference unless eval.dee_reference names another. '' = none.
  c.eval.baseline = ""
  c.eval.soups = True  # uniform and greedy soups (and the learned and AME soups when on)
  # AME soup (data-free averaging by an optimiser): '' (off), 'sgd' (step 1/i: the uniform soup),
  # 'adam' or 'adagrad' at eval.ame_lr, eval.ame_passes passes through the members.
  # Several, separated by commas ('sgd,adam,adagrad'), give one soup each (ame_sgd, ...).
  c.eval.ame_optimizer = ""
  c.eval.ame_lr = 0.1  # AME: the optimiser's learning rate
  c.eval.ame_passes = 3  # AME: passes through the members
  # Learned soup (per-tensor mixing weights + logit scale, AdamW on the validation slice).
  c.eval.learned_soup = True  # learned soup: per-tensor mixing weights fitted on validation
  c.eval.learned_soup_epochs = 5  # learned soup: epochs over the validation slice
  c.eval.learned_soup_lr = 0.05  # learned soup: AdamW learning rate
  c.eval.learned_soup_batch_size = 256  # learned soup: validation images per step
  # MC-dropout: stochastic test passes per member of a model with dropout (0 = dropout off).
  c.eval.mc_samples = 0  # MC-dropout: stochastic test passes per member; 0 = dropout off
  # Low-precision ensembles: bit widths to evaluate (() = off), draws per model, grid scale
  # ('channel': one per output channel, 'tensor': one per tensor).
  c.eval.low_precision_bits = ()  # low-precision ensembles: bit widths to evaluate; () = off
  c.eval.low_precision_samples = 5  # low-precision ensembles: draws per model
  c.eval.low_precision_scale = "channel"  # 'channel' or 'tensor': one grid scale per which
  c.eval.bn_batch_size = 100  # batch of the BatchNorm statistics recompute (soups, SWA)
  c.eval.basin = False  # interpolation curves and distances (adds minutes on a CPU)
  c.eval.basin_points = 11  # points on each interpolation line
  c.eval.basin_threshold = 0.1  # barrier (nats of test NLL) above which a member "left the basin"

  c.execution = ml_collections.ConfigDict()
  # how a step runs over the member axis: 'unroll', 'map' (lax.map), 'vmap', 'chunked' (lax.map
  # over groups of at most 8 unrolled members: compile time flat in K, slower steps on CPUs);
  # 'auto': unroll up to 8 members or on CPUs, map above on accelerators (docs/performance.md)
  c.execution.member_strategy = "auto"
  c.execution.num_devices = 0  # devices a phase spreads over; 0 = all visible
  # A phase whose estimated memory per device is above this many MB stops before compiling;
  # 0 = what the device has (free accelerator memory, available RAM on a CPU)
  c.execution.memory_limit_mb = 0.0
  # Convolution kernel gradients: 'xla', 'taps' (one product per kernel tap; several times faster
  # on CPUs) or 'auto' ('taps' on CPU, 'xla' elsewhere). See starsse_jax/conv.py.
  c.execution.kernel_grad = "auto"
  # Several processes (hosts) in one run: jax.distributed.initialize() first (docs/hosts.md).
  # Empty fields are auto-detected, as on TPU VMs and under SLURM; elsewhere give all three:
  # process 0's 'host:port', how many processes, and this one's id (0..num_processes-1).
  c.execution.distributed = False  # True: one of several processes (docs/hosts.md)
  c.execution.coordinator_address = ""  # process 0's 'host:port'; '' = auto-detect
  c.execution.num_processes = 0  # how many processes take part; 0 = auto-detect
  c.execution.process_id = -1  # this process's id, 0..num_processes-1; -1 = auto-detect
  c.execution.initialization_timeout_s = 300  # stop with a message if the processes do not meet
  return c


def recipe(section) -> None:
  """Optimiser, schedule and batch regularisers of a training section (pretrain / finetune).
  The defaults are the ResNet recipe (SGD, cosine per step, nothing else); the transformer recipe
  (configs/paper/swin_*.py) sets AdamW, warm-up, clipping, label smoothing, mixup/cutmix."""
  # 'sgd' (momentum, L2 decay on every weight, PyTorch's SGD) or 'adamw' (decoupled decay, none on
  # 1-D tensors, biases, class token, position embeddings, relative-position tables).
  section.optimizer = "sgd"
  section.b1 = 0.9  # adamw: first-moment decay
  section.b2 = 0.999  # adamw: second-moment decay
  section.eps = 1e-8  # adamw: epsilon
  section.grad_clip_norm = 0.0  # > 0: gradients clipped to this global norm
  # The first fine-tuning (or pre-training): linear warm-up from warmup_lr over warmup_epochs,
  # then cosine. Cycles never warm up.
  section.warmup_epochs = 0.0
  section.warmup_lr = 0.0  # the warm-up's starting learning rate
  section.schedule_unit = "step"  # learning rates change every 'step' or once per 'epoch'
  section.label_smoothing = 0.0  # targets 1 - s + s/C and s/C
  section.mixup_alpha = 0.0  # > 0: mixup with lam ~ Beta(alpha, alpha), one per batch
  section.cutmix_alpha = 0.0  # > 0: cutmix; with both, cutmix with mix_switch_prob
  section.mix_switch_prob = 0.5  # with mixup and cutmix both on: probability of cutmix
  section.mix_prob = 1.0  # probability that a batch is mixed at all
  section.random_erase_prob = 0.0  # per image: one box of N(0, 1) noise (timm's mode 'pixel')
  # RandAugment (timm's rand-m9-mstd0.5-inc1 = 2 ops, magnitude 9, std 0.5, each op with p 0.5)
  section.rand_augment_ops = 0  # ops per image; 0 = off
  section.rand_augment_magnitude = 9.0  # RandAugment: mean magnitude (0..10)
  section.rand_augment_std = 0.5  # RandAugment: std of the magnitude per op
  section.rand_augment_prob = 0.5  # RandAugment: probability that each chosen op applies


def _check_recipe(need, s, name: str) -> None:
  from starsse_jax import optimizers  # pylint: disable=g-import-not-at-top
  need(s.get("optimizer", "sgd") in optimizers.OPTIMIZERS,
       f"{name}.optimizer={s.get('optimizer')!r}; choose one of {optimizers.OPTIMIZERS}.")
  need(s.schedule_unit in ("step", "epoch"),
       f"{name}.schedule_unit={s.schedule_unit!r}; use 'step' or 'epoch'.")
  need(s.warmup_epochs >= 0 and s.warmup_lr >= 0,
       f"{name}.warmup_epochs and {name}.warmup_lr must not be negative.")
  need(s.warmup_epochs < s.epochs or s.warmup_epochs == 0,
       f"{name}.warmup_epochs={s.warmup_epochs:g} must be shorter than {name}.epochs="
       f"{s.epochs:g}.")
  need(s.grad_clip_norm >= 0, f"{name}.grad_clip_norm={s.grad_clip_norm!r}; use 0 (off) or a "
       "positive norm.")
  need(0 <= s.label_smoothing < 1, f"{name}.label_smoothing={s.label_smoothing!r} must lie in "
       "[0, 1).")
  need(s.mixup_alpha >= 0 and s.cutmix_alpha >= 0,
       f"{name}.mixup_alpha and {name}.cutmix_alpha must not be negative (0 = off).")
  need(s.rand_augment_ops >= 0 and 0 <= s.rand_augment_magnitude <= 10 and
       s.rand_augment_std >= 0,
       f"{name}.rand_augment_ops must not be negative, {name}.rand_augment_magnitude must lie in "
       f"[0, 10] and {name}.rand_augment_std must not be negative.")
  for field in ("mix_switch_prob", "mix_prob", "random_erase_prob", "rand_augment_prob"):
    need(0 <= s[field] <= 1, f"{name}.{field}={s[field]!r} must lie in [0, 1].")
  need(0 < s.b1 < 1 and 0 < s.b2 < 1 and s.eps > 0,
       f"{name}.b1 and {name}.b2 must lie in (0, 1) and {name}.eps be positive.")


def use_shipped_sources(config: ml_collections.ConfigDict,
                        name: str = "fashion_mnist_source") -> ml_collections.ConfigDict:
  """Fine-tunes from the pre-trained networks the project ships (``starsse_jax.pretrained``)
  instead of pre-training: ``pretrain.checkpoint='shipped:NAME'`` and the input statistics the
  networks were trained with. The default configs use it; ``--config.pretrain.checkpoint=''``
  pre-trains on the source task as before."""
  record = pretrained.record(name)
  config.pretrain.checkpoint = f"{pretrained.PREFIX}{name}"
  config.pretrain.input_mean = tuple(record["input_mean"])
  config.pretrain.input_std = tuple(record["input_std"])
  return config


def checkpoints_required(config) -> int:
  """Pre-trained checkpoints a run reads: the method's need, or ``pretrain.num_checkpoints`` if
  more (the sweep's Global DE)."""
  from starsse_jax import methods  # pylint: disable=g-import-not-at-top
  return max(methods.checkpoints_needed(config.method, config.num_members),
             config.pretrain.num_checkpoints)


def validate(config: ml_collections.ConfigDict, data_given: bool = False) -> None:
  """Raises ``ValueError`` naming the field and a fix for the first bad value found.

  ``data_given``: the data comes from the caller (arrays), not from ``config.data``'s source."""

  # The plug-ins say what they accept; importing them (and JAX) waits for a run to start.
  # pylint: disable=g-import-not-at-top
  from starsse_jax import conv, members, methods, models, sources, weights
  from starsse_jax.augment import RESIZE_METHODS

  def need(ok: bool, message: str):
    if not ok:
      raise ValueError(f"Invalid config: {message}")

  need(config.method in methods.METHODS,
       f"method={config.method!r} is unknown; choose one of {sorted(methods.METHODS)}.")
  method = methods.METHODS[config.method]
  need(models.is_known(config.model.name),
       f"model.name={config.model.name!r} is unknown; choose one of {models.names()} (or "
       "register a model of your own: starsse_jax.models.register, or api.run(model=...)).")
  need(config.model.dtype in ("float32", "bfloat16"),
       f"model.dtype={config.model.dtype!r}; use 'float32' or 'bfloat16'.")
  need(config.execution.member_strategy in members.STRATEGIES,
       f"execution.member_strategy={config.execution.member_strategy!r}; choose one of "
       f"{members.STRATEGIES}.")
  need(config.eval.baseline in methods.BASELINES,
       f"eval.baseline={config.eval.baseline!r}; use '' (none) or 'local_de'.")
  need(config.eval.basin_points >= 2,
       f"eval.basin_points={config.eval.basin_points!r}; a curve needs at least 2 points.")
  need(config.execution.kernel_grad in conv.KERNEL_GRADS,
       f"execution.kernel_grad={config.execution.kernel_grad!r}; choose one of "
       f"{conv.KERNEL_GRADS}.")
  ex = config.execution
  given = [f for f in ("coordinator_address", "num_processes", "process_id")
           if ex[f] not in ("", 0, -1)]
  need(not given or ex.distributed,
       f"execution.{given[0] if given else ''} is set but execution.distributed is False; set "
       "--config.execution.distributed=True to run as one of several processes.")
  need(not ex.coordinator_address or (ex.num_processes >= 1 and ex.process_id >= 0),
       "execution.coordinator_address is set: also give execution.num_processes (>= 1) and "
       "execution.process_id (this process's number, 0..num_processes-1).")
  need(ex.process_id < 0 or ex.num_processes == 0 or ex.process_id < ex.num_processes,
       f"execution.process_id={ex.process_id} but execution.num_processes={ex.num_processes}: "
       "process ids run from 0 to num_processes - 1.")
  need(ex.initialization_timeout_s >= 1,
       f"execution.initialization_timeout_s={ex.initialization_timeout_s!r}; use at least 1.")
  need(config.execution.get("memory_limit_mb", 0) >= 0,
       f"execution.memory_limit_mb={config.execution.get('memory_limit_mb')}; use 0 (what the "
       "device has) or a size in MB.")
  need(config.execution.num_devices >= 0,
       f"execution.num_devices={config.execution.num_devices!r}; use 0 (all) or a positive count.")
  need(isinstance(config.num_members, int) and config.num_members >= 1,
       f"num_members={config.num_members!r}; an ensemble needs at least 1 member.")
  positive = {
      "pretrain.epochs": config.pretrain.epochs, "pretrain.lr": config.pretrain.lr,
      "pretrain.batch_size": config.pretrain.batch_size,
      "pretrain.num_checkpoints": config.pretrain.num_checkpoints,
      "finetune.epochs": config.finetune.epochs, "finetune.lr": config.finetune.lr,
      "finetune.batch_size": config.finetune.batch_size,
      "data.target_val_per_class": config.data.target_val_per_class,
      "eval.batch_size": config.eval.batch_size, "eval.bn_batch_size": config.eval.bn_batch_size,
      "eval.basin_threshold": config.eval.basin_threshold,
      "log_every_steps": config.log_every_steps,
  }
  for name, value in positive.items():
    need(value > 0, f"{name}={value!r} must be positive.")
  need(config.checkpoint_every_steps >= 0,
       f"checkpoint_every_steps={config.checkpoint_every_steps!r}; use 0 (phase ends and signals "
       "only) or a positive count.")
  for name in ("pretrain.weight_decay", "finetune.weight_decay", "data.crop_padding",
               "data.image_size", "data.target_test_per_class", "data.stored_size",
               "data.target_train_per_class"):
    value = config[name.split(".")[0]][name.split(".")[1]]
    need(value >= 0, f"{name}={value!r} must not be negative.")
  for name in ("pretrain.momentum", "finetune.momentum"):
    value = config[name.split(".")[0]][name.split(".")[1]]
    need(0 <= value < 1, f"{name}={value!r} must lie in [0, 1).")
  ame = [n.strip() for n in config.eval.ame_optimizer.split(",") if n.strip()]
  need(all(n in ("sgd", "adam", "adagrad") for n in ame) and len(set(ame)) == len(ame),
       f"eval.ame_optimizer={config.eval.ame_optimizer!r}; use '' (off), or 'sgd', 'adam', "
       "'adagrad' (several separated by commas, each once).")
  for name in ("dropout_rate", "block_dropout_rate", "drop_path_rate"):
    need(0 <= config.model.get(name, 0.0) < 1,
         f"model.{name}={config.model.get(name)!r} must lie in [0, 1).")
  need(config.eval.mc_samples >= 0,
       f"eval.mc_samples={config.eval.mc_samples!r}; use 0 (off) or a number of passes.")
  for problem in method.problems(config):  # the method's own fields
    need(False, problem)
  need(all(isinstance(b, int) and 2 <= b <= 16 for b in config.eval.low_precision_bits),
       f"eval.low_precision_bits={tuple(config.eval.low_precision_bits)!r}; use integers "
       "from 2 to 16, e.g. (4, 5, 6), or () for none.")
  need(config.eval.low_precision_samples >= 1,
       f"eval.low_precision_samples={config.eval.low_precision_samples!r} must be at least 1.")
  need(config.eval.low_precision_scale in ("channel", "tensor"),
       f"eval.low_precision_scale={config.eval.low_precision_scale!r}; use 'channel' or 'tensor'.")
  need(config.eval.learned_soup_epochs >= 0 and config.eval.learned_soup_lr > 0 and
       config.eval.learned_soup_batch_size > 0,
       "eval.learned_soup_epochs must not be negative; learned_soup_lr and "
       "learned_soup_batch_size must be positive.")
  if config.model.name == "vit":
    need(config.model.heads >= 1 and config.model.width % config.model.heads == 0,
         f"model.width={config.model.width} must be a multiple of model.heads="
         f"{config.model.heads} (each head gets width / heads channels).")
    need(config.model.patch >= 1 and config.model.depth >= 1,
         "model.patch and model.depth must be at least 1.")
  for name in ("pretrain", "finetune"):
    _check_recipe(need, config[name], name)
  need(config.data.resize in RESIZE_METHODS,
       f"data.resize={config.data.resize!r}; use 'bilinear' or 'bicubic'.")
  need(0.0 <= config.data.get("val_fraction", 0.0) < 1.0,
       f"data.val_fraction={config.data.get('val_fraction')}; use a fraction in [0, 1) of each "
       "class's training images (0: the per-class counts).")
  need(config.data.get("val_min_per_class", 1) >= 1,
       f"data.val_min_per_class={config.data.get('val_min_per_class')}; use 1 or more.")
  need(config.data.placement in ("auto", "device", "host"),
       f"data.placement={config.data.placement!r}; use 'auto', 'device' or 'host'.")
  need(config.data.get("host_memory_mb", 0) >= 0,
       f"data.host_memory_mb={config.data.get('host_memory_mb')}; use 0 (no limit) or a size in MB.")
  need(not (config.data.get("host_memory_mb", 0) and config.data.placement == "device"),
       "data.host_memory_mb streams data above it from disk a batch at a time, but "
       "data.placement='device' puts all training images on the device; use 'auto' or 'host'.")
  need(config.model.stem in ("",) + models.STEMS,
       f"model.stem={config.model.stem!r}; use '' (the model's own), 'imagenet' or 'cifar'.")
  whole_dataset = config.data.target not in ("", "split")
  if whole_dataset and not data_given:
    name = config.data.target.partition(":")[0]
    need(name in sources.SOURCES,
         f"data.target={config.data.target!r}: unknown source {name!r}; use 'split' or one of "
         f"{sorted(sources.SOURCES)} as 'NAME:LOCATION' (e.g. 'tfds:cifar100', "
         "'folder:/data/pets', 'npz:arrays.npz').")
  elif not data_given:
    need(config.data.target_train_per_class > 0,
         "data.target_train_per_class=0 (all images) works only for a whole-dataset data.target; "
         "the class split needs a positive count.")
  if config.pretrain.checkpoint:
    files = weights.checkpoint_files(config.pretrain.checkpoint)  # raises for missing files
    needed = checkpoints_required(config)
    need(len(files) >= needed,
         f"method={config.method!r} with num_members={config.num_members} needs {needed} "
         f"pre-trained checkpoints; pretrain.checkpoint names {len(files)} ({files}). Give "
         f"{needed} files separated by commas, or a glob.")
    need(len(config.pretrain.input_mean) == len(config.pretrain.input_std),
         "pretrain.input_mean and pretrain.input_std need one value per channel each.")
  else:
    need(not whole_dataset or data_given,
         f"data.target={config.data.target!r} is a whole dataset with no source task to "
         "pre-train on: set pretrain.checkpoint to the pre-trained weights to fine-tune from.")
