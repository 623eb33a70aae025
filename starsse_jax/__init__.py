"""starsse_jax: ensembles and model soups for transfer learning (StarSSE, SSE, DE, FGE) in JAX.

Imported pre-trained weights: ``starsse_jax.weights``; data sources: ``starsse_jax.sources``;
the shipped configs by name: ``starsse_jax.configs.load("starsse")``.
"""
from starsse_jax import configs
from starsse_jax.api import (Ensemble, evaluate, finetune, import_checkpoints, make_soups,
                             pretrain, run)
from starsse_jax.configlib import base_config, validate
from starsse_jax.data import from_arrays, load_transfer_data
from starsse_jax.methods import METHODS, build_plan

__all__ = ["Ensemble", "evaluate", "finetune", "import_checkpoints", "make_soups", "pretrain",
           "run", "base_config", "validate", "load_transfer_data", "from_arrays", "METHODS",
           "build_plan", "configs"]
__version__ = "0.1.0"
