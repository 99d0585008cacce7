"""Make the repository root importable so ``import course`` works under plain ``pytest`` too
(``course`` is not in the installed package list; ``python -m pytest`` adds the cwd anyway)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
