"""Causal language models as Stable-Baselines3 actor-critic policies.

:class:`LMActorCriticPolicy` is a real ``ActorCriticPolicy`` (PPO, A2C, TRPO) and
:class:`MaskableLMActorCriticPolicy` a real ``MaskableActorCriticPolicy`` (MaskablePPO), so SB3's own
``collect_rollouts``, ``train``, ``predict``, ``save`` and ``load`` run unmodified:

* actor: next-token logits of the LM at the last position of the left-padded window, divided by
  ``temperature`` (the same temperature is used for sampling, rollout log-probs, training log-probs
  and the reference log-probs; docs/design.md section 5);
* critic: ``value_head`` on the last hidden state of the shared trunk or of a separate ``value_model``
  trunk, or none at all (``value_head=False``: every value is 0);
* the models and the operations on them (LM, value head, reference, KV caches, sequence-level
  log-probs) are :class:`agents.lm_model.LMPolicyModel`; this module is the SB3 side;
* dropout is off in every mode: ``train()`` (what SB3's ``set_training_mode(True)`` calls) only flips
  this module's own flag and keeps every submodule in eval mode, so the first PPO ratio is exactly 1;
* rollouts (eval mode + ``torch.no_grad()``) reuse a KV cache batched over all envs
  (:class:`textrlhf.lm.KVCacheRunner`, exact by tensor comparison); everything with gradients
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

import inspect
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from agents.lm_model import DEFAULT_MODEL, DEFAULT_TEMPERATURE, DTYPES, PRECISIONS, LMPolicyModel, NoValueHeadError
from agents.lora import LoRAOptions
from textrlhf.threads import check_decode_threads

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEMPERATURE",
    "LMActorCriticPolicy",
    "MaskableLMActorCriticPolicy",
    "NoKLPenaltyWarning",
    "NoValueHeadError",
    "TokenPassthrough",
]


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


class _LMPolicyMixin(LMPolicyModel):
    """Everything shared by the plain and the maskable LM policies."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        model: str = DEFAULT_MODEL,
        temperature: float = DEFAULT_TEMPERATURE,
        value_model: str | None = None,
        value_head: bool = True,
        reference_model: str | None = None,
        kv_cache: bool = True,
        dtype: str = "float32",
        precision: str = "fp32",
        decode_threads: int | str = "auto",
        allowed_tokens: Sequence[int] | None = None,
        ref_batch_size: int = 32,
        attn_implementation: str | None = None,
        lora_r: int = 0,
        lora_alpha: float | None = None,
        lora_dropout: float = 0.0,
        lora_target_modules: Sequence[str] | None = None,
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
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.decode_threads = check_decode_threads(decode_threads)
        self.lora = LoRAOptions.checked(lora_r, lora_alpha, lora_dropout, lora_target_modules)
        # Plain attributes before nn.Module.__init__ are fine; _build (called by SB3's __init__) reads them.
        self.model_name = str(model)
        self.temperature = float(temperature)
        if not value_head and value_model is not None:
            raise ValueError(f"value_model={value_model!r} needs a value head; drop value_model or set value_head=True")
        self.value_model_name = value_model
        self.has_value_head = bool(value_head)
        self.reference_model_name = reference_model
        self.kv_cache = bool(kv_cache)
        self.dtype_name = dtype
        self.allowed_tokens = None if allowed_tokens is None else [int(t) for t in allowed_tokens]
        if isinstance(ref_batch_size, bool) or not isinstance(ref_batch_size, numbers.Integral) or ref_batch_size < 1:
            raise ValueError(f"ref_batch_size must be a positive int (rows per reference pass), got {ref_batch_size!r}")
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

    def _build(self, lr_schedule) -> None:  # SB3 hook: the models (agents.lm_model), then the optimizer
        self._build_models()
        # Current KL coefficient, written by the KL rollout buffer; a buffer so that save()/load() keep it.
        self.register_buffer("kl_beta", torch.tensor(float("nan"), dtype=torch.float64))
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

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            lr_schedule=self._dummy_schedule,
            model=self.model_name,
            temperature=self.temperature,
            value_model=self.value_model_name,
            value_head=self.has_value_head,
            reference_model=self.reference_model_name,
            kv_cache=self.kv_cache,
            dtype=self.dtype_name,
            precision=self.precision,
            decode_threads=self.decode_threads,
            allowed_tokens=self.allowed_tokens,
            ref_batch_size=self.ref_batch_size,
            attn_implementation=self.attn_implementation,
            lora_r=self.lora.r,
            lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout,
            lora_target_modules=self.lora.target_modules,
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

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.reset_cache()
        return out

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if "_reference" in self.__dict__ and self._reference.module is not None:
            self._reference.module._apply(fn, *args, **kwargs)  # move the frozen reference along
            if self._reference_compute.module is not self._reference.module:
                self._reference_compute.module._apply(fn, *args, **kwargs)  # and its pre-cast bf16 copy
        self.reset_cache()
        return out

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

    def _distribution(self, hidden: torch.Tensor, action_masks=None):
        with self.autocast():  # the LM head in the policy's precision, as the trunk before it
            logits = self.action_logits(hidden)
        dist = self.action_dist.proba_distribution(action_logits=logits)
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
        """Critic values ``(batch, 1)`` (zeros for a policy built with ``value_head=False``).

        Raises:
            NoValueHeadError: a training forward (train mode, with gradients) without a value head:
                the algorithm fits a critic (sb3-contrib's TRPO does), which needs ``value_head=True``.
        """
        if self.value_head is None and self.training and torch.is_grad_enabled():
            raise NoValueHeadError(
                f"{type(self).__name__} was built with value_head=False but the algorithm fits a critic through "
                f"predict_values (sb3-contrib's TRPO does); build it with policy_kwargs={{'value_head': True}}"
            )
        ids, mask = self.extract_features(obs)
        return self._critic(ids, mask)

    def _predict(self, observation, deterministic: bool = False, action_masks=None) -> torch.Tensor:
        return self.get_distribution(observation, action_masks).get_actions(deterministic=deterministic)


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
        value_head: ``False`` builds no critic at all, for agents that need none (the critic-free
            agents): no value-head parameters, so none in the optimizer, ``state_dict`` or
            ``save_pretrained`` folder; every value (``forward``, ``evaluate_actions``,
            ``predict_values``, :func:`agents.rollout.sequence_forward`) is then exactly 0, which keeps
            SB3's PPO/A2C machinery running (its value loss becomes a constant). sb3-contrib's TRPO fits
            its critic by backpropagation through ``predict_values``, which then raises
            :class:`agents.lm_model.NoValueHeadError`: it needs ``value_head=True``.
        reference_model: ``None`` (a frozen copy of the initial policy) or the name of another LM.
        kv_cache: reuse keys/values across rollout steps (exact; ``False`` for full forwards).
        dtype: ``"float32"`` (default; rollout and training log-probs must agree), ``"bfloat16"``...
        precision: ``"fp32"`` (default) or ``"bf16"``: every policy and reference forward under bf16
            autocast (fp32 weights and optimizer state, bf16 matrix products; mixed precision). In bf16 the
            log-probs a rollout stores are computed the way the update computes them (the fast agents
            re-score the rollout teacher-forced, or with one epoch of one minibatch and no critic take
            the update's own forward as the re-scoring; SB3's rollouts run whole windows, no KV cache), so
            the first ratio stays 1 (docs/scaling.md).
        decode_threads: intra-op threads of the token-by-token decode of the fast agents' lock-step rollouts
            (:func:`agents.rollout.collect_round`; the env's reward, the reference, the update and SB3's own
            rollouts keep torch's count): a positive int, or ``"auto"`` (default: half of
            torch's threads for a bf16 decode on a CPU whose OpenMP threads wait passively, as the scripts
            set them; otherwise unchanged). :mod:`textrlhf.threads` says why and what was measured.
        allowed_tokens: restrict the distribution to these token ids (probability 0 elsewhere, also
            for the reference), for small-vocabulary tasks; ``None`` for the whole vocabulary.
        ref_batch_size: rows per teacher-forced forward of the reference model (default 32: a rollout of
            32 rows in one forward took 0.61 s against 0.74 s in two of 16 in bf16, and 1.47 against 1.58 s
            in fp32, SmolLM2-135M at 10 + 24 tokens; docs/results/2026-12-02-reference-batch.md). Its
            logits are ``rows x (T + 1) x V`` floats, a few copies of which live at once: lower it for
            long responses or large vocabularies.
        attn_implementation: ``None`` (the model's default, SDPA) or e.g. ``"eager"`` (needed by TRPO's
            second derivatives on CPU).
        lora_r: ``0`` trains every LM weight; ``r > 0`` trains rank-``r`` LoRA adapters instead (PEFT,
            the ``lora`` extra; :mod:`agents.lora`): the LM's own weights are frozen, and the reference of
            the KL penalty is the same LM with the adapters switched off, not a second copy.
        lora_alpha: LoRA scaling numerator (the update is ``alpha / r * B A``); ``None``: ``2 * lora_r``.
        lora_dropout: must be 0: dropout is off in every mode of the LM policies (the first PPO ratio is 1).
        lora_target_modules: module names that get adapters (``None``: PEFT's default for the architecture,
            ``q_proj`` and ``v_proj`` for Llama-style models such as SmolLM2).
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
