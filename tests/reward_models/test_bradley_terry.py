"""The Bradley-Terry reward model: loss, training, normalisation, persistence, protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reward_models import (
    BradleyTerryRewardModel,
    RewardModelConfig,
    RewardTrainingConfig,
    bradley_terry_loss,
    config_from_dict,
    evaluate_preferences,
    make_reward,
    train_reward_model,
)
from reward_models.base import RewardFunction

from .conftest import synthetic_pairs, tiny_model


def test_loss_is_ln2_for_identical_sides():
    r = torch.randn(7)
    assert bradley_terry_loss(r, r.clone()).item() == pytest.approx(math.log(2), abs=1e-6)


def test_loss_decreases_with_the_gap_and_respects_margin():
    c, r = torch.tensor([2.0]), torch.tensor([0.0])
    assert bradley_terry_loss(c, r).item() < math.log(2)
    assert bradley_terry_loss(c, r, margin=2.0).item() == pytest.approx(math.log(2), abs=1e-6)


def test_training_reaches_high_accuracy_and_changes_parameters(trained_model):
    metrics = trained_model["metrics"]
    # Accuracy 1.0 on every seed 0-7 (`make sweep ARGS=reward_model`, 2026-11-30).
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["eval_mean_margin"] > 0
    after = trained_model["model"].state_dict()
    changed = [k for k, v in trained_model["before"].items() if not torch.equal(v, after[k])]
    assert "head.weight" in changed
    assert any(k.startswith("backbone.") for k in changed)


def test_untrained_model_is_near_chance():
    result = evaluate_preferences(tiny_model(), synthetic_pairs(40, seed=3))
    assert result["loss"] == pytest.approx(math.log(2), abs=0.2)


def test_accuracy_interval_resamples_whole_prompts():
    from reward_models import PreferencePair

    model = tiny_model()
    # 40 pairs under 8 prompts: 8 resampling units, each with its 5 pairs.
    pairs = [PreferencePair(f"prompt {i % 8}", p.chosen, p.rejected) for i, p in enumerate(synthetic_pairs(40, seed=3))]
    plain = evaluate_preferences(model, pairs)
    assert "accuracy_low" not in plain
    result = evaluate_preferences(model, pairs, n_resamples=300, seed=1)
    assert result["accuracy_low"] <= result["accuracy"] == plain["accuracy"] <= result["accuracy_high"]
    # Naive: draw prompts as the bootstrap does (one generator, one draw of 8 per resample), gather their pairs.
    raw = model.raw_scores([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    correct = raw[: len(pairs)] > raw[len(pairs) :]
    units = list(dict.fromkeys(p.prompt for p in pairs))
    rng = np.random.default_rng(1)
    draws = []
    for _ in range(300):
        drawn = [units[u] for u in rng.integers(0, len(units), len(units))]
        draws.append(np.mean([c for u in drawn for c, p in zip(correct, pairs) if p.prompt == u]))
    assert [result["accuracy_low"], result["accuracy_high"]] == pytest.approx(np.quantile(draws, [0.025, 0.975]))
    # One prompt leaves nothing to resample: no interval rather than a zero-width one.
    single = [PreferencePair("one", p.chosen, p.rejected) for p in pairs]
    assert "accuracy_low" not in evaluate_preferences(model, single, n_resamples=300)


def test_normalization_gives_mean_0_std_1(trained_model):
    model = trained_model["model"]
    pairs = trained_model["pairs"]
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    gain, bias = model.fit_normalization(prompts, responses)
    scores = model.score(prompts, responses)
    assert scores.dtype == np.float32 and scores.shape == (len(prompts),)
    assert abs(float(scores.mean())) < 1e-5
    assert abs(float(scores.std()) - 1.0) < 1e-4
    assert gain > 0


def test_save_load_round_trip_and_make_reward(trained_model, tmp_path):
    model = trained_model["model"]
    pairs = trained_model["pairs"][:30]
    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    model.gain, model.bias = 2.5, -0.5
    model.save_pretrained(tmp_path / "rm", metadata={"note": "test"})
    model.save_pretrained(tmp_path / "rm")  # overwriting an existing folder works
    for name in ("reward_model.json", "reward_head.safetensors", "config.json", "model.safetensors"):
        assert (tmp_path / "rm" / name).exists()
    loaded = BradleyTerryRewardModel.from_pretrained(tmp_path / "rm")
    np.testing.assert_array_equal(loaded.score(prompts, responses), model.score(prompts, responses))
    assert (loaded.gain, loaded.bias) == (2.5, -0.5)
    reward = make_reward(str(tmp_path / "rm"))
    assert isinstance(reward, RewardFunction)
    np.testing.assert_array_equal(reward.score(prompts, responses), model.score(prompts, responses))
    assert not list(tmp_path.glob("rm.tmp-*")) and not list(tmp_path.glob("rm.old-*"))


def test_from_pretrained_rejects_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="reward_model.json"):
        BradleyTerryRewardModel.from_pretrained(tmp_path)


def test_score_is_eval_mode_no_grad_and_batch_independent(trained_model):
    model = trained_model["model"]
    pairs = synthetic_pairs(9, seed=5)
    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    model.train()
    a = model.score(prompts, responses)
    assert model.training  # the caller's mode is restored
    model.eval()
    b = np.concatenate([model.score(prompts[i : i + 1], responses[i : i + 1]) for i in range(len(prompts))])
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_dropout_stays_off_while_training():
    model = tiny_model()
    model.backbone.config.hidden_dropout_prob = 0.5
    enc = model.tokenize(["a prompt"] * 2, ["some response", "another one"])
    model.train()
    assert not model.backbone.training
    torch.testing.assert_close(model(**enc), model(**enc))


def test_causal_trunk_reads_last_real_token():
    model = BradleyTerryRewardModel.build(backbone="tiny")
    assert model.causal and model.pooling == "last" and model.tokenizer.padding_side == "left"
    prompts, responses = ["Hello there", "A much longer prompt about a film that"], [" friend", " was great fun"]
    batched = model.score(prompts, responses)
    single = np.concatenate([model.score([p], [r]) for p, r in zip(prompts, responses)])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_configs_reject_unknown_keys():
    with pytest.raises(ValueError, match="valid keys.*learning_rate"):
        config_from_dict(RewardTrainingConfig, {"lr": 1e-3})
    with pytest.raises(ValueError, match="valid keys.*backbone"):
        BradleyTerryRewardModel.build({"backbon": "minilm"})
    with pytest.raises(ValueError, match="pooling"):
        RewardModelConfig(pooling="max")
    with pytest.raises(ValueError, match="no training pairs"):
        train_reward_model(tiny_model(), [], None, {"progress_bar": False})


def test_every_public_name_resolves_from_the_package():
    """``from reward_models import X`` for every exported name, each from the module of its concept."""
    import reward_models

    for name in reward_models.__all__:
        assert getattr(reward_models, name) is not None, name
    assert reward_models.BradleyTerryRewardModel.__module__ == "reward_models.bradley_terry"
    assert reward_models.train_reward_model.__module__ == "reward_models.bt_training"
    assert reward_models.minilm_path.__module__ == "reward_models.bt_backbone"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        reward_models.nope  # noqa: B018  (the attribute access is the test)


def test_training_builds_the_trainer_class_of_bt_training(monkeypatch):
    """The pipeline swaps ``reward_models.bt_training.BradleyTerryTrainer`` to record the loss curve
    (``scripts.stages.reward.capture_trainer_logs``): training must look the class up there."""
    import reward_models.bt_training as bt

    history: list[dict] = []

    class Recording(bt.BradleyTerryTrainer):
        def train(self, *args, **kwargs):
            result = super().train(*args, **kwargs)
            history.extend(self.state.log_history)
            return result

    monkeypatch.setattr(bt, "BradleyTerryTrainer", Recording)
    config = {"num_epochs": 1, "batch_size": 8, "logging_steps": 1, "progress_bar": False}
    metrics = train_reward_model(tiny_model(), synthetic_pairs(16), None, config)
    assert metrics["steps"] == 2
    assert [h["loss"] for h in history if "loss" in h], history
