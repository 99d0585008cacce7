"""The three scripts end to end, with the tiny policy and a tiny random BERT reward model."""

from __future__ import annotations

import json

import pytest

from reward_models.preferences import load_preferences
from scripts import evaluate_reward_model, generate_preferences, train_reward_model

from .conftest import TINY_BERT


def test_generate_train_evaluate(tmp_path):
    pairs_path = tmp_path / "pairs.jsonl"
    meta = generate_preferences.main(
        [
            "--policy",
            "tiny",
            "--output",
            str(pairs_path),
            "--max-prompts",
            "12",
            "--samples-per-prompt",
            "3",
            "--max-new-tokens",
            "8",
            "--min-gap",
            "0",
            "--no-progress",
        ]
    )
    assert meta["counts"]["pairs"] == len(load_preferences(pairs_path)) > 0
    model_dir = tmp_path / "rm"
    metrics = train_reward_model.main(
        [
            "--pairs",
            str(pairs_path),
            "--run-dir",
            str(model_dir),
            "--random-init",
            "--config-overrides",
            json.dumps(TINY_BERT),
            "--num-epochs",
            "1",
            "--max-length",
            "32",
            "--eval-fraction",
            "0.25",
            "--no-progress",
        ]
    )
    assert metrics["steps"] >= 1 and (model_dir / "reward_model.json").exists()
    report = evaluate_reward_model.main(
        [
            "--model",
            str(model_dir),
            "--policy",
            "tiny",
            "--samples-per-prompt",
            "2",
            "--max-new-tokens",
            "6",
            "--split",
            "test",
            "--no-progress",
        ]
    )
    assert 0.0 <= report["heldout"]["accuracy"] <= 1.0
    assert report["fresh"]["samples"] > 0
    assert json.loads((model_dir / "eval_report.json").read_text())["fresh"]["prompts"] > 0


def test_help_lists_field_docs(capsys):
    with pytest.raises(SystemExit):
        train_reward_model.main(["--help"])
    assert "Share of prompts held out" in capsys.readouterr().out
