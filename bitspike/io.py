"""Atomic writes: a file or a folder appears whole, or not at all.

Every file bitspike writes for a user or a cache (manifests, checkpoints, JSON
summaries, generated Verilog, build archives, simulator builds) goes through
this module. The content is written under a private temporary name in the
destination's own folder (so the final rename never crosses a file system),
flushed to disk, and renamed over the destination with :func:`os.replace`. A
run killed at any moment, or two processes writing the same path, leave either
the previous file or a complete new one, never half a file.

Use :func:`atomic_write_bytes` / :func:`atomic_write_text` for contents already
in memory, :func:`atomic_file` for writers that want a file object
(``torch.save``, ``zipfile``), :func:`write_json` for JSON summaries, and
:func:`atomic_dir` for a folder built in several steps (caches).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_file", "atomic_write_bytes", "atomic_write_text", "write_json", "json_text", "atomic_dir"]


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path``.

    Parameters
    ----------
    path
        The destination. Its parent folder is created if missing.
    mode
        ``"wb"`` (default) or ``"w"``.
    encoding
        Text encoding for ``mode="w"`` (default UTF-8).

    Yields
    ------
    file object
        Write the whole content to it. If the block raises, the temporary file is
        removed and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as fh:
            # mkstemp makes the file private (0600); give it the mode a plain open() would have
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (newlines written as given); returns ``path``."""
    with atomic_file(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def json_text(payload: Any) -> str:
    """The canonical JSON text bitspike writes: indented, keys sorted, one final newline.

    Equal payloads give byte-identical text. numpy scalars and arrays and
    :class:`~pathlib.Path` objects are converted; anything else not JSON-serialisable
    raises :class:`TypeError`.
    """
    return json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(path: str | os.PathLike | None, payload: Any) -> None:
    """Write ``payload`` as :func:`json_text` to ``path`` atomically; ``path=None`` writes nothing.

    ``None`` is accepted so that a command can pass its optional ``--json PATH``
    straight through.
    """
    if path is None:
        return
    atomic_write_text(path, json_text(payload))


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name next to ``path``, then rename it to ``path``.

    For caches shared by parallel processes: each builds in its own private
    folder, and the first to finish publishes it.

    Parameters
    ----------
    path
        The folder to publish. Its parent is created if missing.
    replace
        What to do when ``path`` exists at the end. ``False`` (default): another
        process published the same folder first; keep theirs and drop this one
        (the caller's key must identify the content). ``True``: remove the
        existing folder (a stale or half-written one) first; call it only while
        holding a lock on ``path``.

    Yields
    ------
    pathlib.Path
        The empty temporary folder to fill. If the block raises, it is removed and
        ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent))
    try:
        yield work
        if replace and path.exists():
            shutil.rmtree(path)
        try:
            os.replace(work, path)
        except OSError:
            if not path.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
