"""One registry ``name -> (SB3 algorithm, LM policy, KL buffer, RLHF defaults)`` and ``make_agent``.

Swapping algorithms is one word::

    env = agents.make_vec_text_env(n_envs=4, model="smollm2-135m-instruct", reward="sentiment")
    agent = agents.make_agent("ppo", env)          # or "a2c", "trpo", "maskable_ppo"
    agent.learn(20_000)

The algorithms are SB3's / sb3-contrib's own classes (TRPO through :class:`agents.trpo.LMTRPO`, which
only batches its actor-gradient computation); ``make_agent`` only fills in the
policy (:mod:`agents.policy`), the KL-shaping rollout buffer (:mod:`agents.buffers`) and defaults
suited to RLHF. Every default can be overridden by keyword.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.buffers import KLRolloutBuffer, MaskableKLRolloutBuffer
from agents.distributed import launched_world_size
from agents.kl import KLConfig
from agents.policy import DEFAULT_TEMPERATURE, LMActorCriticPolicy, MaskableLMActorCriticPolicy
from agents.trpo import LMTRPO

KL_OPTIONS = tuple(f.name for f in dataclasses.fields(KLConfig))  # kl_coef, adaptive_kl, ... (one source)
"""KL-shaping options ``make_agent`` accepts directly (they go to ``rollout_buffer_kwargs``)."""

# Defaults shared by all algorithms, and why:
# - gamma 1: the score arrives once per episode and the horizon is short (lm-human-preferences,
#   TRL `gamma=1.0`); gae_lambda 0.95 (TRL `lam=0.95`).
# - normalize_advantage: advantage whitening (Huang et al. 2024, "N implementation details").
# - ent_coef 0: the KL penalty to the reference, not an entropy bonus, keeps the policy diverse.
# - vf_coef 0.1 (TRL `vf_coef=0.1`): the value loss shares the LM trunk and must not dominate it.
# - max_grad_norm 1.0 (TRL `max_grad_norm=1.0`).
# Learning rates. docs/design.md section 5 measured, on this CPU with SmolLM2-135M and a KL-penalised policy
# gradient (ONE Adam step per batch), that 1e-5 leaves the sentiment unchanged in a few minutes while
# 1e-4 moves it. PPO takes n_epochs * n_minibatches = 4 * 4 = 16 Adam steps per rollout, so its
# per-step learning rate is lower (3e-5); A2C takes one step per rollout (1e-4). TRPO's learning rate
# only drives the critic (the actor step is set by target_kl).
_COMMON: dict[str, Any] = {"gamma": 1.0, "gae_lambda": 0.95, "normalize_advantage": True}
_PPO: dict[str, Any] = {
    **_COMMON,
    "learning_rate": 3e-5,
    "n_epochs": 4,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.1,
    "max_grad_norm": 1.0,
}


@dataclass
class AlgorithmSpec:
    """What ``make_agent`` needs to build one algorithm.

    Attributes:
        algo_class: the SB3 / sb3-contrib class (used unmodified).
        policy_class: LM policy class it drives.
        buffer_class: KL-shaping rollout buffer class.
        defaults: RLHF default keyword arguments.
        policy_defaults: default ``policy_kwargs`` for this algorithm.
        minibatches: if > 0, ``batch_size = n_steps * n_envs // minibatches`` unless given.
        buffer_class: ``None`` for the sequence-level agents (:class:`agents.sequence_agent.SequenceAgent`:
            :mod:`agents.rlhf_ppo`, :mod:`agents.critic_free`), which take the KL options as constructor
            arguments; otherwise :func:`make_agent` binds the buffer to the algorithm it builds.
    """

    algo_class: type[BaseAlgorithm]
    policy_class: type
    buffer_class: type | None
    defaults: dict[str, Any] = field(default_factory=dict)
    minibatches: int = 0
    policy_defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, AlgorithmSpec] = {
    "ppo": AlgorithmSpec(PPO, LMActorCriticPolicy, KLRolloutBuffer, dict(_PPO), minibatches=4),
    "a2c": AlgorithmSpec(
        A2C,
        LMActorCriticPolicy,
        KLRolloutBuffer,
        {
            **_COMMON,
            "learning_rate": 1e-4,
            "ent_coef": 0.0,
            "vf_coef": 0.1,
            "max_grad_norm": 1.0,
            "use_rms_prop": False,  # SB3's A2C defaults to RMSprop; Adam is the standard for LM fine-tuning
        },
    ),
    "trpo": AlgorithmSpec(
        LMTRPO,
        LMActorCriticPolicy,
        KLRolloutBuffer,
        {
            **_COMMON,
            "learning_rate": 1e-4,
            "target_kl": 0.01,
            "n_critic_updates": 3,
            "cg_max_steps": 10,
        },
        minibatches=4,
        policy_defaults={"attn_implementation": "eager"},
    ),  # CG needs double backward
    "maskable_ppo": AlgorithmSpec(
        MaskablePPO, MaskableLMActorCriticPolicy, MaskableKLRolloutBuffer, dict(_PPO), minibatches=4
    ),
}
_ALIASES = {"maskableppo": "maskable_ppo", "ppo_mask": "maskable_ppo", "nlpo": "maskable_ppo"}
_REFUSED = {
    "recurrent_ppo": (
        "RecurrentPPO is not supported: its policy is an LSTM over per-step features, while an LM "
        "policy already conditions on the whole context in its observation (the KV cache plays the "
        "LSTM's role), and RecurrentPPO builds its own RecurrentDictRolloutBuffer without a "
        "rollout_buffer_class hook, so the KL penalty to the reference cannot be added. Use 'ppo'."
    ),
}
_REFUSED["ppo_lstm"] = _REFUSED["recurrentppo"] = _REFUSED["recurrent_ppo"]


def _register_sequence_agents() -> None:
    """The fast sequence-level agents (issue 8) and the critic-free ones (issue 7)."""
    from agents.critic_free import CriticFreePG
    from agents.rlhf_ppo import RLHFPPO

    _REGISTRY["rlhf_ppo"] = AlgorithmSpec(RLHFPPO, LMActorCriticPolicy, None, {"learning_rate": 3e-5, "n_epochs": 4})
    # docs/design.md section 5: a leave-one-out policy gradient with ONE Adam step per batch needs lr ~1e-4 on CPU.
    for name in ("reinforce", "rloo", "grpo", "reinforce_pp"):
        _REGISTRY[name] = AlgorithmSpec(
            CriticFreePG, LMActorCriticPolicy, None, {"estimator": name, "learning_rate": 1e-4, "n_epochs": 1}
        )


_register_sequence_agents()
_ALIASES.update(
    {
        "fast_ppo": "rlhf_ppo",
        "rlhfppo": "rlhf_ppo",
        "reinforce++": "reinforce_pp",
        "reinforce_plus_plus": "reinforce_pp",
    }
)


def _init_params(cls: type) -> set[str]:
    """Constructor parameter names of ``cls``, following ``**kwargs`` up the MRO."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names - {"self", "policy", "env", "_init_setup_model"}


def available_algorithms() -> list[str]:
    """Names accepted by :func:`make_agent`."""
    return sorted(_REGISTRY)


def register_algorithm(name: str, spec: AlgorithmSpec) -> None:
    """Add an algorithm under ``name`` (it must accept ``rollout_buffer_class``)."""
    if "rollout_buffer_class" not in inspect.signature(spec.algo_class.__init__).parameters:
        raise ValueError(f"{spec.algo_class.__name__} takes no rollout_buffer_class, so KL shaping cannot be added")
    _REGISTRY[name.lower()] = spec


def get_spec(name: str) -> AlgorithmSpec:
    """The :class:`AlgorithmSpec` of ``name``.

    Raises:
        ValueError: unknown or unsupported name, listing the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"algorithm name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in _REFUSED:
        raise ValueError(_REFUSED[key])
    if key not in _REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; valid: {available_algorithms()}")
    return _REGISTRY[key]


def env_config(env: gym.Env | VecEnv):
    """The ``EnvConfig`` of a (wrapped or vectorised) ``TextRLHF-v0`` env."""
    if isinstance(env, VecEnv):
        return env.get_attr("config", indices=[0])[0]
    return env.unwrapped.config


def make_agent(
    name: str,
    env: gym.Env | VecEnv,
    *,
    model: str | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    policy_kwargs: dict[str, Any] | None = None,
    rollout_buffer_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> BaseAlgorithm:
    """Build an SB3 algorithm that trains an LM on ``TextRLHF-v0`` with the KL-penalised objective.

    Args:
        name: ``"ppo"``, ``"a2c"``, ``"trpo"`` or ``"maskable_ppo"`` (see :func:`available_algorithms`).
        env: a ``TextRLHF-v0`` VecEnv (:func:`make_vec_text_env`), or a single (wrapped) env, which is
            wrapped in SB3's ``Monitor`` (unless it has one) and a one-env ``DummyVecEnv`` as SB3 does.
        model: policy LM name (default: the env's model, whose tokenizer the env uses).
        temperature: sampling temperature (also used for every log-prob).
        policy_kwargs: more :class:`agents.LMActorCriticPolicy` options (names and numbers only).
        rollout_buffer_kwargs: KL options (:class:`agents.KLRolloutBuffer`); the same options
            (``kl_coef``, ``adaptive_kl``, ``kl_target``, ``kl_horizon``, ``kl_estimator``, ``kl_mode``)
            may also be passed directly.
        **kwargs: options of the algorithm class (``learning_rate``, ``n_steps``, ``seed``, ...),
            overriding the RLHF defaults. ``n_steps`` defaults to 2 x ``max_new_tokens`` so every
            rollout holds at least two whole episodes per env.

    Returns:
        The algorithm instance, with its KL buffer bound to its policy.

    Raises:
        ValueError: unknown algorithm name.
        TypeError: unknown keyword argument (the message lists the valid ones).
    """
    spec = get_spec(name)
    env = _as_vec_env(spec, env, kwargs.get("verbose", 0))
    cfg = env_config(env)
    if spec.buffer_class is None:
        return _make_sequence_agent(
            name, spec, env, model or cfg.model, temperature, policy_kwargs, rollout_buffer_kwargs, kwargs
        )
    if launched_world_size() > 1:
        fast = sorted(n for n in available_algorithms() if get_spec(n).buffer_class is None)
        raise ValueError(
            f"{name!r} runs in one process (SB3 has no distributed training), but this process was launched as "
            f"one of {launched_world_size()} (torchrun / accelerate launch); launch one process, or train "
            f"data-parallel with a fast agent: {fast}"
        )
    buffer_kwargs = dict(rollout_buffer_kwargs or {})
    for key in KL_OPTIONS:
        if key in kwargs:
            buffer_kwargs[key] = kwargs.pop(key)
    valid = _init_params(spec.algo_class)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for {name!r}; valid: {sorted(valid | set(KL_OPTIONS))} "
            f"plus model, temperature, policy_kwargs"
        )
    if "rollout_buffer_class" in kwargs:
        raise TypeError("make_agent sets rollout_buffer_class itself (the KL buffer); use SB3 directly to replace it")
    options = {**spec.defaults, **kwargs}
    n_envs = env.num_envs
    options.setdefault("n_steps", 2 * cfg.max_new_tokens)
    if spec.minibatches and "batch_size" not in options:
        total = options["n_steps"] * n_envs
        # the largest divisor of the rollout size not above total / minibatches (no truncated minibatch)
        target = max(2, total // spec.minibatches)
        options["batch_size"] = max([d for d in range(2, target + 1) if total % d == 0] or [total])
    pkw = {"model": model or cfg.model, "temperature": temperature, **spec.policy_defaults, **(policy_kwargs or {})}
    agent = spec.algo_class(
        spec.policy_class,
        env,
        policy_kwargs=pkw,
        rollout_buffer_class=spec.buffer_class,
        rollout_buffer_kwargs=buffer_kwargs,
        **options,
    )
    agent.rollout_buffer.bind(agent)
    return agent


def _as_vec_env(spec: AlgorithmSpec, env: gym.Env | VecEnv, verbose: int) -> VecEnv:
    """A single env wrapped as SB3's constructors and ``load`` wrap it; a VecEnv unchanged.

    SB3's own ``_wrap_env`` (``Monitor`` unless already monitored, then a one-env ``DummyVecEnv``) is
    used rather than a copy of it, so every agent gets exactly SB3's wrapping, the fast agents too
    (their constructors take only VecEnvs: they step the sub-envs themselves).
    """
    if isinstance(env, VecEnv):
        return env
    if not isinstance(env, gym.Env):
        raise TypeError(f"env must be a TextRLHF-v0 gymnasium env or a VecEnv of them, got {type(env).__name__}")
    return spec.algo_class._wrap_env(env, verbose)


def _make_sequence_agent(name, spec, env, model, temperature, policy_kwargs, rollout_buffer_kwargs, kwargs):
    """``make_agent`` for agents that own their rollouts (KL options are constructor arguments)."""
    if rollout_buffer_kwargs:
        raise TypeError(
            f"{name!r} keeps episodes, not a rollout buffer: pass the KL options "
            f"{list(KL_OPTIONS)} directly, not in rollout_buffer_kwargs"
        )
    valid = _init_params(spec.algo_class)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for {name!r}; valid: {sorted(valid)} plus model, temperature, policy_kwargs"
        )
    pkw = {"model": model, "temperature": temperature, **spec.policy_defaults, **(policy_kwargs or {})}
    return spec.algo_class(spec.policy_class, env, policy_kwargs=pkw, **{**spec.defaults, **kwargs})


def make_vec_text_env(
    n_envs: int = 4,
    seed: int | None = 0,
    mask: str | None = None,
    mask_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> VecEnv:
    """``n_envs`` ``TextRLHF-v0`` episodes as an SB3 ``VecEnv``, for :func:`make_agent`.

    Args:
        n_envs: number of envs (the policy batches them in one forward).
        seed: seed of the first env (the others get seed + i).
        mask: ``None``, ``"reference"`` (:class:`agents.masking.ReferenceMaskWrapper`, NLPO) or
            ``"subset"`` (:class:`agents.masking.TokenSubsetMaskWrapper`), for ``maskable_ppo``.
        mask_kwargs: options of that wrapper (``top_k``, ``top_p``, ``token_ids``...).
        **env_kwargs: ``TextRLHF-v0`` options (``model``, ``reward``, ``prompts``, ``max_new_tokens``...).

    Without a mask: one native :class:`textenv.TextRLHFVectorEnv` (``gym.make_vec``; one tokenizer, one
    reward, the episodes that end together scored in one call) behind the SB3 adapter
    :class:`agents.vec_env.TextRLHFVecEnv`, which also writes SB3 ``Monitor``'s episode statistics;
    the fast agents step the vector env itself. With a mask: SB3's ``DummyVecEnv`` of single envs,
    each with ``Monitor`` and the mask wrapper (a per-env gym wrapper), sharing one reward object.
    """
    from stable_baselines3.common.env_util import make_vec_env

    import textenv  # noqa: F401  (registers TextRLHF-v0)
    from agents.masking import ReferenceMaskWrapper, TokenSubsetMaskWrapper
    from agents.vec_env import TextRLHFVecEnv

    wrappers = {None: None, "reference": ReferenceMaskWrapper, "subset": TokenSubsetMaskWrapper}
    if mask not in wrappers:
        raise ValueError(f"mask must be one of {list(wrappers)}, got {mask!r}")
    if mask is None:
        venv = TextRLHFVecEnv(
            gym.make_vec("TextRLHF-v0", num_envs=n_envs, vectorization_mode="vector_entry_point", **env_kwargs)
        )
        venv.seed(seed)
        venv.action_space.seed(seed)
        return venv
    # SB3's make_vec_env asks for render_mode="rgb_array" unless told otherwise; text envs have none.
    env_kwargs.setdefault("render_mode", None)
    from reward_models import make_reward
    from textenv import EnvConfig

    base = EnvConfig.from_kwargs(
        env_kwargs.get("config"), **{k: env_kwargs[k] for k in ("reward", "reward_kwargs") if k in env_kwargs}
    )
    env_kwargs["reward"] = make_reward(base.reward, **base.reward_kwargs)  # one reward model in memory
    env_kwargs["reward_kwargs"] = {}
    return make_vec_env(
        "TextRLHF-v0",
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        wrapper_class=wrappers[mask],
        wrapper_kwargs=mask_kwargs,
    )
