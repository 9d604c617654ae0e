"""mlx-dpo: Direct Preference Optimization of local LLMs with MLX and LoRA."""

# Must run before anything imports mlx.core: it decides which BLAS MLX's CPU backend binds to.
from mlx_dpo import blas as _blas

_blas.preload()

__version__ = "0.1.0"
