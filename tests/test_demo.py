"""`make demo` (`python -m mlx_dpo.demo`) end to end, on a tiny model and two steps, so it cannot break unseen.

The demo itself runs the embedded default model for twelve steps (minutes on a CPU); here the same code
runs with the module's tiny llama, six of the shipped pairs and a shorter run: the doctor line, an answer, DPO on the shipped pairs,
the answers before and after, the adapter saved.
"""

from __future__ import annotations

import json

import mlx.core as mx

from helpers import write_demo_pairs
from mlx_dpo import demo


def test_the_demo_answers_trains_on_the_shipped_pairs_and_saves_its_adapter(tmp_path, tiny, fresh_cache, capsys):
    out = tmp_path / "adapters" / "demo"
    pairs = write_demo_pairs(tmp_path / "demo_pairs.jsonl", 6)  # the shipped pairs' first rows: a short reference pass
    assert demo.main(model=str(tiny), adapter_dir=out, data=pairs,
                     run=dict(iters=2, lora_num_layers=2, save_every=2, compile=False)) == 0
    printed = capsys.readouterr().out

    assert printed.startswith("\n== mlx-dpo ") and "BLAS:" in printed
    assert "default model ready in" in printed and f"Q: {demo.QUESTION}\nA: " in printed
    assert "== DPO on demo_pairs.jsonl (2 steps, LoRA on the last 2 layers)" in printed
    assert "last report: accuracy " in printed and "reference cache 0 hits / " in printed
    assert f"== Q: {demo.STYLE_PROMPT}\nbefore: " in printed and "\nafter:  " in printed
    assert f"== adapter saved in {out}/" in printed

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["mlx_dpo"]["num_pairs"] == 6
    assert config["num_layers"] == 2
    weights = mx.load(str(out / "adapters.safetensors"))
    assert any(k.endswith("lora_b") and mx.abs(v).max().item() > 0 for k, v in weights.items())  # it trained
