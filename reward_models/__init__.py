"""Everything that scores text: the batched reward protocol, rule rewards, preference reward models."""

from reward_models.base import (
    CallableReward,
    RewardFunction,
    available_rewards,
    check_scores,
    make_reward,
    register_reward,
)
from reward_models.rules import KeywordReward, LengthReward, SentimentReward, WeightedSumReward

__all__ = [
    "CallableReward",
    "KeywordReward",
    "LengthReward",
    "RewardFunction",
    "SentimentReward",
    "WeightedSumReward",
    "available_rewards",
    "check_scores",
    "make_reward",
    "register_reward",
]
