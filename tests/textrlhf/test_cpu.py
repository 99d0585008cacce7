"""textrlhf.cpu: the OpenMP defaults the scripts apply before torch loads OpenMP."""

import os
import subprocess
import sys

from textrlhf.cpu import OPENMP_DEFAULTS, apply_openmp_defaults


def _child(code: str, **env: str | None) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` changes (None removes); its stdout."""
    child = dict(os.environ)
    for k, v in env.items():
        if v is None:
            child.pop(k, None)
        else:
            child[k] = v
    return subprocess.run([sys.executable, "-c", code], env=child, capture_output=True, text=True, check=True).stdout


def test_scripts_set_passive_waiting_before_torch_loads_and_respect_the_user():
    code = "import scripts, os, sys; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    assert _child(code, OMP_WAIT_POLICY=None, TEXTRLHF_OPENMP_DEFAULTS=None).split() == ["PASSIVE", "False"]
    assert _child(code, OMP_WAIT_POLICY="ACTIVE").split()[0] == "ACTIVE"  # the user's setting wins
    assert _child(code, OMP_WAIT_POLICY=None, TEXTRLHF_OPENMP_DEFAULTS="0").split()[0] == "None"  # opt-out


def test_nothing_is_set_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401  (loaded: OpenMP has read its settings)

    for name in OPENMP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TEXTRLHF_OPENMP_DEFAULTS", raising=False)
    assert apply_openmp_defaults() == {}
    assert all(name not in os.environ for name in OPENMP_DEFAULTS)
