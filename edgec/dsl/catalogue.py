"""The targets a spec can name: the built-in ``targets/*.edge`` files and plugins.

A plugin adds targets through the ``edgec.targets`` entry-point group. The entry
point's name is the target's name; what it loads must be one of

- a ``str`` holding ``.edge`` source text,
- a ``pathlib.Path`` (any ``os.PathLike``) to a ``.edge`` file,
- a callable taking no arguments that returns either of the above,

and that text must hold one ``target`` statement whose ``name`` is the entry point's
name. A plugin that breaks this contract is reported with its name and the problem,
only when its target is used or listed; a name given twice is an error naming both.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

ENTRY_POINT_GROUP = "edgec.targets"


@dataclass(frozen=True)
class TargetEntry:
    name: str
    # "built-in (targets/jetson-orin-nano.edge)" or "plugin my-pkg: module:attr".
    origin: str
    # -> (source text, path to show in diagnostics); raises TargetLoadError.
    load: Callable[[], tuple[str, str]]


class TargetLoadError(Exception):
    """A plugin target whose entry point does not give usable source."""


@dataclass(frozen=True)
class Catalogue:
    entries: dict[str, TargetEntry]
    # name -> every origin, for names defined more than once.
    duplicates: dict[str, tuple[str, ...]]

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> TargetEntry | None:
        return self.entries.get(name)


def builtin_directory() -> Path:
    """Where the built-in ``.edge`` files are: the installed ``edgec.targets``
    package, or the repository's ``targets/`` beside ``edgec/`` when not installed."""
    try:
        from importlib import resources
        directory = Path(str(resources.files("edgec.targets")))
        if directory.is_dir():
            return directory
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent.parent / "targets"


def _builtin_entries() -> list[TargetEntry]:
    directory = builtin_directory()
    entries = []
    for path in sorted(directory.glob("*.edge")):
        def load(path=path) -> tuple[str, str]:
            return path.read_text(encoding="utf-8"), str(path)
        entries.append(TargetEntry(path.stem, f"built-in ({path.name})", load))
    return entries


def _plugin_entries() -> list[TargetEntry]:
    entries = []
    try:
        found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # noqa: BLE001 - broken metadata must not break every spec
        return []
    for entry_point in found:
        dist = getattr(entry_point, "dist", None)
        owner = getattr(dist, "name", None) or "?"
        origin = f"plugin {owner} ({entry_point.value})"

        def load(entry_point=entry_point, origin=origin) -> tuple[str, str]:
            try:
                provided = entry_point.load()
                if callable(provided) and not isinstance(provided, (str, os.PathLike)):
                    provided = provided()
            except (Exception, SystemExit) as error:  # noqa: BLE001 - any plugin failure
                from edgec.plugins import plugin_failure  # is reported

                raise TargetLoadError(f"{origin} failed to load: "
                                      f"{plugin_failure(error)}") from error
            if isinstance(provided, os.PathLike):
                try:
                    return Path(provided).read_text(encoding="utf-8"), str(provided)
                except (OSError, UnicodeDecodeError) as error:
                    raise TargetLoadError(f"{origin} points at {provided}, "
                                          f"which cannot be read: {error}") from error
            if isinstance(provided, str):
                return provided, f"<{origin}>"
            raise TargetLoadError(
                f"{origin} gave a {type(provided).__name__}; an edgec.targets entry point "
                "must give .edge source text, a path to a .edge file, or a callable "
                "returning either")
        entries.append(TargetEntry(entry_point.name, origin, load))
    return entries


@functools.cache
def target_catalogue() -> Catalogue:
    entries: dict[str, TargetEntry] = {}
    origins: dict[str, list[str]] = {}
    for entry in _builtin_entries() + _plugin_entries():
        origins.setdefault(entry.name, []).append(entry.origin)
        entries.setdefault(entry.name, entry)
    duplicates = {name: tuple(found) for name, found in origins.items() if len(found) > 1}
    return Catalogue(entries, duplicates)
