"""Atomic folder writes: build in a temporary sibling, then rename into place.

Used for every model folder the project writes (the offline model cache, exported policies, reward
models, pipeline checkpoints): ``os.replace`` is atomic on POSIX file systems, so a process killed at
any moment leaves either the old folder or the complete new one, never a half-written folder
(docs/design.md section 6).

The finished folder gets the permissions the user's umask gives ordinary files and folders (e.g. 0755
folders, 0644 files for umask 022), as if made with ``os.makedirs`` and ``open``: ``tempfile.mkdtemp``
always creates 0700, and some writers (``transformers`` for ``model.safetensors``) create 0600 files,
which would leave an exported model readable by its owner alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_UMASK_LOCK = threading.Lock()

FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""``OSError.errno`` values of a full file system or an exhausted quota."""

LOW_DISK_BYTES = 256 * 2**20
"""Free space under which a failed write is reported as a :class:`FolderWriteError` whatever its type: writers
such as ``torch.save`` report a full disk as a ``RuntimeError`` ("unexpected pos ... vs ...")."""


class FolderWriteError(OSError):
    """Writing a folder failed, most often on a full disk; its previous contents (if any) are untouched.

    Raised by :func:`atomic_dir` from the writer's own error (kept as ``__cause__``), with the file system's
    free space in the message.
    """


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _write_error(path: Path, exc: Exception) -> FolderWriteError | None:
    """The :class:`FolderWriteError` for ``exc`` raised while writing ``path``, or None for another failure."""
    if isinstance(exc, FolderWriteError):
        return None  # from an inner atomic_dir: already says which folder
    try:
        free = _free_bytes(path.parent)
    except OSError:
        free = None
    full = isinstance(exc, OSError) and exc.errno in FULL_DISK_ERRNOS
    if not full and (free is None or free >= LOW_DISK_BYTES):
        return None  # not a full disk as far as we can tell (a missing source file stays a FileNotFoundError)
    space = "free space unknown" if free is None else f"{free / 2**20:.0f} MiB free on its file system"
    kept = f"the previous {path.name} is untouched" if path.exists() else f"no {path.name} was written"
    return FolderWriteError(f"could not write {path} ({type(exc).__name__}: {exc}; {space}): {kept}")


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status`` (kernel 4.7+), which is race-free. Elsewhere the only
    way is ``os.umask(0)`` followed by restoring the old value; the lock keeps two threads of this
    module from interleaving the swap (the second would read 0 and restore 0 for good), but a file that
    another thread creates in the microseconds between the two calls gets umask 0. We read it at each
    call rather than once at import so that a umask the program sets later is honoured.
    """
    with contextlib.suppress(OSError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            match = re.search(r"^Umask:\s*([0-7]+)\s*$", fh.read(), re.MULTILINE)
        if match:
            return int(match.group(1), 8)
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def apply_default_permissions(root: str | os.PathLike, umask: int | None = None) -> None:
    """Give ``root`` and everything under it the permissions of a fresh ``os.makedirs`` / ``open``.

    Folders become ``0o777 & ~umask``; files ``0o666 & ~umask``, or ``0o777 & ~umask`` if any execute
    bit was set (scripts stay runnable). Symbolic links are left alone (``chmod`` would follow them).
    """
    umask = current_umask() if umask is None else umask
    dir_mode, file_mode, exec_mode = 0o777 & ~umask, 0o666 & ~umask, 0o777 & ~umask
    os.chmod(root, dir_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                os.chmod(path, dir_mode)
            elif stat.S_ISREG(mode):
                os.chmod(path, exec_mode if mode & 0o111 else file_mode)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place when the block succeeds.

    Example::

        with atomic_dir(run / "sft" / "model") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

    An existing folder is replaced only after the new one is complete; on an exception the
    temporary folder is deleted and the old one (if any) is left untouched. A full disk (an ``OSError``
    with an errno of ``FULL_DISK_ERRNOS``, or any failure while the file system has under
    ``LOW_DISK_BYTES`` free) is raised as a :class:`FolderWriteError` that says so (the writer's error is
    its ``__cause__``). The new folder and its
    contents get the umask's ordinary permissions (:func:`apply_default_permissions`), not the
    temporary folder's 0700.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        try:
            yield tmp
        except Exception as exc:
            error = _write_error(path, exc)
            if error is None:
                raise
            raise error from exc
        apply_default_permissions(tmp)  # before the rename: the folder appears with its final modes
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
