"""The KL side of the RLHF objective, as plain functions (usable without Stable-Baselines3).

The objective (Ziegler et al. 2019; Stiennon et al. 2020; docs/design.md section 1) is

    R(episode) = score(prompt, response) - beta * sum_t KL_t,

with ``KL_t`` an estimate of ``KL(pi || pi_ref)`` at token ``t``. From the sampled token ``a_t`` and
``r = pi_ref(a_t|s_t) / pi(a_t|s_t)``, Schulman's note "Approximating KL Divergence" (2020) gives

* ``k1 = -log r = log pi - log pi_ref`` (unbiased, can be negative; the classic choice in the reward,
  lm-human-preferences and TRL's ``kl_estimator="k1"``),
* ``k2 = 0.5 * (log r)^2`` (biased, low variance, always >= 0),
* ``k3 = (r - 1) - log r`` (unbiased, always >= 0; TRL's ``kl_estimator="k3"``).

The controllers follow lm-human-preferences (``lm_human_preferences/train_policy.py``) and TRL:
:class:`FixedKLController` keeps ``beta``; :class:`AdaptiveKLController` moves it towards a target KL.
A controller is the one home of the current ``beta`` (:class:`KLController`): an agent's controller keeps
it in its policy's ``kl_beta`` buffer, so it is saved and restored with the policy; ``kl_coef`` is only
where it starts.
:class:`KLConfig` holds the six KL options and is the only place their defaults are written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from textrlhf.lm import restrict_logits, token_logprobs

__all__ = [
    "KL_ESTIMATORS",
    "SHAPING_MODES",
    "AdaptiveKLController",
    "FixedKLController",
    "KLConfig",
    "KLController",
    "check_kl_options",
    "kl_estimate",
    "make_kl_controller",
    "reference_logprobs",
    "restrict_logits",  # re-exported: agents.kl.restrict_logits is public
    "shape_rewards",
]

KL_ESTIMATORS = ("k1", "k2", "k3")
"""Names accepted by :func:`kl_estimate`."""
SHAPING_MODES = ("terminal", "per_token")
"""Where :func:`shape_rewards` subtracts ``beta * KL``."""


def check_kl_options(kl_coef: float | None = None, kl_estimator: str | None = None, kl_mode: str | None = None) -> None:
    """Validate KL options shared by the KL buffers and the sequence-level agents.

    Raises:
        ValueError: naming the bad value and the valid ones.
    """
    if kl_estimator is not None and kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {kl_estimator!r}; use one of {list(KL_ESTIMATORS)}")
    if kl_mode is not None and kl_mode not in SHAPING_MODES:
        raise ValueError(f"unknown kl_mode {kl_mode!r}; use one of {list(SHAPING_MODES)}")
    if kl_coef is not None and not (np.isfinite(kl_coef) and kl_coef >= 0):
        raise ValueError(f"kl_coef must be a finite number >= 0, got {kl_coef!r}")


@dataclass
class KLConfig:
    """The KL options of the RLHF objective: the one place their defaults are written.

    :class:`agents.KLRolloutBuffer`, :class:`agents.RLHFPPO`, the critic-free agents and the controllers
    take their keyword defaults from these fields (``kl_coef: float = KLConfig.kl_coef``), the scripts
    and the pipeline theirs too; a script or pipeline default that differs is a named override with
    its reason (``LIBRARY_OVERRIDES`` in ``scripts/stages/config_sections.py``, tested in
    ``tests/scripts/test_config_defaults.py``). ``dataclasses.asdict(KLConfig(...))`` gives the keyword
    arguments of any of them (``make_agent(name, env, **asdict(cfg))``).

    Raises:
        ValueError: from ``__post_init__``, naming the bad value and the valid ones.
    """

    kl_coef: float = 0.05
    """Initial KL coefficient beta. 0.05 is the beta of docs/design.md section 5's measurement (lr 1e-4
    moved SmolLM2's held-out sentiment 0.03 -> 0.60 at ~11 nats of KL)."""
    adaptive_kl: bool = True
    """Adapt beta towards ``kl_target`` (Ziegler et al. 2019) instead of keeping it fixed."""
    kl_target: float = 6.0
    """Target summed KL per episode, in nats, of the adaptive controller (lm-human-preferences)."""
    kl_horizon: float = 10000.0
    """Adaptive controller horizon, in episodes: beta moves by at most a factor 1 + 0.2 x episodes / horizon
    per update (lm-human-preferences' value, for runs of ~10^6 episodes; short runs need a lower one)."""
    kl_estimator: str = "k1"
    """KL estimator of the penalty: "k1", "k2" or "k3" (Schulman 2020; k1 is the classic one in the reward)."""
    kl_mode: str = "terminal"
    """Where beta x KL is subtracted: "terminal" (summed, at the episode's last token) or "per_token"."""

    def __post_init__(self) -> None:
        check_kl_options(self.kl_coef, self.kl_estimator, self.kl_mode)
        for name in ("kl_target", "kl_horizon"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = KLConfig.kl_estimator) -> torch.Tensor:
    """Per-sample KL estimate from log-probs of the *sampled* tokens under ``pi`` and ``pi_ref``.

    Args:
        logp: ``log pi(a_t|s_t)``, any shape (tokens sampled from ``pi``).
        ref_logp: ``log pi_ref(a_t|s_t)``, same shape.
        kind: ``"k1"``, ``"k2"`` or ``"k3"`` (Schulman 2020).

    Returns:
        Tensor of the same shape; its mean over samples from ``pi`` estimates ``KL(pi || pi_ref)``.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; use one of {list(KL_ESTIMATORS)}")
    logp, ref_logp = torch.as_tensor(logp), torch.as_tensor(ref_logp)
    log_r = ref_logp - logp  # log(pi_ref / pi)
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    return torch.expm1(log_r) - log_r  # (r - 1) - log r, expm1 for accuracy near r = 1


@torch.no_grad()
def reference_logprobs(
    ref_model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    allowed_tokens: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probs of every response token under the reference model, in ONE teacher-forced forward.

    Args:
        ref_model: a causal LM (``*ForCausalLM``), in eval mode.
        input_ids: ``(batch, seq_len)`` prompt + response, left-padded.
        attention_mask: ``(batch, seq_len)`` 0/1.
        response_mask: ``(batch, seq_len)`` bool, True on response tokens (whose log-probs are wanted).
        temperature: divides the logits, and must be the sampling temperature of the policy
            (docs/design.md section 5: the same temperature everywhere, or the KL is biased).
        allowed_tokens: if given, the distribution is restricted to these ids (as the policy's is).

    Returns:
        ``(batch, seq_len)`` float32: ``log pi_ref(x_j | x_<j)`` where ``response_mask`` is True, 0 elsewhere.

    Raises:
        ValueError: a response token at position 0 (it would have no context), or shape mismatch.
    """
    # The one teacher-forced scorer (textrlhf.lm), here without gradients: the reference is frozen.
    return token_logprobs(ref_model, input_ids, attention_mask, response_mask, temperature, allowed_tokens)


def shape_rewards(
    scores: torch.Tensor | np.ndarray | Sequence[float],
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    beta: float,
    mode: str = KLConfig.kl_mode,
    kind: str = KLConfig.kl_estimator,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token rewards of the KL-penalised RLHF objective, for hand-written loops.

    Args:
        scores: ``(batch,)`` reward-model scores of whole responses.
        logp: ``(batch, T)`` policy log-probs of the response tokens (at the sampling temperature).
        ref_logp: ``(batch, T)`` reference log-probs of the same tokens (same temperature).
        beta: KL coefficient.
        mode: ``"terminal"`` (default): the last token gets ``score - beta * sum_t KL_t``, the others 0;
            ``"per_token"``: every token gets ``-beta * KL_t`` and the last one also the score
            (TRL and lm-human-preferences). Both give the same undiscounted return.
        kind: KL estimator, see :func:`kl_estimate`.
        mask: ``(batch, T)`` bool, True on real response tokens (default all True); responses are
            right-aligned or left-aligned, the last True of each row is its final token.

    Returns:
        ``(batch, T)`` float32 rewards (0 outside ``mask``).

    Raises:
        ValueError: unknown ``mode``, an empty row, or mismatched shapes.
    """
    if mode not in SHAPING_MODES:
        raise ValueError(f"unknown KL shaping mode {mode!r}; use one of {list(SHAPING_MODES)}")
    logp, ref_logp = torch.as_tensor(logp, dtype=torch.float32), torch.as_tensor(ref_logp, dtype=torch.float32)
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float32)).to(logp.device)
    if logp.shape != ref_logp.shape or logp.ndim != 2 or scores.shape != (logp.shape[0],):
        raise ValueError(
            f"expected logp and ref_logp of shape (batch, T) and scores (batch,), got {tuple(logp.shape)}, "
            f"{tuple(ref_logp.shape)}, {tuple(scores.shape)}"
        )
    mask = torch.ones_like(logp, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
    if not bool(mask.any(-1).all()):
        raise ValueError("every row needs at least one response token (mask has an all-False row)")
    kl = kl_estimate(logp, ref_logp, kind) * mask  # (batch, T)
    T = mask.shape[1]
    last = T - 1 - mask.flip(-1).float().argmax(-1)  # (batch,): index of each row's last real token
    rewards = torch.zeros_like(logp)
    rows = torch.arange(logp.shape[0], device=logp.device)
    if mode == "per_token":
        rewards = -beta * kl
        rewards[rows, last] += scores
    else:
        rewards[rows, last] = scores - beta * kl.sum(-1)
    return rewards * mask


class KLController:
    """The current KL coefficient ``beta`` and the rule that moves it: the one place ``beta`` lives.

    A controller holds ``beta`` itself until :meth:`store_in` hands it a place in a module's state: from
    then on ``value`` reads and writes that 0-dim buffer (``LMActorCriticPolicy.kl_beta``) and nothing
    else, so the number every agent uses is the one its ``save`` writes (the policy's state dict, in the
    SB3 zip and in the pipeline's safetensors checkpoint) and its ``load`` restores. ``kl_coef`` is only
    the starting value. Subclasses define :meth:`update`.

    Args:
        init: starting ``beta``.

    Raises:
        ValueError: ``init`` negative or not finite.
    """

    def __init__(self, init: float):
        if not np.isfinite(init) or init < 0:
            raise ValueError(f"KL coefficient must be a finite number >= 0, got {init!r}")
        self._beta = float(init)
        self._module: nn.Module | None = None
        self._buffer = ""

    @property
    def value(self) -> float:
        """``beta`` now (read from the module buffer once :meth:`store_in` was called)."""
        if self._module is None:
            return self._beta
        return float(self._module.get_buffer(self._buffer))

    @value.setter
    def value(self, beta: float) -> None:
        if self._module is None:
            self._beta = float(beta)
        else:
            self._module.get_buffer(self._buffer).fill_(float(beta))

    def store_in(self, module: nn.Module, buffer: str = "kl_beta") -> KLController:
        """Keep ``beta`` in ``module``'s 0-dim buffer ``buffer`` from now on; returns ``self``.

        A finite value already there (an agent restored by ``load`` or from a checkpoint) is kept: it is
        the adapted ``beta`` to resume from. NaN (a fresh policy) is replaced by this controller's ``beta``.
        The buffer is looked up by name at every access, so ``module.to(device)`` and
        ``load_state_dict`` (which may replace or overwrite it) never leave a stale copy behind.

        Raises:
            AttributeError: ``module`` has no buffer of that name.
        """
        stored = module.get_buffer(buffer)
        if not np.isfinite(float(stored)):
            stored.fill_(self._beta)
        self._module, self._buffer = module, buffer
        return self

    def update(self, current_kl: float, n_episodes: int) -> float:
        """Move ``beta`` after a batch of ``n_episodes`` episodes of mean summed KL ``current_kl``; return it."""
        raise NotImplementedError(f"{type(self).__name__} must define update()")

    def __getstate__(self) -> dict:
        # Pickled (copied, saved) on its own, a controller keeps its beta but not the module it was stored in.
        return {**self.__dict__, "_beta": self.value, "_module": None, "_buffer": ""}


class FixedKLController(KLController):
    """A constant KL coefficient.

    Args:
        value: ``beta``.
    """

    def __init__(self, value: float):
        super().__init__(value)

    def update(self, current_kl: float, n_episodes: int) -> float:
        """No-op; returns ``beta``."""
        return self.value

    def __repr__(self) -> str:
        return f"FixedKLController(value={self.value})"


class AdaptiveKLController(KLController):
    """Adaptive KL coefficient of Ziegler et al. (2019), as in lm-human-preferences and TRL.

    ``e = clip(KL / target - 1, -0.2, 0.2)``; ``beta <- beta * (1 + e * n_episodes / horizon)``.

    Args:
        init: starting ``beta``.
        target: target KL per episode, in nats (default :attr:`KLConfig.kl_target`, lm-human-preferences).
        horizon: how many episodes it takes to move ``beta`` by a factor ~e^{0.2} (default
            :attr:`KLConfig.kl_horizon`).
    """

    def __init__(self, init: float, target: float = KLConfig.kl_target, horizon: float = KLConfig.kl_horizon):
        if not np.isfinite(init) or init < 0:
            raise ValueError(f"initial KL coefficient must be a finite number >= 0, got {init!r}")
        if not target > 0 or not horizon > 0:
            raise ValueError(f"target ({target!r}) and horizon ({horizon!r}) must be > 0")
        super().__init__(init)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_episodes: int) -> float:
        """Move ``beta`` after a batch of ``n_episodes`` episodes whose mean summed KL is ``current_kl``.

        Returns:
            The new ``beta``.
        """
        if n_episodes <= 0 or not np.isfinite(current_kl):
            return self.value
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value = self.value * (1.0 + error * n_episodes / self.horizon)
        return self.value

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value}, target={self.target}, horizon={self.horizon})"


def make_kl_controller(
    kl_coef: float = KLConfig.kl_coef,
    adaptive_kl: bool = KLConfig.adaptive_kl,
    kl_target: float = KLConfig.kl_target,
    kl_horizon: float = KLConfig.kl_horizon,
) -> KLController:
    """The controller the KL options describe: :class:`AdaptiveKLController` or :class:`FixedKLController`.

    Args:
        kl_coef: starting ``beta``.
        adaptive_kl: adapt ``beta`` towards ``kl_target`` or keep it fixed.
        kl_target, kl_horizon: the adaptive controller's target (nats) and horizon (episodes).

    Returns:
        A controller holding ``beta`` itself; call :meth:`KLController.store_in` to keep it in a policy.
    """
    if adaptive_kl:
        return AdaptiveKLController(kl_coef, kl_target, kl_horizon)
    return FixedKLController(kl_coef)
