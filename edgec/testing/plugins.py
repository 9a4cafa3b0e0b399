"""Plugins installed for a test without pip: a distribution's files and its
``.dist-info`` (METADATA and entry points) written into a folder that the test puts on
``sys.path`` or ``PYTHONPATH``, so that ``importlib.metadata`` finds its entry points as
it finds an installed plugin's."""

from __future__ import annotations

import shutil
from pathlib import Path


def fake_distribution(site: Path, name: str, version: str, entry_points: dict[str, str],
                      package: Path | None = None, group: str = "edgec.passes",
                      groups: dict[str, dict[str, str]] | None = None) -> None:
    """Write distribution ``name`` into ``site``: a copy of ``package`` (a folder), if
    given, and entry points ``{entry name: "module:attribute"}`` in ``group``, plus
    those of ``groups`` (``{group: {entry name: "module:attribute"}}``) for a
    distribution that declares several groups, as pyproject's ``entry-points`` table does."""
    site.mkdir(parents=True, exist_ok=True)
    if package is not None:
        shutil.copytree(package, site / package.name, dirs_exist_ok=True)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    tables = {group: dict(entry_points)} if entry_points else {}
    for extra, entries in (groups or {}).items():
        tables.setdefault(extra, {}).update(entries)
    lines = []
    for table, entries in tables.items():
        lines += [f"[{table}]"] + [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
