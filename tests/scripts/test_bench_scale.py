"""scripts/bench_scale.py on the tiny model: one child per cell, the JSON and the table."""

from __future__ import annotations

import json

from scripts.bench_scale import estimate_bytes, main, markdown


def test_tiny_full_and_lora_cells(tmp_path):
    assert main(["--shapes", "tiny", "--lora-ranks", "0", "4", "--iterations", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    full, lora = rows
    assert (full["lora_r"], lora["lora_r"]) == (0, 4) and not full["skipped"] and not lora["skipped"]
    assert full["params"] == full["trainable"] > 0  # every weight trains (the LM and the value head)
    assert 0 < lora["trainable"] < 0.1 * lora["params"]
    assert full["tokens"] == lora["tokens"] == 4 * 16 and full["tokens_per_s"] > 0
    assert full["peak_rss_gb"] > 0
    assert "| tiny | 4 |" in (tmp_path / "scale.md").read_text()


def test_a_cell_that_does_not_fit_is_reported_not_run():
    assert estimate_bytes(1_000, 1_000, lora=False) == 4 * 1_000 * 2 + 12 * 1_000
    table = markdown([{"shape": "1.7b-shaped", "lora_r": 0, "params": 1.7e9, "estimate_gb": 34.2, "skipped": True}])
    assert "not run: does not fit" in table and "34.2" in table
