"""The learning side of textrlhf: LM actor-critic policies for Stable-Baselines3, KL shaping, masks.

Quick start (one word changes the algorithm)::

    import agents
    env = agents.make_vec_text_env(n_envs=4, model="smollm2-135m-instruct", reward="sentiment")
    agent = agents.make_agent("ppo", env)   # "a2c", "trpo", "maskable_ppo", "rlhf_ppo", "rloo", "grpo", ...
    agent.learn(10_000)
    agent.policy.save_pretrained("runs/ppo-lm")   # a plain Hugging Face model folder

Plain SB3 works too, binding the KL buffer to its algorithm once (``make_agent`` does it)::

    model = PPO(agents.LMActorCriticPolicy, env, policy_kwargs={"model": "smollm2-135m-instruct"},
                rollout_buffer_class=agents.KLRolloutBuffer, gamma=1.0)
    model.rollout_buffer.bind(model)   # or model.learn(..., callback=agents.BindKLBuffer())

The KL penalty comes only from that buffer: an LM policy trained without it warns once, at its first
update (:class:`NoKLPenaltyWarning`). rl-baselines3-zoo takes the python hyperparameter files
``configs/zoo/{ppo,a2c,trpo}.py``, which set both (a YAML can name the policy but not the buffer class).

Every agent logs the same ``rlhf/*`` metrics once per rollout; :data:`RLHF_METRICS` lists them.

Hand-written loops use :func:`reference_logprobs`, :func:`kl_estimate`, :func:`shape_rewards` and the
KL controllers directly.
"""

from agents.buffers import BindKLBuffer, KLBufferNotBoundError, KLRolloutBuffer, MaskableKLRolloutBuffer
from agents.callbacks import RLHF_METRICS, RLHFHistory
from agents.critic_free import CriticFreePG
from agents.evaluation import evaluate_policy, win_rate
from agents.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLConfig,
    KLController,
    kl_estimate,
    reference_logprobs,
    shape_rewards,
)
from agents.masking import ReferenceMaskWrapper, TokenSubsetMaskWrapper, reference_mask
from agents.name_clash import PackageNameClashWarning, warn_on_name_clash
from agents.policy import LMActorCriticPolicy, MaskableLMActorCriticPolicy, NoKLPenaltyWarning
from agents.registry import (
    AlgorithmSpec,
    available_algorithms,
    make_agent,
    make_vec_text_env,
    register_algorithm,
)
from agents.rlhf_ppo import RLHFPPO
from agents.rollout import EpisodeBatch, collect_round, sequence_forward
from agents.saved_agent import AgentClassMismatchError
from agents.sequence_agent import SequenceAgent
from agents.vec_env import TextRLHFVecEnv, text_vector_env
from textrlhf.lm import KVCacheRunner, position_ids_from_mask, sample_tokens

__all__ = [
    "AgentClassMismatchError",
    "BindKLBuffer",
    "KLBufferNotBoundError",
    "KLController",
    "SequenceAgent",
    "PackageNameClashWarning",
    "CriticFreePG",
    "EpisodeBatch",
    "RLHF_METRICS",
    "RLHFHistory",
    "RLHFPPO",
    "collect_round",
    "evaluate_policy",
    "sample_tokens",
    "sequence_forward",
    "win_rate",
    "AdaptiveKLController",
    "AlgorithmSpec",
    "FixedKLController",
    "KLConfig",
    "KLRolloutBuffer",
    "KVCacheRunner",
    "LMActorCriticPolicy",
    "MaskableKLRolloutBuffer",
    "MaskableLMActorCriticPolicy",
    "NoKLPenaltyWarning",
    "ReferenceMaskWrapper",
    "TextRLHFVecEnv",
    "TokenSubsetMaskWrapper",
    "available_algorithms",
    "kl_estimate",
    "make_agent",
    "make_vec_text_env",
    "position_ids_from_mask",
    "reference_logprobs",
    "reference_mask",
    "text_vector_env",
    "register_algorithm",
    "shape_rewards",
]

warn_on_name_clash()
