"""OpenMP settings that keep CPU training fair on a shared machine (docs/install.md, "Shared machines").

torch's CPU kernels run on an OpenMP thread pool (libgomp in the PyPI and CPU wheels). Between two
parallel regions its threads spin-wait for a while before they sleep, which costs nothing on an idle
machine and a great deal on a busy one: the spinning threads take the cores the other programs (and
torch's own late threads) need, so a training step slows far more than by the share of CPU it loses
(measured in docs/results/2026-12-01-cpu-contention.md). With ``OMP_WAIT_POLICY=PASSIVE`` waiting
threads sleep at once.

OpenMP reads these variables once, when torch loads it: they must be in the environment before the
first ``import torch``. The command-line scripts apply :data:`OPENMP_DEFAULTS` first thing (in
``scripts/__init__.py``); a variable the user already set is left alone, and
``TEXTRLHF_OPENMP_DEFAULTS=0`` leaves OpenMP's own defaults. Library users who want the same set the
variable in their shell or call :func:`apply_openmp_defaults` before importing torch.

Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys

OPENMP_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
"""The variables :func:`apply_openmp_defaults` sets when the environment does not (see the module docstring)."""
OPT_OUT = "TEXTRLHF_OPENMP_DEFAULTS"
"""Set this environment variable to ``0`` to keep OpenMP's own defaults in the scripts."""


def apply_openmp_defaults() -> dict[str, str]:
    """Put each of :data:`OPENMP_DEFAULTS` the environment lacks into ``os.environ``.

    Returns:
        The variables it set: none when ``TEXTRLHF_OPENMP_DEFAULTS=0``, when the user set them already, or
        when torch is already imported (OpenMP has read its settings by then; setting them would only
        mislead child processes into looking configured).
    """
    if os.environ.get(OPT_OUT, "1").strip() == "0" or "torch" in sys.modules:
        return {}
    missing = {name: value for name, value in OPENMP_DEFAULTS.items() if name not in os.environ}
    os.environ.update(missing)
    return missing


__all__ = ["OPENMP_DEFAULTS", "OPT_OUT", "apply_openmp_defaults"]
