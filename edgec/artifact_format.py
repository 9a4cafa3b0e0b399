"""The artifact folder's format: its version, the names of its record files and the
manifest reader. Shared by `edgec.publish` (the cache and the swap check what a folder
holds) and `edgec.artifact` (which loads it), below both.
"""

from __future__ import annotations

import json
import os
import stat

# One verification for the compiler (up-to-date, cache) and the device runtime (load).
from edgec_runtime.artifact import (RUNTIME_BACKENDS, plain_name,  # noqa: F401 (re-exported)
                                    verify_files)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MEASUREMENTS = "measurements.json"
REPORT = "report.txt"


# The most a manifest.json may hold: far above any real one, far below harm.
MANIFEST_LIMIT = 64 << 20


def read_manifest(folder: str, *, dir_fd: int | None = None) -> dict | None:
    """``folder``'s manifest.json when it is an edgec manifest (a JSON object with
    ``format_version``, ``edgec_version``, ``cache_key`` and a ``files`` table), else
    None. Read without following a link, from a regular file of bounded size."""
    path = MANIFEST if dir_fd is not None else os.path.join(folder, MANIFEST)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > MANIFEST_LIMIT:
                return None
            manifest = json.loads(f.read(MANIFEST_LIMIT + 1).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("format_version"), int)
            and isinstance(manifest.get("edgec_version"), str)
            and isinstance(manifest.get("cache_key"), str)
            and isinstance(manifest.get("files"), dict)):
        return None
    return manifest
