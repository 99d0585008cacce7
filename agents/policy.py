"""Causal language models as Stable-Baselines3 actor-critic policies.

:class:`LMActorCriticPolicy` is a real ``ActorCriticPolicy`` (PPO, A2C, TRPO) and
:class:`MaskableLMActorCriticPolicy` a real ``MaskableActorCriticPolicy`` (MaskablePPO), so SB3's own
``collect_rollouts``, ``train``, ``predict``, ``save`` and ``load`` run unmodified:

* actor: next-token logits of the LM at the last position of the left-padded window, divided by
  ``temperature`` (the same temperature is used for sampling, rollout log-probs, training log-probs
  and the reference log-probs; docs/design.md section 5);
* critic: ``value_head`` (a zero-initialised ``Linear``, lm-human-preferences) on the last hidden state
  of the shared trunk, or on a separate ``value_model`` trunk. Both names contain "value" because
  sb3-contrib's TRPO treats every parameter whose name lacks "value" as an actor parameter;
* dropout is off in every mode: ``train()`` (what SB3's ``set_training_mode(True)`` calls) only flips
  this module's own flag and keeps every submodule in eval mode, so the first PPO ratio is exactly 1;
* rollouts (eval mode + ``torch.no_grad()``) reuse a KV cache batched over all envs
  (:class:`agents.cache.KVCacheRunner`, exact by tensor comparison); everything with gradients
  (``evaluate_actions``) and everything in train mode does a plain full forward;
* SB3's feature-extractor machinery is bypassed: the policy is built with a parameter-free
  ``TokenPassthrough`` extractor (so SB3's constructor is satisfied) and ``extract_features`` is
  overridden to return the raw ``(input_ids, attention_mask)`` tensors, cast back to ``long``
  (SB3's ``preprocess_obs`` would turn the ``Box`` token ids into floats);
* ``policy_kwargs`` hold names and numbers only (they are pickled into the saved agent); the
  frozen reference model used for the KL penalty is owned by the policy but kept outside its
  ``state_dict``, parameters and optimizer;
* nothing in SB3 adds the KL penalty: the KL rollout buffer does (:mod:`agents.buffers`), or a fast
  agent, through :meth:`reference_logprobs`. Either marks the policy (``kl_penalty_source``); the
  first training forward of an unmarked policy warns (:class:`NoKLPenaltyWarning`) instead of
  silently optimising the bare score (issue 17).
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.cache import KVCacheRunner, trunk_hidden
from agents.kl import reference_logprobs as _reference_logprobs
from agents.kl import restrict_logits

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_TEMPERATURE = 0.7  # lm-human-preferences and docs/design.md section 4 sample at 0.7


class NoKLPenaltyWarning(UserWarning):
    """An LM policy is being trained but nothing adds the KL penalty to its reference model.

    Warned once per policy, by the first training forward of an LM policy that no KL rollout buffer
    has bound to and whose reference model was never consulted: typically
    ``PPO(agents.LMActorCriticPolicy, env)`` without ``rollout_buffer_class=agents.KLRolloutBuffer``,
    or an rl-baselines3-zoo YAML, which can name the policy but not the buffer class. Such a run
    maximises the bare score and drifts from the reference unchecked. To train without a KL penalty
    on purpose: ``warnings.filterwarnings("ignore", category=agents.NoKLPenaltyWarning)``.
    """


_NO_KL_MESSAGE = (
    "{cls} is being trained with no KL penalty to its reference model: nothing computes it, so the run "
    "optimises the bare score. SB3 adds the KL only through the rollout buffer: pass "
    "rollout_buffer_class=agents.KLRolloutBuffer (MaskablePPO: agents.MaskableKLRolloutBuffer), or build "
    "the agent with agents.make_agent(...); with rl-baselines3-zoo use the python hyperparameter files "
    "configs/zoo/<algo>.py (a YAML cannot name the buffer class). If no KL penalty is intended, silence "
    "this with warnings.filterwarnings('ignore', category=agents.NoKLPenaltyWarning)."
)


class TokenPassthrough(BaseFeaturesExtractor):
    """Parameter-free stand-in for SB3's feature extractor: LM policies read the tokens directly.

    SB3's ``ActorCriticPolicy.__init__`` insists on building a features extractor; this one has no
    parameters and is never called (the policy overrides ``extract_features``).
    """

    def __init__(self, observation_space: spaces.Space):
        super().__init__(observation_space, features_dim=1)

    def forward(self, observations):  # pragma: no cover - never called
        raise RuntimeError("LM policies read input_ids/attention_mask directly; this extractor is a stub")


class _Frozen:
    """Holds a module without registering it (not in state_dict(), parameters() or the optimizer)."""

    def __init__(self, module: nn.Module | None):
        self.module = module


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _LMPolicyMixin:
    """Everything shared by the plain and the maskable LM policies."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        model: str = DEFAULT_MODEL,
        temperature: float = DEFAULT_TEMPERATURE,
        value_model: str | None = None,
        reference_model: str | None = None,
        kv_cache: bool = True,
        dtype: str = "float32",
        allowed_tokens: Sequence[int] | None = None,
        ref_batch_size: int = 16,
        attn_implementation: str | None = None,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        ortho_init: bool = False,
        use_sde: bool = False,
        **unsupported: Any,
    ):
        if unsupported:
            valid = [
                p for p in inspect.signature(_LMPolicyMixin.__init__).parameters if p not in ("self", "unsupported")
            ]
            raise TypeError(
                f"{type(self).__name__} got unsupported policy_kwargs {sorted(unsupported)} (LM policies have "
                f"no MLP, net_arch or feature extractor); valid: {valid[3:]}"
            )
        if ortho_init:
            raise ValueError("ortho_init=True would overwrite the pretrained LM weights; leave it False")
        if use_sde:
            raise ValueError("use_sde is for continuous actions; the LM policy samples tokens (use_sde=False)")
        if not isinstance(observation_space, spaces.Dict) or not {"input_ids", "attention_mask"} <= set(
            observation_space.spaces
        ):
            raise ValueError(
                f"LM policies need Dict(input_ids=Box, attention_mask=Box) observations (TextRLHF-v0), "
                f"got {observation_space}"
            )
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"LM policies need a Discrete(V) action space, got {action_space}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        # Plain attributes before nn.Module.__init__ are fine; _build (called by SB3's __init__) reads them.
        self.model_name = str(model)
        self.temperature = float(temperature)
        self.value_model_name = value_model
        self.reference_model_name = reference_model
        self.kv_cache = bool(kv_cache)
        self.dtype_name = dtype
        self.allowed_tokens = None if allowed_tokens is None else [int(t) for t in allowed_tokens]
        self.ref_batch_size = int(ref_batch_size)
        self.attn_implementation = attn_implementation
        # Who adds the KL penalty (a KL buffer's class name, or "reference_logprobs"); None: nobody yet.
        self.kl_penalty_source: str | None = None
        self._warned_no_kl = False
        super().__init__(  # type: ignore[call-arg]
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[],
            ortho_init=False,
            features_extractor_class=TokenPassthrough,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    # ------------------------------------------------------------------ construction
    def _build_mlp_extractor(self) -> None:  # SB3 hook: no MLP on top of an LM
        pass

    def _build(self, lr_schedule) -> None:
        from textrlhf.models import load_model, load_tokenizer

        dtype = _DTYPES[self.dtype_name]
        self.lm = load_model(self.model_name, dtype=dtype)
        if self.attn_implementation is not None:
            # TRPO needs double backward (Hessian-vector products), which PyTorch's fused CPU SDPA
            # kernel lacks: the registry asks for "eager" attention there.
            self.lm.set_attn_implementation(self.attn_implementation)
        n_head = self.lm.get_output_embeddings().weight.shape[0]
        if n_head != self.action_space.n:
            raise ValueError(
                f"the LM head of {self.model_name!r} has {n_head} outputs but the action space has "
                f"{self.action_space.n}; use the env's model (env.unwrapped.config.model) as policy model"
            )
        if self.allowed_tokens is not None:
            bad = [t for t in self.allowed_tokens if not 0 <= t < n_head]
            if not self.allowed_tokens or bad:
                raise ValueError(f"allowed_tokens must be a non-empty list of ids in [0, {n_head}), got bad {bad}")
            self.register_buffer("_allowed", torch.tensor(self.allowed_tokens), persistent=False)
        self._check_head_factorisation()
        hidden = self.lm.config.get_text_config().hidden_size
        self.value_model = None
        if self.value_model_name is not None:
            if load_tokenizer(self.value_model_name).get_vocab() != load_tokenizer(self.model_name).get_vocab():
                raise ValueError(
                    f"value model {self.value_model_name!r} and policy {self.model_name!r} use different "
                    f"tokenizers; the critic reads the policy's token ids, so they must match"
                )
            self.value_model = load_model(self.value_model_name, dtype=dtype).base_model
            if self.attn_implementation is not None:
                self.value_model.set_attn_implementation(self.attn_implementation)
            hidden = self.value_model.config.hidden_size
        self.value_head = nn.Linear(hidden, 1, dtype=torch.float32)
        nn.init.zeros_(self.value_head.weight)  # zero-initialised value head (lm-human-preferences)
        nn.init.zeros_(self.value_head.bias)
        # Current KL coefficient, written by the KL rollout buffer; a buffer so that save()/load() keep it.
        self.register_buffer("kl_beta", torch.tensor(float("nan"), dtype=torch.float64))
        if self.reference_model_name is None or self.reference_model_name == self.model_name:
            ref = copy.deepcopy(self.lm)  # the initial policy weights (taken before any update)
        else:
            ref = load_model(self.reference_model_name, dtype=dtype)
        ref.requires_grad_(False).eval()
        self._reference = _Frozen(ref)
        self._runner = KVCacheRunner(self.lm.base_model, enabled=self.kv_cache)
        self._value_runner = (
            KVCacheRunner(self.value_model, enabled=self.kv_cache) if self.value_model is not None else None
        )
        self.lm.eval()
        params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(params, lr=lr_schedule(1), **self._optimizer_options())

    def _optimizer_options(self) -> dict[str, Any]:
        """``optimizer_kwargs``, plus ``fused=True`` for Adam/AdamW unless the caller chose a kernel.

        The fused kernel updates all parameters in one pass instead of about ten passes per tensor:
        on this 2-core CPU an Adam step over SmolLM2's 135M parameters takes 0.05 s fused against
        0.28-0.58 s (torch 2.13), a tenth of a small PPO update. Same update rule, same state dict.
        """
        kwargs = dict(self.optimizer_kwargs)
        if self.optimizer_class in (torch.optim.Adam, torch.optim.AdamW) and not {"fused", "foreach"} & set(kwargs):
            kwargs["fused"] = True
        return kwargs

    def _check_head_factorisation(self) -> None:
        # The policy computes logits as head(trunk(x)); models that rescale or soft-cap logits inside
        # forward() (Gemma 2, Cohere, ...) would silently differ from what the LM itself samples.
        ids = torch.tensor([[1, 2, 3, 4]], dtype=torch.long)
        with torch.no_grad():
            ref = self.lm(input_ids=ids).logits[:, -1].float()
            mine = self.lm.get_output_embeddings()(self.lm.base_model(input_ids=ids).last_hidden_state[:, -1]).float()
        if not torch.allclose(ref, mine, atol=1e-3, rtol=1e-3):
            raise NotImplementedError(
                f"{self.model_name!r} post-processes its logits (e.g. scaling or soft-capping), which "
                f"LMActorCriticPolicy does not reproduce; use a Llama/Qwen/GPT-2 style model"
            )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            lr_schedule=self._dummy_schedule,
            model=self.model_name,
            temperature=self.temperature,
            value_model=self.value_model_name,
            reference_model=self.reference_model_name,
            kv_cache=self.kv_cache,
            dtype=self.dtype_name,
            allowed_tokens=self.allowed_tokens,
            ref_batch_size=self.ref_batch_size,
            attn_implementation=self.attn_implementation,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )

    # ------------------------------------------------------------------ modes and caches
    def train(self, mode: bool = True):
        """Set this policy's mode flag but keep every submodule in eval mode (dropout stays off)."""
        self.training = mode
        for module in self.children():
            module.eval()
        self.reset_cache()
        return self

    def set_training_mode(self, mode: bool) -> None:
        """SB3 hook (called around every update): dropout stays off; the KV cache is dropped."""
        self.train(mode)

    def reset_cache(self) -> None:
        """Forget the rollout KV caches (call after changing weights by hand)."""
        if "_runner" in self.__dict__:
            self._runner.reset()
            if self._value_runner is not None:
                self._value_runner.reset()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.reset_cache()
        return out

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if "_reference" in self.__dict__ and self._reference.module is not None:
            self._reference.module._apply(fn, *args, **kwargs)  # move the frozen reference along
        self.reset_cache()
        return out

    @property
    def reference_model(self) -> nn.Module:
        """The frozen reference LM (initial weights by default, or ``reference_model``)."""
        return self._reference.module

    # ------------------------------------------------------------------ KL penalty check (issue 17)
    def mark_kl_penalty(self, source: str) -> None:
        """Record that ``source`` adds the KL penalty to this policy's reference (no warning then).

        Called by the KL rollout buffers when they bind and by :meth:`reference_logprobs`; a hand-written
        loop that computes the KL some other way may call it too.
        """
        self.kl_penalty_source = str(source)

    def _check_kl_penalty(self) -> None:
        """Warn once if this is a training forward (train mode, with gradients) and nothing adds the KL.

        SB3 gives a policy no handle on its algorithm or rollout buffer, so the first point where a
        missing KL buffer is certain is the first update: by then a KL buffer has bound itself (at the
        end of the first rollout, in ``compute_returns_and_advantage``) and a fast agent has scored its
        batch with the reference. Rollouts, ``predict`` and evaluation (eval mode or ``no_grad``) never warn.
        """
        if self.kl_penalty_source is not None or self._warned_no_kl:
            return
        if not (self.training and torch.is_grad_enabled()):
            return
        self._warned_no_kl = True
        # stacklevel 3: the algorithm's train() that called evaluate_actions / get_distribution
        warnings.warn(_NO_KL_MESSAGE.format(cls=type(self).__name__), NoKLPenaltyWarning, stacklevel=3)

    # ------------------------------------------------------------------ forwards
    def extract_features(self, obs, features_extractor=None) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Bypass SB3's extractor: return ``(input_ids, attention_mask)`` as ``long`` tensors."""
        ids = obs["input_ids"]
        mask = obs["attention_mask"]
        return ids.long(), mask.long()  # (batch, L), (batch, L)

    def _use_cache(self) -> bool:
        # Only rollouts: eval mode and no autograd. Training forwards (and TRPO's line search, which
        # runs in train mode under no_grad while weights change) always run the full window.
        return not self.training and not torch.is_grad_enabled()

    def _trunk_last(self, trunk: nn.Module, runner: KVCacheRunner, ids, mask) -> torch.Tensor:
        if self._use_cache():
            return runner(ids, mask)  # (batch, hidden)
        return trunk_hidden(trunk, ids, mask)[:, -1]

    def _actor_hidden(self, ids, mask) -> torch.Tensor:
        return self._trunk_last(self.lm.base_model, self._runner, ids, mask)

    def _critic(self, ids, mask, actor_hidden: torch.Tensor | None = None) -> torch.Tensor:
        if self.value_model is not None:
            hidden = self._trunk_last(self.value_model, self._value_runner, ids, mask)
        else:
            hidden = actor_hidden if actor_hidden is not None else self._actor_hidden(ids, mask)
        return self.value_head(hidden.float())  # (batch, 1)

    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tempered next-token logits ``(batch, V)`` from last-position hidden states."""
        logits = self.lm.get_output_embeddings()(hidden).float() / self.temperature
        if self.allowed_tokens is not None:
            logits = restrict_logits(logits, self._allowed)
        return logits

    def _distribution(self, hidden: torch.Tensor, action_masks=None):
        dist = self.action_dist.proba_distribution(action_logits=self.action_logits(hidden))
        if action_masks is not None:
            if not hasattr(dist, "apply_masking"):
                raise TypeError(
                    f"{type(self).__name__} does not take action masks; use MaskableLMActorCriticPolicy "
                    f"with MaskablePPO"
                )
            dist.apply_masking(action_masks)
        return dist

    def forward(self, obs, deterministic: bool = False, action_masks=None):
        """Sample (or argmax) a token: returns ``(actions (batch,), values (batch, 1), log_prob (batch,))``."""
        ids, mask = self.extract_features(obs)
        hidden = self._actor_hidden(ids, mask)
        dist = self._distribution(hidden, action_masks)
        actions = dist.get_actions(deterministic=deterministic)
        log_prob = dist.log_prob(actions)
        values = self._critic(ids, mask, hidden)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def evaluate_actions(self, obs, actions: torch.Tensor, action_masks=None):
        """Full forward with gradients: ``(values (batch, 1), log_prob (batch,), entropy (batch,))``.

        PPO, A2C and MaskablePPO call it in every update; the first such call warns
        (:class:`NoKLPenaltyWarning`) if nothing adds the KL penalty.
        """
        self._check_kl_penalty()
        ids, mask = self.extract_features(obs)
        hidden = self._actor_hidden(ids, mask)
        dist = self._distribution(hidden, action_masks)
        log_prob = dist.log_prob(actions.reshape(-1).long())
        return self._critic(ids, mask, hidden), log_prob, dist.entropy()

    def get_distribution(self, obs, action_masks=None):
        """The (tempered, optionally masked) next-token distribution.

        sb3-contrib's TRPO trains through this method (not ``evaluate_actions``), so a call in train mode
        with gradients is checked for a missing KL penalty as well.
        """
        self._check_kl_penalty()
        ids, mask = self.extract_features(obs)
        return self._distribution(self._actor_hidden(ids, mask), action_masks)

    def predict_values(self, obs) -> torch.Tensor:
        """Critic values ``(batch, 1)``."""
        ids, mask = self.extract_features(obs)
        return self._critic(ids, mask)

    def _predict(self, observation, deterministic: bool = False, action_masks=None) -> torch.Tensor:
        return self.get_distribution(observation, action_masks).get_actions(deterministic=deterministic)

    # ------------------------------------------------------------------ KL and export
    def reference_logprobs(self, input_ids, attention_mask, response_mask) -> torch.Tensor:
        """Reference log-probs of response tokens at the policy's temperature, in batched forwards.

        Args:
            input_ids: ``(n, L)`` left-padded prompt + response. attention_mask: ``(n, L)``.
            response_mask: ``(n, L)`` bool, True on the response tokens to score.

        Returns:
            ``(n, L)`` float32, 0 outside ``response_mask``.
        """
        if self.kl_penalty_source is None:
            # Scoring with the reference means a KL is being computed (the fast agents, hand-written loops).
            self.mark_kl_penalty("reference_logprobs")
        ref = self.reference_model
        device = next(ref.parameters()).device
        outs = []
        for start in range(0, input_ids.shape[0], self.ref_batch_size):
            sl = slice(start, start + self.ref_batch_size)
            outs.append(
                _reference_logprobs(
                    ref,
                    input_ids[sl].to(device),
                    attention_mask[sl].to(device),
                    response_mask[sl].to(device),
                    temperature=self.temperature,
                    allowed_tokens=self.allowed_tokens,
                )
            )
        return torch.cat(outs) if outs else torch.zeros(input_ids.shape)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Export the trained LM (+ tokenizer, + ``value_head.pt``) as a Hugging Face folder, atomically.

        The folder loads anywhere with ``AutoModelForCausalLM.from_pretrained(path)`` (and with
        ``textenv.load_model(path)``); the value head is extra and optional.
        """
        from textrlhf.atomic import atomic_dir
        from textrlhf.models import load_tokenizer

        with atomic_dir(path) as tmp:
            self.lm.save_pretrained(tmp, safe_serialization=True)
            load_tokenizer(self.model_name).save_pretrained(tmp)
            torch.save(
                {k: v.cpu() for k, v in self.value_head.state_dict().items()}, os.path.join(tmp, "value_head.pt")
            )


class LMActorCriticPolicy(_LMPolicyMixin, ActorCriticPolicy):
    """A causal LM as an SB3 ``ActorCriticPolicy`` (PPO, A2C, TRPO).

    Args:
        observation_space: ``TextRLHF-v0``'s ``Dict(input_ids, attention_mask)``.
        action_space: ``Discrete(V)``, V = the LM-head size.
        lr_schedule: SB3's learning-rate schedule (Adam over all trainable parameters).
        model: policy LM: ``"smollm2-135m-instruct"``, ``"tiny"``, a folder or a hub name; use the env's
            model (``agents.make_agent`` does).
        temperature: divides the logits for sampling, rollout, training and reference log-probs.
        value_model: ``None`` (value head on the shared trunk) or the name of a separate critic trunk.
        reference_model: ``None`` (a frozen copy of the initial policy) or the name of another LM.
        kv_cache: reuse keys/values across rollout steps (exact; ``False`` for full forwards).
        dtype: ``"float32"`` (default; rollout and training log-probs must agree), ``"bfloat16"``...
        allowed_tokens: restrict the distribution to these token ids (probability 0 elsewhere, also
            for the reference), for small-vocabulary tasks; ``None`` for the whole vocabulary.
        ref_batch_size: batch size of the reference model's teacher-forced forwards.
        attn_implementation: ``None`` (the model's default, SDPA) or e.g. ``"eager"`` (needed by TRPO's
            second derivatives on CPU).
        optimizer_class: torch optimizer (Adam). optimizer_kwargs: its options (SB3 default eps=1e-5).

    Attributes:
        kl_penalty_source: what adds the KL penalty (the bound KL buffer's class name, or
            ``"reference_logprobs"``); ``None`` until something does. The first update of a policy for
            which it is still ``None`` warns with :class:`NoKLPenaltyWarning`.
    """


class MaskableLMActorCriticPolicy(_LMPolicyMixin, MaskableActorCriticPolicy):
    """The LM policy with sb3-contrib's invalid-action masking, for ``MaskablePPO`` (NLPO-style).

    ``forward(obs, deterministic, action_masks)``, ``evaluate_actions(obs, actions, action_masks)``
    and ``get_distribution(obs, action_masks)`` apply the env's ``action_masks()`` (e.g. from
    :class:`agents.masking.ReferenceMaskWrapper`): masked tokens get probability 0, so the masked
    distribution is exactly what is sampled, stored and optimised. Arguments as
    :class:`LMActorCriticPolicy`.
    """
