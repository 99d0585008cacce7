"""Pipeline configuration: the sections' layering, a ``--tiny`` preset, YAML overlay.

Precedence, lowest first: dataclass defaults < ``--tiny`` preset < YAML file (``--config``) < command
line. With ``--resume`` and no ``--config``, the run's own ``config.yaml`` is the YAML layer, so a
resumed run continues with exactly the settings it started with.

The YAML file has one section per stage (every key optional; unknown sections or keys are
rejected with the valid ones listed)::

    run:           {run_dir: runs/demo, seed: 0, algo: ppo, device: auto}
    sft:           {epochs: 2, learning_rate: 5.0e-5}
    preferences:   {samples_per_prompt: 4}
    reward_model:  {num_epochs: 3}
    rl:            {total_timesteps: 13824, kl_target: 6.0}
    evaluate:      {max_prompts: 32}

On the command line, ``run`` fields are plain flags (``--seed 1``) and the others are prefixed with
their section (``--rl.total-timesteps 4096``, ``--sft.epochs 1``); field docstrings are the ``--help``
(the parser is in ``scripts/stages/config_cli.py``). The sections themselves, their validation rules
and the library defaults they override are in ``scripts/stages/config_sections.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.stages.config_sections import (
    EvaluateConfig,
    PreferencesConfig,
    RewardModelStageConfig,
    RLConfig,
    RunConfig,
    SFTConfig,
)

SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "sft": SFTConfig,
    "preferences": PreferencesConfig,
    "reward_model": RewardModelStageConfig,
    "rl": RLConfig,
    "evaluate": EvaluateConfig,
}
"""YAML section -> its dataclass."""

TINY_BERT = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
TINY_PRESET: dict[str, dict[str, Any]] = {
    # The tiny random LM writes random tokens; VADER scores most of them exactly 0 (ties, skipped), so
    # the tiny preset's annotator is the length rule, which separates almost every pair.
    "run": {"model": "tiny", "annotator": "length", "max_new_tokens": 4, "max_prompt_tokens": 24},
    "sft": {
        "max_examples": 8,
        "epochs": 1.0,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_response_tokens": 8,
        "best_of_n": 2,
    },
    "preferences": {"max_prompts": 8, "samples_per_prompt": 4, "min_gap": 0.0, "batch_size": 16},
    "reward_model": {
        "random_init": True,
        "config_overrides": TINY_BERT,
        "learning_rate": 1e-3,
        "max_length": 32,
        "num_epochs": 2.0,
        "batch_size": 4,
        "logging_steps": 1,
        "eval_fraction": 0.25,
    },
    "rl": {
        "total_timesteps": 64,
        "n_envs": 2,
        "n_steps": 8,
        "batch_size": 8,
        "n_epochs": 1,
        "learning_rate": 1e-3,
        "max_prompts": 8,
        "checkpoint_every": 1,
    },
    "evaluate": {"max_prompts": 4, "samples_per_prompt": 1, "samples_in_report": 4},
}
"""What ``--tiny`` changes: every stage runs in seconds on 2 CPU cores."""


@dataclass
class PipelineConfig:
    """All stages' configs."""

    run: RunConfig = field(default_factory=RunConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    preferences: PreferencesConfig = field(default_factory=PreferencesConfig)
    reward_model: RewardModelStageConfig = field(default_factory=RewardModelStageConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {field: value}}``, as written to ``config.yaml``."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


# ----------------------------------------------------------------------------- layering
def check_layer(layer: Any, source: str) -> dict[str, dict[str, Any]]:
    """Validate a ``{section: {key: value}}`` mapping; unknown sections/keys raise, listing valid ones."""
    if layer is None:
        return {}
    if not isinstance(layer, dict):
        raise ValueError(f"{source}: expected a mapping of sections {list(SECTIONS)}, got {type(layer).__name__}")
    unknown = sorted(set(layer) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; valid sections: {list(SECTIONS)}")
    for section, values in layer.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
        valid = [f.name for f in dataclasses.fields(SECTIONS[section])]
        bad = sorted(set(values) - set(valid))
        if bad:
            raise ValueError(f"{source}: unknown key(s) {bad} in section {section!r}; valid keys: {valid}")
    return {k: dict(v or {}) for k, v in layer.items()}


def load_yaml(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and validate a pipeline YAML file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, or unknown sections/keys (values are checked by :func:`build_config`).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        layer = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:  # the parser's message carries line and column
        raise ValueError(
            f"config file {str(path)!r} is not valid YAML; fix or delete it: " + " ".join(str(exc).split())
        ) from exc
    return check_layer(layer, str(path))


def build_config(*layers: dict[str, dict[str, Any]]) -> PipelineConfig:
    """Apply layers (lowest precedence first) on top of the defaults; runs each dataclass's checks.

    Raises:
        ValueError, TypeError: an unknown key, or a value of the wrong type or out of range (the message
            names the flag / YAML key that sets it).
    """
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for layer in layers:
        for section, values in check_layer(layer, "config").items():
            merged[section].update(values)
    parts = {}
    for section, cls in SECTIONS.items():
        values = merged[section]
        if section == "run" and isinstance(values.get("stages"), str):
            values["stages"] = values["stages"].split(",")
        parts[section] = cls(**values)
    return PipelineConfig(**parts)
