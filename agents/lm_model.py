"""The models an LM policy holds and the operations on them: LM, value head, reference, KV caches.

:class:`LMPolicyModel` is the model half of :class:`agents.LMActorCriticPolicy` (the SB3 half is
:mod:`agents.policy`). It owns, as attributes of the policy module (so ``state_dict`` keys stay
``lm.*``, ``value_head.*``, ``value_model.*``):

* ``lm``: the policy's causal LM; its tempered (and optionally restricted) next-token logits are the
  actor (:meth:`LMPolicyModel.action_logits`; docs/design.md section 5: one temperature everywhere);
* ``value_head``: a zero-initialised ``Linear`` (lm-human-preferences) on the last hidden state of the
  shared trunk, or of a separate ``value_model`` trunk; ``None`` with ``value_head=False`` (then every
  value is 0). Both names contain "value" because sb3-contrib's TRPO treats every parameter whose name
  lacks "value" as an actor parameter;
* the frozen reference LM of the KL penalty, outside ``state_dict``, parameters and optimizer (with
  LoRA, the same LM with its adapters off: :mod:`agents.lora`);
* KV caches from :mod:`textrlhf.lm` (the LM interface lives there because the annotator needs it,
  docs/design.md section 2): a :class:`textrlhf.lm.KVCacheRunner` per trunk for SB3's window-by-window
  rollouts, and :meth:`LMPolicyModel.rollout_cache` (prefill/extend) for the fast agents' lock-step rollouts.

Sequence-level updates use :meth:`LMPolicyModel.sequence_outputs`: every response token's log-prob,
value and entropy from ONE teacher-forced forward (docs/design.md section 4, (c)).
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from agents.kl import reference_logprobs as _reference_logprobs
from agents.lora import AdaptersOff, add_adapters, save_adapter
from textrlhf.lm import KVCache, KVCacheRunner, restrict_logits, trunk_hidden
from textrlhf.precision import autocast_frozen_copy, packed_bf16_available, packed_bf16_linears

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_TEMPERATURE = 0.7  # lm-human-preferences and docs/design.md section 4 sample at 0.7
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Names accepted by the policies' ``dtype`` option."""
PRECISIONS = ("fp32", "bf16")
"""The policies' ``precision`` option: fp32 compute, or bf16 autocast over fp32 weights (mixed precision)."""
MATH_ATTENTION_MAX_LEN = 128
"""Longest teacher-forced row for which a bf16 policy on a CPU computes attention with SDPA's math backend
(:meth:`LMPolicyModel.sequence_attention`): its ``(batch, heads, L, L)`` matrices stay small up to here."""


class NoValueHeadError(RuntimeError):
    """A critic was trained on a policy built with ``value_head=False``, which has no critic to train.

    Raised by ``predict_values`` in a training forward (train mode, with gradients): sb3-contrib's TRPO
    fits its critic that way. Values elsewhere (rollouts, bootstrapping, PPO/A2C updates) are 0 instead.
    """


class _Frozen:
    """Holds a module without registering it (not in state_dict(), parameters() or the optimizer)."""

    def __init__(self, module: nn.Module | None):
        self.module = module


class PolicyKVCache:
    """Lock-step generation with a policy: tempered logits and values per step, KV-cached.

    One :class:`textrlhf.lm.KVCache` on the policy's trunk, and one on its ``value_model`` if it has a
    separate critic. Built by :meth:`LMPolicyModel.rollout_cache`; use under ``torch.no_grad()``.
    """

    def __init__(self, policy: LMPolicyModel):
        self.policy = policy
        self.actor = KVCache(policy.lm.base_model)
        has_critic_trunk = policy.value_model is not None and policy.value_head is not None
        self.critic = KVCache(policy.value_model) if has_critic_trunk else None

    def _outputs(self, hidden: torch.Tensor, v_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy.action_logits(hidden), self.policy.value_from_hidden(v_hidden)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode left-padded prompts ``(n, L)``; return next-token ``(logits (n, V), values (n,))``."""
        with self.policy.autocast():
            hidden = self.actor.prefill(input_ids, attention_mask)  # (n, hidden)
            v_hidden = self.critic.prefill(input_ids, attention_mask) if self.critic is not None else hidden
            return self._outputs(hidden, v_hidden)

    def extend(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one token per row ``(n,)``; return the next ``(logits (n, V), values (n,))``."""
        with self.policy.autocast():
            hidden = self.actor.extend(tokens)
            v_hidden = self.critic.extend(tokens) if self.critic is not None else hidden
            return self._outputs(hidden, v_hidden)


class LMPolicyModel:
    """Mixin of the LM policies: builds and runs the LM, value head and reference (module docstring).

    Expects the attributes the policy constructor sets (``model_name``, ``temperature``,
    ``value_model_name``, ``has_value_head``, ``reference_model_name``, ``kv_cache``, ``dtype_name``,
    ``allowed_tokens``, ``ref_batch_size``, ``attn_implementation``, ``lora``) and ``mark_kl_penalty``.
    """

    # ------------------------------------------------------------------ construction
    def _build_models(self) -> None:
        """Load the LM, the optional critic trunk and value head, the reference, and the window caches."""
        from textrlhf.models import load_model, load_tokenizer

        dtype = DTYPES[self.dtype_name]
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
        self.value_head: nn.Linear | None = None
        if self.has_value_head:
            self.value_head = nn.Linear(hidden, 1, dtype=torch.float32)
            nn.init.zeros_(self.value_head.weight)  # zero-initialised value head (lm-human-preferences)
            nn.init.zeros_(self.value_head.bias)
        # LoRA (agents.lora): adapters in self.lm itself; the PeftModel around it is held, not registered.
        self._peft = _Frozen(add_adapters(self.lm, self.lora) if self.lora.enabled else None)
        if self.reference_model_name is None or self.reference_model_name == self.model_name:
            if self._peft.module is not None:
                ref = AdaptersOff(self._peft.module)  # the same weights, adapters off: no second copy
            else:
                ref = copy.deepcopy(self.lm)  # the initial policy weights (taken before any update)
                ref.requires_grad_(False)
        else:
            ref = load_model(self.reference_model_name, dtype=dtype).requires_grad_(False)
        ref.eval()
        self._reference = _Frozen(ref)
        # bf16: the reference's matrices in bf16 once, not at every forward (bit-identical under autocast).
        # A LoRA reference is the policy's own LM (adapters off): nothing frozen to copy.
        pre_cast = self.precision == "bf16" and self._peft.module is None
        self._reference_compute = _Frozen(autocast_frozen_copy(ref) if pre_cast else ref)
        # bf16: SB3's rollouts run whole windows as its updates do, so their log-probs agree (docs/scaling.md).
        cached = self.kv_cache and self.precision == "fp32"
        self._runner = KVCacheRunner(self.lm.base_model, enabled=cached)
        self._value_runner = KVCacheRunner(self.value_model, enabled=cached) if self.value_model is not None else None
        self.lm.eval()

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

    def autocast(self):
        """The policy's compute precision as a context: bf16 autocast on its device, or nothing at fp32
        (a caller's own autocast then stays in force)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def decode_weights(self, rows: int):
        """The weights of a rollout's decode forwards of ``rows`` rows, as a context (inside :meth:`autocast`).

        bf16 on a CPU that packs bf16 weights for oneDNN (:func:`textrlhf.precision.packed_bf16_available`):
        the LM's linear layers multiply with bf16 copies of their weights packed once for the whole rollout
        (:func:`textrlhf.precision.packed_bf16_linears`: the operands autocast would make, without oneDNN's
        layout change at every call). Anything else (fp32, LoRA adapters, other devices): nothing.
        """
        if self.precision != "bf16" or self.lora.enabled or not packed_bf16_available(self.device):
            return contextlib.nullcontext()
        return packed_bf16_linears(self.lm, rows)

    def sequence_attention(self, seq_len: int):
        """The attention kernel of a teacher-forced forward over rows of ``seq_len`` tokens, as a context.

        bf16 on a CPU, rows of at most :data:`MATH_ATTENTION_MAX_LEN` tokens: SDPA's math backend. torch's
        CPU flash-attention backward runs about 6x slower in bf16 than in fp32 (6.3 against 1.1 ms per layer
        for SmolLM2-135M at 8 x 34 tokens), and the math backend made a bf16 update 14-26% faster there
        (docs/results/2026-12-02-bf16-rollouts.md). Both the update and the re-scoring of a rollout go
        through :meth:`sequence_outputs`, so the old and new log-probs stay the same computation.
        Anything else: nothing (SDPA picks its kernel).
        """
        if self.precision == "fp32" or self.device.type != "cpu" or seq_len > MATH_ATTENTION_MAX_LEN:
            return contextlib.nullcontext()
        return sdpa_kernel([SDPBackend.MATH])

    @property
    def reference_model(self) -> nn.Module:
        """The frozen reference LM (initial weights by default, or ``reference_model``)."""
        return self._reference.module

    def reset_cache(self) -> None:
        """Forget the rollout KV caches (call after changing weights by hand)."""
        if "_runner" in self.__dict__:
            self._runner.reset()
            if self._value_runner is not None:
                self._value_runner.reset()

    # ------------------------------------------------------------------ heads
    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tempered (and restricted) next-token logits ``(..., V)`` from hidden states ``(..., hidden)``."""
        logits = self.lm.get_output_embeddings()(hidden).float() / self.temperature
        if self.allowed_tokens is not None:
            logits = restrict_logits(logits, self._allowed)
        return logits

    def value_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Values from critic hidden states: ``(..., hidden) -> (...,)`` float32; exactly 0 without a value head.

        Args:
            hidden: last-layer hidden states of the critic trunk (the shared trunk, or ``value_model``).

        Returns:
            The value head's output with its last axis squeezed (zeros if ``value_head=False``).
        """
        if self.value_head is None:
            return torch.zeros(hidden.shape[:-1], dtype=torch.float32, device=hidden.device)
        return self.value_head(hidden.float()).squeeze(-1).float()  # float32 under bf16 autocast too

    # ------------------------------------------------------------------ window forwards (SB3)
    def _use_cache(self) -> bool:
        # Only rollouts: eval mode and no autograd. Training forwards (and TRPO's line search, which
        # runs in train mode under no_grad while weights change) always run the full window.
        return not self.training and not torch.is_grad_enabled()

    def _trunk_last(self, trunk: nn.Module, runner: KVCacheRunner, ids, mask) -> torch.Tensor:
        with self.autocast():
            if self._use_cache():
                return runner(ids, mask)  # (batch, hidden)
            return trunk_hidden(trunk, ids, mask)[:, -1]

    def _actor_hidden(self, ids, mask) -> torch.Tensor:
        return self._trunk_last(self.lm.base_model, self._runner, ids, mask)

    def _critic(self, ids, mask, actor_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Values ``(batch, 1)`` of the windows; zeros (no forward at all) without a value head."""
        if self.value_head is None:
            # No critic (value_head=False): zeros keep SB3's buffers and losses working unchanged.
            return torch.zeros((ids.shape[0], 1), dtype=torch.float32, device=ids.device)
        if self.value_model is not None:
            hidden = self._trunk_last(self.value_model, self._value_runner, ids, mask)
        else:
            hidden = actor_hidden if actor_hidden is not None else self._actor_hidden(ids, mask)
        with self.autocast():
            return self.value_head(hidden.float()).float()  # (batch, 1)

    # ------------------------------------------------------------------ sequence-level operations
    def rollout_cache(self) -> PolicyKVCache:
        """A fresh prefill/extend KV cache of this policy for lock-step generation (:class:`PolicyKVCache`)."""
        return PolicyKVCache(self)

    def sequence_outputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        horizon: int,
        entropy: bool = True,
        entropy_grad: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Log-probs, values (and entropies) of the last ``horizon`` tokens of each row, in ONE forward.

        The sequence-level counterpart of SB3's per-transition ``evaluate_actions`` (docs/design.md
        section 4, (c)); keeps gradients unless called under ``torch.no_grad()``.

        Args:
            input_ids: ``(batch, L)`` left-padded prompt + response. attention_mask: ``(batch, L)``.
            horizon: how many last positions to score (the response slots, ``T``).
            entropy: also return each position's entropy.
            entropy_grad: keep the entropy in the autograd graph; ``False`` (an update with no entropy
                bonus, which logs it only) saves two ``(batch, horizon, V)`` tensors and their backward.

        Returns:
            ``(logp, values, entropy)``, each ``(batch, horizon)`` (``entropy`` ``None`` if not asked;
            ``values`` zeros without a value head).
        """
        # Padding columns every row shares (short prompts) are dropped; each response slot keeps the
        # column before it, whose hidden state predicts it.
        lead = max(0, min(int(attention_mask.any(0).to(torch.int8).argmax()), attention_mask.shape[1] - horizon - 1))
        ids, mask = input_ids[:, lead:].long(), attention_mask[:, lead:].long()
        L = ids.shape[1]
        before = slice(L - horizon - 1, L - 1)  # the states before each response slot
        with self.autocast(), self.sequence_attention(L):
            h = trunk_hidden(self.lm.base_model, ids, mask)[:, before]  # (batch, horizon, hidden)
            logits = self.action_logits(h)  # (batch, horizon, V) float32
            if self.value_head is not None and self.value_model is not None:
                vh = trunk_hidden(self.value_model, ids, mask)[:, before]
            else:
                vh = h
            values = self.value_from_hidden(vh)
        logp_all = torch.log_softmax(logits, dim=-1)  # (batch, horizon, V)
        logp = logp_all.gather(-1, ids[:, L - horizon :, None]).squeeze(-1)
        ent = None
        if entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                # Logits are finite (masked ones are -1e8, not -inf), so p * log p is 0, not NaN, where p = 0.
                ent = -(logp_all.exp() * logp_all).sum(-1)
        return logp, values, ent

    def reference_logprobs(self, input_ids, attention_mask, response_mask) -> torch.Tensor:
        """Reference log-probs of response tokens at the policy's temperature, in batched forwards.

        Marks the policy's KL penalty as computed (``mark_kl_penalty("reference_logprobs")``).

        Args:
            input_ids: ``(n, L)`` left-padded prompt + response. attention_mask: ``(n, L)``.
            response_mask: ``(n, L)`` bool, True on the response tokens to score.

        Returns:
            ``(n, L)`` float32, 0 outside ``response_mask``.
        """
        if self.kl_penalty_source is None:
            # Scoring with the reference means a KL is being computed (the fast agents, hand-written loops).
            self.mark_kl_penalty("reference_logprobs")
        ref = self._reference_compute.module  # the reference, its matrices pre-cast in bf16
        device = next(ref.parameters()).device
        outs = []
        for start in range(0, input_ids.shape[0], self.ref_batch_size):
            sl = slice(start, start + self.ref_batch_size)
            with self.autocast():
                out = _reference_logprobs(
                    ref,
                    input_ids[sl].to(device),
                    attention_mask[sl].to(device),
                    response_mask[sl].to(device),
                    temperature=self.temperature,
                    allowed_tokens=self.allowed_tokens,
                )
            outs.append(out)
        return torch.cat(outs) if outs else torch.zeros(input_ids.shape)

    def save_pretrained(self, path: str | os.PathLike, merge: bool = False) -> None:
        """Export the trained LM (+ tokenizer, + ``value_head.pt`` if any) as a Hugging Face folder, atomically.

        The folder loads anywhere with ``AutoModelForCausalLM.from_pretrained(path)`` (and with
        ``textenv.load_model(path)``); the value head is extra and optional. With LoRA it holds the
        adapters only (``adapter_config.json``, which names the base model's folder; transformers loads
        base + adapters from it when peft is installed), or with ``merge=True`` a plain model folder
        with the adapters merged in. ``merge`` changes nothing without LoRA.
        """
        from textrlhf.atomic import atomic_dir
        from textrlhf.models import load_tokenizer

        with atomic_dir(path) as tmp:
            if self._peft.module is not None:
                save_adapter(self._peft.module, tmp, merge)
            else:
                self.lm.save_pretrained(tmp, safe_serialization=True)
            load_tokenizer(self.model_name).save_pretrained(tmp)
            if self.value_head is not None:
                state = {k: v.cpu() for k, v in self.value_head.state_dict().items()}
                torch.save(state, os.path.join(tmp, "value_head.pt"))
