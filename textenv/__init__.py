"""textenv: token generation as a Gymnasium environment (``TextRLHF-v0``).

``import textenv; gym.make("TextRLHF-v0")`` or, without the import, ``gym.make("textenv:TextRLHF-v0")``;
``gym.make_vec("TextRLHF-v0", num_envs=N)`` builds the native :class:`TextRLHFVectorEnv` (its
``vector_entry_point``), ``vectorization_mode="sync"``/``"async"`` Gymnasium's wrappers of ``N`` single envs.
"""

import gymnasium as gym

from textenv.config import EnvConfig
from textenv.env import TextRLHFEnv
from textenv.vector_env import TextRLHFVectorEnv
from textrlhf import __version__
from textrlhf.models import (
    OFFLINE_MODEL,
    TINY_MODEL,
    ModelNotFoundError,
    OfflineModelMissingError,
    load_model,
    load_tokenizer,
)
from textrlhf.prompts import PromptTruncatedWarning, load_prompts

__all__ = [
    "__version__",
    "OFFLINE_MODEL",
    "TINY_MODEL",
    "EnvConfig",
    "ModelNotFoundError",
    "OfflineModelMissingError",
    "PromptTruncatedWarning",
    "TextRLHFEnv",
    "TextRLHFVectorEnv",
    "load_model",
    "load_prompts",
    "load_tokenizer",
]

if "TextRLHF-v0" not in gym.registry:
    # No max_episode_steps: a TimeLimit wrapper would report the horizon as `truncated`, and the
    # horizon is part of this task (docs/design.md section 3).
    gym.register(
        id="TextRLHF-v0",
        entry_point="textenv.env:TextRLHFEnv",
        vector_entry_point="textenv.vector_env:TextRLHFVectorEnv",
    )
