"""textenv: token generation as a Gymnasium environment (``TextRLHF-v0``).

``import textenv; gym.make("TextRLHF-v0")`` or, without the import, ``gym.make("textenv:TextRLHF-v0")``.
"""

import gymnasium as gym

from textenv.config import EnvConfig
from textenv.env import TextRLHFEnv
from textenv.models import (
    OFFLINE_MODEL,
    TINY_MODEL,
    ModelNotFoundError,
    OfflineModelMissingError,
    load_model,
    load_tokenizer,
)
from textenv.prompts import PromptTruncatedWarning, load_prompts

__version__ = "0.1.0"
"""The textrlhf release; ``setup.cfg`` reads it from here (statically, without importing) as the package version."""

__all__ = [
    "__version__",
    "OFFLINE_MODEL",
    "TINY_MODEL",
    "EnvConfig",
    "ModelNotFoundError",
    "OfflineModelMissingError",
    "PromptTruncatedWarning",
    "TextRLHFEnv",
    "load_model",
    "load_prompts",
    "load_tokenizer",
]

if "TextRLHF-v0" not in gym.registry:
    # No max_episode_steps: a TimeLimit wrapper would report the horizon as `truncated`, and the
    # horizon is part of this task (docs/design.md section 3).
    gym.register(id="TextRLHF-v0", entry_point="textenv.env:TextRLHFEnv")
