"""Specification of damaged or mismatched model folders: one line naming the file and what is wrong, exit 2.

Each case copies the tiny model's folder and damages one thing in it.
"""

import json
import shutil

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model as mlx_load_model
from mlx_lm.utils import quantize_model

from mlx_dpo.cli import main
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.models.load import load_model

TINY_SEED = 17
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def set_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))


def cut_in_half(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


# (damage, the file the message names (relative to the folder; "" is the folder), what it says)
CASES = {
    "missing-tokenizer": (lambda d: [(d / n).unlink() for n in TOKENIZER], "", "no tokenizer (tokenizer.json"),
    "broken-tokenizer": (
        lambda d: (d / "tokenizer.json").write_text("{oops"),
        "",
        "cannot load the tokenizer (Failed to parse tokenizer.json",
    ),
    "config-wider-than-weights": (
        lambda d: set_config(d, hidden_size=128),
        "model.safetensors",
        "model.embed_tokens.weight has shape (49152, 64) but config.json calls for "
        "(49152, 128); the config does not match the weights",
    ),
    "config-with-more-layers": (
        lambda d: set_config(d, num_hidden_layers=3),
        "config.json",
        "calls for 9 parameter(s) the weights lack (e.g. model.layers.2.",
    ),
    "truncated-weights": (
        lambda d: cut_in_half(d / "model.safetensors"),
        "model.safetensors",
        "truncated or not a safetensors file (",
    ),
    "weights-cut-inside-the-header": (
        lambda d: (d / "model.safetensors").write_bytes(b"\x10\x27" + b"\0" * 10),
        "model.safetensors",
        "truncated or not a safetensors file (12 bytes",
    ),
    "unknown-architecture": (
        lambda d: set_config(d, model_type="no_such_arch"),
        "config.json",
        "model_type 'no_such_arch' is not an architecture mlx-lm",
    ),
    "no-model-type": (lambda d: set_config(d, model_type=""), "config.json", "no model_type"),
    "missing-config": (lambda d: (d / "config.json").unlink(), "", "not a model folder (no config.json)"),
    "missing-weights": (lambda d: (d / "model.safetensors").unlink(), "", "no model*.safetensors weights"),
}


@pytest.fixture
def damaged(tiny, tmp_path):
    def make(damage):
        folder = tmp_path / "model"
        shutil.copytree(tiny, folder)
        damage(folder)
        return folder

    return make


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_damage_is_one_line_naming_the_file_and_what_is_wrong(damaged, case):
    damage, file, fragment = CASES[case]
    folder = damaged(damage)
    with pytest.raises(MlxDpoError) as info:
        load_model(str(folder))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / file if file else folder}: "), message
    assert fragment in message


def test_quantized_weights_under_a_config_of_other_shapes_are_named_not_a_traceback(tiny, tmp_path):
    folder = tmp_path / "quantized"
    shutil.copytree(tiny, folder)
    model, config = quantize_model(*mlx_load_model(folder), 32, 4)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config | {"intermediate_size": 256}))
    with pytest.raises(MlxDpoError) as info:
        load_model(str(folder))
    assert str(info.value).startswith(f"{folder / 'model.safetensors'}: model.layers.0.mlp.")
    assert "the config does not match the weights" in str(info.value)


def test_from_the_command_line_it_is_exit_2_and_one_line(damaged, capsys):
    folder = damaged(lambda d: set_config(d, hidden_size=128))
    assert main(["generate", "--model", str(folder), "--prompt", "hi"]) == 2  # the command's own entry, in-process
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mlx-dpo: error: {folder / 'model.safetensors'}: ")
    assert line.endswith("the config does not match the weights")
