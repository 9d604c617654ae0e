"""`python -m tui [--workspace DIR] [--model M] [--adapter-path DIR]`: the same as `mlx-dpo tui`.

A launcher, not part of the app: the CLI parses the options, reports a bad workspace as one line with
exit code 2, and leaves safely if the model is still loading at quit. Nothing else in `tui` imports the CLI.
"""

import sys

from mlx_dpo.cli import main

sys.exit(main(["tui", *sys.argv[1:]]))
