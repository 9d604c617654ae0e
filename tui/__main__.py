"""`python -m tui [--workspace DIR] [--model M] [--adapter-path DIR]`: the same as `mlx-dpo tui`."""

import sys

from mlx_dpo.cli import main

sys.exit(main(["tui", *sys.argv[1:]]))
