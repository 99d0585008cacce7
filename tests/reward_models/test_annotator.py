"""The simulated annotator with the tiny random policy (fast, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reward_models import make_reward
from reward_models.annotator import (
    AnnotatorConfig,
    generate_preference_pairs,
    label_pairs,
    load_prompt_file,
    sample_responses,
    write_pairs,
)
from reward_models.preferences import load_preferences

CFG = {"policy": "tiny", "samples_per_prompt": 3, "max_new_tokens": 8, "batch_size": 12, "seed": 0}


@pytest.fixture(scope="module")
def tiny_policy():
    from textrlhf.models import load_model, load_tokenizer

    return load_model("tiny"), load_tokenizer("tiny")


@pytest.fixture(scope="module")
def prompts():
    return load_prompt_file(task="review", split="train")[:6]


def test_pairs_written_and_labels_follow_the_annotator(tiny_policy, prompts, tmp_path):
    rows, meta = generate_preference_pairs(prompts, CFG, *tiny_policy, progress=False)
    assert meta["counts"]["candidates"] == 6 * 3
    assert meta["counts"]["pairs"] == len(rows) > 0
    sentiment = make_reward("sentiment")
    for row in rows:
        chosen, rejected = sentiment.score([row["prompt"]] * 2, [row["chosen"], row["rejected"]])
        assert chosen > rejected
        assert row["score_chosen"] == pytest.approx(float(chosen))
        assert (row["annotator"], row["seed"], row["sampling_temperature"]) == ("sentiment", 0, 1.0)
    write_pairs(rows, tmp_path / "pairs.jsonl", meta)
    assert len(load_preferences(tmp_path / "pairs.jsonl")) == len(rows)
    sidecar = json.loads((tmp_path / "pairs.jsonl.meta.json").read_text())
    assert sidecar["config"]["annotator"] == "sentiment"


def test_seed_reproducibility(tiny_policy, prompts):
    a, _ = generate_preference_pairs(prompts, CFG, *tiny_policy, progress=False)
    b, _ = generate_preference_pairs(prompts, CFG, *tiny_policy, progress=False)
    c, _ = generate_preference_pairs(prompts, {**CFG, "seed": 1}, *tiny_policy, progress=False)
    assert a == b
    assert a != c


def test_sampling_draws_by_inverse_cdf_in_the_resolved_precision(tiny_policy, prompts):
    """The sampler is ``generate(method="inverse_cdf")`` under the seed, on a cast copy of the caller's model
    in the configured precision (recorded in the metadata); the caller's fp32 model is left as it was."""
    from textrlhf.lm import generate

    model, tok = tiny_policy
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        cfg = {**CFG, "precision": precision, "min_gap": 0.0}
        sampler = _cast(model, dtype)
        got = sample_responses(sampler, tok, prompts, 3, max_new_tokens=8, batch_size=18, seed=0, progress=False)
        torch.manual_seed(0)
        enc = tok([p for p in prompts for _ in range(3)], return_tensors="pt", padding=True)
        eos = model.generation_config.eos_token_id
        ref = generate(sampler, enc["input_ids"], enc["attention_mask"], 8, pad_token_id=tok.pad_token_id,
                       eos_token_id=eos, temperature=1.0, method="inverse_cdf")  # fmt: skip
        texts = tok.batch_decode(ref.tokens, skip_special_tokens=True)
        assert [r for group in got for r in group] == texts
        rows, meta = generate_preference_pairs(prompts, cfg, model, tok, progress=False)
        cast_rows, _ = generate_preference_pairs(prompts, cfg, _cast(model, dtype), tok, progress=False)
        assert meta["precision"] == precision and meta["config"]["precision"] == precision
        assert rows == cast_rows and rows  # passing the fp32 model samples what a cast model samples
        assert next(model.parameters()).dtype is torch.float32  # the caller's model is untouched


def _cast(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype)


def test_ties_and_min_gap_are_skipped():
    rows, counts = label_pairs(["p"], [["x", "y", "z"]], [[0.0, 0.0, 0.5]], min_gap=0.0)
    assert counts["skipped_ties"] == 1 and len(rows) == 2
    rows, counts = label_pairs(["p"], [["x", "y", "z"]], [[0.0, 0.1, 0.5]], min_gap=0.2)
    assert counts["skipped_ties"] == 1 and {r["chosen"] for r in rows} == {"z"}
    rows, counts = label_pairs(["p"], [["x", "x", ""]], [[0.0, 1.0, 2.0]])
    assert counts["skipped_invalid"] == 3 and not rows


def test_noisy_labels_follow_bradley_terry_probability():
    n = 4000
    responses = [["a", "b"]] * n
    scores = [[1.0, 0.0]] * n
    rows, counts = label_pairs(["p"] * n, responses, scores, noise_temperature=1.0, seed=0)
    wins = np.mean([r["chosen"] == "a" for r in rows])
    assert wins == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.03)
    assert counts["flipped"] == n - int(wins * n)


def test_config_validation(prompts):
    with pytest.raises(ValueError, match="valid keys"):
        generate_preference_pairs(prompts, {"polcy": "tiny"})
    with pytest.raises(ValueError, match="samples_per_prompt"):
        AnnotatorConfig(samples_per_prompt=1)
    with pytest.raises(ValueError, match="precision must be one of"):
        AnnotatorConfig(precision="fp16")
    with pytest.raises(ValueError, match="bad index: 1"):
        generate_preference_pairs(["ok", " "], CFG)
    with pytest.raises(ValueError, match="no prompts"):
        load_prompt_file(task="nope")
