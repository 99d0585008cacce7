"""The saved reward-model folder: what :meth:`BradleyTerryRewardModel.save_pretrained` writes and reads.

A folder holds the backbone (``save_pretrained``, safetensors), its tokenizer, the scalar head
(``reward_head.safetensors``) and ``reward_model.json``: the normalisation ``gain``/``bias``, whether the
trunk is causal, the pooling, the tokenizer's padding side, the :class:`RewardModelConfig` and free-form
metadata (training config and metrics). Data only, no pickles (docs/design.md section 6).

This module knows the files and nothing of the model class, so
:class:`reward_models.bradley_terry.BradleyTerryRewardModel` builds itself from a :class:`SavedRewardModel`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reward_models.config import RewardModelConfig, config_from_dict
from textrlhf.atomic import atomic_dir

META_FILE = "reward_model.json"
"""Name of the metadata file; its presence marks a reward-model folder."""
HEAD_FILE = "reward_head.safetensors"
"""Name of the scalar head's weights."""
FORMAT = "textrlhf-bradley-terry-v1"
"""Value of ``reward_model.json``'s ``format`` field."""


@dataclass
class SavedRewardModel:
    """Everything in a reward-model folder, loaded (the model class assembles itself from it).

    Attributes:
        backbone: the trunk, float32, as ``AutoModel`` loads it.
        tokenizer: its tokenizer with the saved padding side.
        config: the saved :class:`RewardModelConfig` (``random_init`` off, no ``config_overrides``: the
            saved weights and config already hold them), with the saved pooling.
        head_state: the head's state dict (``weight`` ``(1, hidden)``, ``bias`` ``(1,)``).
        causal: whether the trunk is a causal LM.
        gain: normalisation gain.
        bias: normalisation bias.
        metadata: the saved metadata.
    """

    backbone: nn.Module
    tokenizer: Any
    config: RewardModelConfig
    head_state: dict[str, torch.Tensor]
    causal: bool
    gain: float
    bias: float
    metadata: dict[str, Any] = field(default_factory=dict)


def write_reward_model(
    path: str | os.PathLike,
    backbone: nn.Module,
    tokenizer: Any,
    head: nn.Module,
    meta: Mapping[str, Any],
) -> None:
    """Write a reward-model folder atomically.

    The folder is written to a temporary sibling and renamed into place (docs/design.md section 6), so an
    interrupted save never leaves a half-written model.

    Args:
        path: the folder (replaced if it exists).
        backbone: the trunk (``save_pretrained`` with safetensors).
        tokenizer: its tokenizer.
        head: the scalar head; its state dict goes to ``reward_head.safetensors``.
        meta: the fields of ``reward_model.json`` besides ``format`` (``gain``, ``bias``, ``causal``,
            ``pooling``, ``padding_side``, ``config``, ``metadata``); JSON-serialisable, other values
            are written with ``str``.
    """
    from safetensors.torch import save_file

    with atomic_dir(Path(path).resolve()) as tmp:
        backbone.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, tmp / HEAD_FILE)
        (tmp / META_FILE).write_text(json.dumps({"format": FORMAT, **meta}, indent=2, default=str))


def read_reward_model(path: str | os.PathLike, batch_size: int | None = None) -> SavedRewardModel:
    """Load the parts of a folder written by :func:`write_reward_model`.

    Args:
        path: the folder.
        batch_size: pairs per forward when scoring (default: the saved config's).

    Returns:
        The loaded :class:`SavedRewardModel` (on CPU).

    Raises:
        FileNotFoundError: the folder lacks ``reward_model.json``.
    """
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a reward-model folder (no {META_FILE}); create one with "
            f"scripts/train_reward_model.py or BradleyTerryRewardModel.save_pretrained"
        )
    meta = json.loads((path / META_FILE).read_text())
    config = config_from_dict(RewardModelConfig, {**meta["config"], "random_init": False, "config_overrides": {}})
    if batch_size is not None:
        config.batch_size = batch_size
    config.pooling = meta["pooling"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = meta["padding_side"]
    return SavedRewardModel(
        backbone=AutoModel.from_pretrained(path, dtype=torch.float32),
        tokenizer=tokenizer,
        config=config,
        head_state=load_file(path / HEAD_FILE),
        causal=bool(meta["causal"]),
        gain=float(meta["gain"]),
        bias=float(meta["bias"]),
        metadata=dict(meta.get("metadata", {})),
    )


__all__ = ["FORMAT", "HEAD_FILE", "META_FILE", "SavedRewardModel", "read_reward_model", "write_reward_model"]
