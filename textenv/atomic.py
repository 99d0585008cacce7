"""Atomic folder writes: build in a temporary sibling, then rename into place.

Used for every model folder the project writes (the offline model cache, exported policies, reward
models, pipeline checkpoints): ``os.replace`` is atomic on POSIX file systems, so a process killed at
any moment leaves either the old folder or the complete new one, never a half-written folder
(DESIGN section 6).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place when the block succeeds.

    Example::

        with atomic_dir(run / "sft" / "model") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

    An existing folder is replaced only after the new one is complete; on an exception the
    temporary folder is deleted and the old one (if any) is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
