"""The safe-output rule every command that writes a file follows.

Before anything touches an output:

- it must not be one of the command's inputs, nor another of its outputs (the errors
  file), nor a directory;
- if it exists, every line must be one this project wrote (a JSON object with the row's
  key); a file of someone else's is refused untouched, torn-line repair included;
- its folder is created when missing.

While a command writes it, the output is locked (an advisory ``flock`` on the file
itself): a second process on the same output fails at once, naming the one that holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aft_sdk.errors import ConfigError
from aft_sdk.jsonl import check_ours


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output(
    output: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str] | None] = (),
    others: Iterable[tuple[str, str | os.PathLike[str] | None]] = (), key: str = "id",
    what: str = "output",
) -> Path:
    """Checks ``output`` against the rule above; returns it resolved, its folder made.

    Args:
        output: The file the command will write.
        inputs: Files the command reads (never to be written).
        others: ``(name, path)`` of the command's other outputs (they must differ).
        key: The field every line of an existing output must hold.
        what: What the output is called in messages (``output``, ``errors file``).

    Raises:
        ConfigError: The rule is broken; nothing was written.
    """
    out = Path(output)
    if out.is_dir():
        raise ConfigError(f"the {what} {out} is a directory; name a file in it instead")
    for src in inputs:
        if src is not None and _same(out, Path(src)):
            raise ConfigError(f"the {what} {out} is also the input; write to another file "
                              "(the input would be overwritten)")
    for name, other in others:
        if other is not None and _same(out, Path(other)):
            raise ConfigError(f"the {what} {out} is also the {name}; give them different "
                              "paths (one would overwrite the other)")
    if out.exists():
        check_ours(out, key=key)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the folder of the {what} {out}: {e.strerror}") from e
    return out.resolve()


@contextmanager
def output_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``path`` (created if missing) while writing.

    Raises:
        ConfigError: Another process (or another run in this one) holds it.
    """
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{p} is being written by {_holder(p)}; wait for it to finish, or write "
                "to another file (two writers would duplicate rows)") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(path: Path) -> str:
    """The process holding a ``flock`` on ``path``, as well as ``/proc/locks`` tells."""
    try:
        ino = path.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and fields[-3].rsplit(":", 1)[-1] == str(ino):
                pid = fields[fields.index("FLOCK") + 3]
                if int(pid) == os.getpid():
                    return "another run in this process"
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    return f"process {pid} ({cmd.decode(errors='replace').strip()[:120]})"
                except OSError:
                    return f"process {pid}"
    except (OSError, ValueError, IndexError):
        pass
    return "another process"
