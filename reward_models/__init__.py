"""Everything that scores text: the batched reward protocol, rule rewards, preference reward models.

The light parts (protocol, rule rewards, normalisation, preference data, the reward-model configs)
import eagerly; the parts that need ``torch``/``transformers`` (the Bradley-Terry reward model, the
simulated annotator) are imported on first attribute access, so ``import reward_models`` stays fast.
"""

from reward_models.base import (
    CallableReward,
    RewardFunction,
    available_rewards,
    check_scores,
    make_reward,
    register_reward,
)
from reward_models.config import RewardModelConfig, RewardTrainingConfig
from reward_models.normalization import NormalizedReward, fit_gain_bias
from reward_models.preferences import PreferencePair, load_preferences, save_preferences, split_by_prompt
from reward_models.rules import KeywordReward, LengthReward, SentimentReward, WeightedSumReward

_LAZY = {
    "BradleyTerryRewardModel": "reward_models.bradley_terry",
    "BradleyTerryTrainer": "reward_models.bradley_terry",
    "bradley_terry_loss": "reward_models.bradley_terry",
    "evaluate_preferences": "reward_models.bradley_terry",
    "train_reward_model": "reward_models.bradley_terry",
    "AnnotatorConfig": "reward_models.annotator",
    "generate_preference_pairs": "reward_models.annotator",
    "load_prompt_file": "reward_models.annotator",
    "write_pairs": "reward_models.annotator",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reward_models' has no attribute {name!r}")


__all__ = [
    "AnnotatorConfig",
    "BradleyTerryRewardModel",
    "BradleyTerryTrainer",
    "CallableReward",
    "KeywordReward",
    "LengthReward",
    "NormalizedReward",
    "PreferencePair",
    "RewardFunction",
    "RewardModelConfig",
    "RewardTrainingConfig",
    "SentimentReward",
    "WeightedSumReward",
    "available_rewards",
    "bradley_terry_loss",
    "check_scores",
    "evaluate_preferences",
    "fit_gain_bias",
    "generate_preference_pairs",
    "load_preferences",
    "load_prompt_file",
    "make_reward",
    "register_reward",
    "save_preferences",
    "split_by_prompt",
    "train_reward_model",
    "write_pairs",
]
