"""starsse_jax: ensembles and model soups for transfer learning (StarSSE, SSE, DE, FGE) in JAX."""
from starsse_jax.api import Ensemble, evaluate, finetune, make_soups, pretrain, run
from starsse_jax.configlib import base_config, validate
from starsse_jax.data import load_transfer_data
from starsse_jax.methods import METHODS, build_plan

__all__ = ["Ensemble", "evaluate", "finetune", "make_soups", "pretrain", "run", "base_config",
           "validate", "load_transfer_data", "METHODS", "build_plan"]
__version__ = "0.1.0"
