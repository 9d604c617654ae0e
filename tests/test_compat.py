"""The versions of mlx and mlx-lm the suite runs on, and the parts of them mlx-dpo relies on beyond their docs.

TESTED names the versions; pyproject.toml bounds each to it, below the next minor release. Under
`make test-latest` (the newest releases, MLX_DPO_TEST_LATEST=1) the check of the installed versions is skipped
and says what runs instead; everything else must still pass there. The rest of what mlx_dpo/compat.py relies on
is exercised where it is used (test_families.py: output_head and MaskedCache on every family; test_sampling.py:
generate_batched; test_models.py: adapters on and off; test_export.py: fusing and shards).
"""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from mlx_dpo import compat

TESTED = {"mlx": "0.32.4", "mlx-lm": "0.32.2"}
LATEST = os.environ.get("MLX_DPO_TEST_LATEST") == "1"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    every = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in every if Requirement(r).name in TESTED]


def test_pyproject_bounds_mlx_and_mlx_lm_to_the_tested_versions_below_the_next_minor():
    found = requirements()
    assert {r.name for r in found} == set(TESTED) and len(found) == 4  # darwin, linux, cuda; mlx-lm
    for r in found:
        tested = Version(TESTED[r.name])
        next_minor = Version(f"{tested.major}.{tested.minor + 1}")
        assert {(s.operator, s.version) for s in r.specifier} == {(">=", str(tested)), ("<", str(next_minor))}, r


@pytest.mark.skipif(LATEST, reason="make test-latest: the newest mlx and mlx-lm, not the tested ones")
def test_the_suite_runs_on_the_tested_mlx_and_mlx_lm():
    installed = {name: importlib.metadata.version(name) for name in TESTED}
    assert installed == TESTED, "update TESTED and pyproject.toml's bounds together, after `make test-latest`"


def test_mlx_weight_errors_are_still_worded_as_compat_reads_them():
    layer = nn.Linear(2, 3)
    cases = {
        ("shape", "3, 2", "4, 2", "weight"): [("weight", mx.zeros((4, 2))), ("bias", mx.zeros(3))],
        ("missing", "1", "bias."): [("weight", mx.zeros((3, 2)))],
        ("extra", "1", "extra."): [("weight", mx.zeros((3, 2))), ("bias", mx.zeros(3)), ("extra", mx.zeros(1))],
    }
    for expected, weights in cases.items():
        with pytest.raises(ValueError) as e:
            layer.load_weights(weights, strict=True)
        assert compat.weights_mismatch(str(e.value)) == expected
    assert compat.weights_mismatch("something else entirely") is None


def test_mlx_lms_private_model_lookup_still_answers_for_known_and_unknown_families():
    assert compat.architecture_known({"model_type": "llama"})
    assert compat.architecture_known({"model_type": "mistral"})
    assert not compat.architecture_known({"model_type": "no-such-family"})
