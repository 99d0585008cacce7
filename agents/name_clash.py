"""Warn when another installed distribution also provides the top-level package ``agents``.

Two distributions that install the same top-level package write into the same ``site-packages/agents/``
folder, so whichever was installed last overwrites the other's files and both can break. Known ones:
the OpenAI Agents SDK (``pip install openai-agents``, ``import agents``) and PyPI's ``agents``. The fix
is one virtual environment per project (README, "Install"). Only the case where this package is the
one imported can be detected here; when the other one won, ``import agents`` is theirs and this code
never runs.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable

#: Distributions known to install a top-level package named ``agents``.
CLASHING_DISTRIBUTIONS = ("openai-agents", "agents")


class PackageNameClashWarning(UserWarning):
    """Another installed distribution provides a package named ``agents`` too."""


def clashing_distributions(lookup: Callable[[str], object] = importlib.metadata.distribution) -> list[str]:
    """The installed distributions of :data:`CLASHING_DISTRIBUTIONS` (``lookup`` is replaceable for tests)."""
    found = []
    for name in CLASHING_DISTRIBUTIONS:
        try:
            lookup(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def warn_on_name_clash(lookup: Callable[[str], object] = importlib.metadata.distribution) -> None:
    """Warn (:class:`PackageNameClashWarning`) if a distribution of :data:`CLASHING_DISTRIBUTIONS` is installed."""
    found = clashing_distributions(lookup)
    if found:
        warnings.warn(
            f"{', '.join(found)} is installed in this environment and also provides the package `agents`; "
            "the two overwrite each other's files. Install textrlhf in its own virtual environment "
            "(python -m venv .venv), without it.",
            PackageNameClashWarning,
            stacklevel=3,
        )
