"""Reading a user-named file safely: a regular file only (never a FIFO, a terminal,
/dev/zero or /dev/stdin, which could block or never end), and never more than a bound.

The check is made on the opened descriptor (``fstat``), so a file swapped after a
check cannot slip through, and the open itself cannot block (``O_NONBLOCK``: opening
a FIFO with no writer would hang).
"""

from __future__ import annotations

import errno
import os
import stat


class FileRefused(OSError):
    """The path names something that is not a regular file, or a file over the bound.
    An OSError, so callers that report unreadable files report these the same way."""

    def __init__(self, path: str, reason: str):
        super().__init__(errno.EINVAL, reason, path)


def open_regular(path: str | os.PathLike, max_bytes: int | None = None) -> int:
    """A read-only descriptor on ``path``, which must be a regular file of at most
    ``max_bytes`` bytes. Raises OSError (`FileRefused` for the checks here)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileRefused(str(path), "is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(str(path), "is not a regular file (a device, FIFO or socket)")
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileRefused(str(path), f"is {st.st_size} bytes, over the limit of "
                                         f"{_size(max_bytes)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of regular file ``path``, refused (`FileRefused`) when it is not a
    regular file or holds more than ``max_bytes`` bytes; never reads more than
    ``max_bytes + 1`` bytes, even from a file that grows while it is read."""
    fd = open_regular(path, max_bytes)
    with os.fdopen(fd, "rb", buffering=0) as f:
        # Sized by the file, not the bound: read(n) reserves n bytes before reading.
        size = os.fstat(fd).st_size
        parts, total = [], 0
        want = min(size, max_bytes) + 1
        while True:
            chunk = f.read(want)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FileRefused(str(path), f"holds more than the limit of {_size(max_bytes)}")
            want = min(1 << 20, max_bytes + 1 - total)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"
