"""The command line starts light: its parser, `--help` and the app's launch path load neither MLX nor the
library's model, training or export packages. Those load when a command that needs them runs."""

import json
import subprocess
import sys

from test_layout import HEAVY_LIBRARY, REPO

PROBE = """
import json, sys
import mlx_dpo.cli
mlx_dpo.cli.build_parser()
heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in json.loads(sys.argv[1])))
print(json.dumps(heavy))
"""


def loaded_heavy_modules(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sorted(HEAVY_LIBRARY))],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_building_the_parser_loads_no_heavy_module():
    assert loaded_heavy_modules(PROBE) == []


def test_the_probe_sees_a_heavy_module_when_one_is_loaded():
    # The check itself can fail: the same probe after a command's first use of a heavy API name (the API
    # itself is light: its `train` loads the training code when asked for) names what that loaded.
    loaded = loaded_heavy_modules(
        PROBE.replace("import mlx_dpo.cli\n", "import mlx_dpo.cli, mlx_dpo.api\nmlx_dpo.api.train\n")
    )
    assert {"mlx", "mlx_dpo.training.run"} <= set(loaded)


def test_help_runs_without_the_heavy_library():
    code = PROBE.replace(
        "mlx_dpo.cli.build_parser()",
        "import contextlib, io\ntry:\n    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        mlx_dpo.cli.main(['train', '--help'])\nexcept SystemExit:\n    pass",
    )
    assert loaded_heavy_modules(code) == []
