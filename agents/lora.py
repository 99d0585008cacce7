"""LoRA adapters on the policy LM, through PEFT (the ``lora`` extra), and the reference they make free.

With ``policy_kwargs={"lora_r": r, ...}`` the policy's LM gets rank-``r`` adapters
(Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): every LM weight is frozen and
only the adapters (and a value head, if any) train. The KL penalty's reference is then the same LM
with its adapters switched off (:class:`AdaptersOff`), not a deep copy: the policy holds one set of
LM weights instead of two. At the start the adapters' ``B`` matrices are zero, so the policy *is* the
reference, exactly as with a copy.

The options stay plain data (``policy_kwargs`` are pickled into saved agents): :class:`LoRAOptions`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

INSTALL_HINT = "pip install 'textrlhf[lora]' (from a checkout: pip install -e '.[lora]'), which installs peft"


@dataclass(frozen=True)
class LoRAOptions:
    """The policy's LoRA options (``r == 0``: no adapters, every LM weight trains).

    Attributes:
        r: adapter rank.
        alpha: scaling numerator (the update is ``alpha / r * B A``).
        dropout: always 0 (see :meth:`checked`).
        target_modules: module names that get adapters, or ``None`` for PEFT's default of the architecture.
    """

    r: int = 0
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: list[str] | None = None

    @classmethod
    def checked(cls, r: int, alpha: float | None, dropout: float, target_modules: Sequence[str] | None) -> LoRAOptions:
        """Validated options; ``alpha=None`` becomes ``2 * r``.

        Raises:
            ValueError: a negative or non-integer rank, a non-positive alpha, non-zero dropout, or an empty
                or non-string list of target modules.
        """
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"lora_r must be an int >= 0 (0: no LoRA, full fine-tuning), got {r!r}")
        if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
            raise ValueError(f"lora_alpha must be > 0 (or None for 2 * lora_r), got {alpha!r}")
        if dropout != 0:
            raise ValueError(
                f"lora_dropout must be 0, got {dropout!r}: the LM policies keep dropout off in every mode, so "
                f"that the first PPO ratio is exactly 1 (docs/design.md section 5)"
            )
        if target_modules is not None:
            if isinstance(target_modules, str) or not target_modules:
                raise ValueError(f"lora_target_modules must be a non-empty list of names, got {target_modules!r}")
            target_modules = [str(m) for m in target_modules]
        if r == 0:
            return cls()
        return cls(r, float(alpha) if alpha is not None else float(2 * r), 0.0, target_modules)

    @property
    def enabled(self) -> bool:
        return self.r > 0


def add_adapters(lm: nn.Module, options: LoRAOptions):
    """Inject LoRA adapters into ``lm`` in place and freeze its own weights; returns the ``PeftModel``.

    ``lm`` stays the same module (a ``*ForCausalLM`` whose target layers now carry adapters), so the
    policy keeps using ``lm.base_model`` as its trunk; the returned ``PeftModel`` wraps it for switching
    the adapters off, saving them and merging them.

    Raises:
        ImportError: peft is not installed (the message says how to install it).
        ValueError: a target module name that ``lm`` does not have (PEFT's message).
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ImportError(f"lora_r > 0 needs PEFT: {INSTALL_HINT}") from exc
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=0.0,
        target_modules=options.target_modules,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft 0.21 reads transformers 5's deprecated alias `is_gradient_checkpointing`; nothing to fix on our side.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(lm, config)


class AdaptersOff(nn.Module):
    """The reference LM of a LoRA policy: its LM run with the adapters switched off.

    A module (so ``parameters()`` says where the weights live), whose ``forward`` takes the LM's
    arguments. Its weights are the policy's own frozen LM weights: nothing is copied. It is not a full
    Hugging Face model (no ``generate`` or ``config``): to sample from the reference, use
    ``peft_model.disable_adapter()`` around the LM's own ``generate``.
    """

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, *args, **kwargs):
        with adapters_disabled(self.peft_model):
            return self.peft_model.get_base_model()(*args, **kwargs)


@contextmanager
def adapters_disabled(peft_model):
    """Run the block with ``peft_model``'s adapters off; their ``requires_grad`` is restored after.

    PEFT's ``disable_adapter`` toggles ``requires_grad`` of the adapter weights off and on; around a
    reference forward under ``torch.no_grad()`` that round trip leaves them as they were.
    """
    with torch.no_grad(), peft_model.disable_adapter():
        yield


def save_adapter(peft_model, path, merge: bool) -> None:
    """Write the adapters (``adapter_config.json`` + ``adapter_model.safetensors``), or with ``merge``
    a plain model folder with the adapters merged into a copy of the weights."""
    import copy

    if merge:
        merged = copy.deepcopy(peft_model).merge_and_unload()
        merged.save_pretrained(path, safe_serialization=True)
    else:
        peft_model.save_pretrained(path, safe_serialization=True)
