"""`python -m mlx_dpo.cli`: the same as `mlx-dpo`."""

import sys

from mlx_dpo.cli import main

sys.exit(main())
