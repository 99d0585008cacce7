"""scripts/bench_sampling.py on the tiny model: every setting is timed, seeded and written to the JSON."""

import json

from scripts import bench_sampling


def test_bench_sampling_writes_every_setting(tmp_path):
    args = ["--model", "tiny", "--prompts", "3", "--samples-per-prompt", "2", "--batch-size", "4"]
    result = bench_sampling.main([*args, "--max-new-tokens", "4", "--repeats", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "sampling.json").read_text())
    keys = {"fp32/multinomial", "fp32/inverse_cdf", "bf16/multinomial", "bf16/inverse_cdf"}
    assert set(saved["tokens_per_s"]) == keys and saved["resolved"] == {"fp32": "fp32", "bf16": "bf16"}
    assert saved["ratio_to_fp32_multinomial"]["fp32/multinomial"] == 1.0
    for runs in result["runs"].values():
        assert len(runs) == 2 and runs[0]["tokens"] == runs[1]["tokens"] > 0  # seeded: the same tokens each pass
        assert all(r["tokens_per_s"] > 0 for r in runs)
