"""Everything that scores text: the batched reward protocol, rule rewards, preference reward models.

The light parts (protocol, rule rewards, normalisation, preference data, the reward-model configs)
import eagerly; the parts that need ``torch``/``transformers`` (the Bradley-Terry reward model, its
backbones, training and saved folders, the simulated annotator) are imported on first attribute access,
so ``import reward_models`` stays fast. Import the public names from here: ``from reward_models import
BradleyTerryRewardModel, train_reward_model``.
"""

from reward_models.base import (
    CallableReward,
    RewardFunction,
    available_rewards,
    check_scores,
    make_reward,
    register_reward,
)
from reward_models.config import RewardModelConfig, RewardTrainingConfig, config_from_dict
from reward_models.normalization import NormalizedReward, fit_gain_bias
from reward_models.preferences import PreferencePair, load_preferences, save_preferences, split_by_prompt
from reward_models.rules import (
    KeywordReward,
    LengthReward,
    PatternSentimentReward,
    SentimentReward,
    WeightedSumReward,
)

_LAZY = {
    "BradleyTerryRewardModel": "reward_models.bradley_terry",
    "bradley_terry_loss": "reward_models.bradley_terry",
    "minilm_path": "reward_models.bt_backbone",
    "BradleyTerryTrainer": "reward_models.bt_training",
    "evaluate_preferences": "reward_models.bt_training",
    "train_reward_model": "reward_models.bt_training",
    "AnnotatorConfig": "reward_models.annotator",
    "generate_preference_pairs": "reward_models.annotator",
    "load_prompt_file": "reward_models.annotator",
    "write_pairs": "reward_models.annotator",
}


def __getattr__(name: str):
    """Import the torch-backed names of :data:`_LAZY` on first access (PEP 562)."""
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
    "PatternSentimentReward",
    "SentimentReward",
    "WeightedSumReward",
    "available_rewards",
    "bradley_terry_loss",
    "check_scores",
    "config_from_dict",
    "evaluate_preferences",
    "fit_gain_bias",
    "generate_preference_pairs",
    "load_preferences",
    "load_prompt_file",
    "make_reward",
    "minilm_path",
    "register_reward",
    "save_preferences",
    "split_by_prompt",
    "train_reward_model",
    "write_pairs",
]
