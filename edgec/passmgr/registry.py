"""Finding passes: every pass, built-in or not, comes from the ``edgec.passes`` entry-point group.

A plugin distribution declares ``[project.entry-points."edgec.passes"] my-pass =
"my_plugin.passes:MyPass"``. The registry loads each entry point on its own: one
that fails to import, or that does not fit the contract (a frozen `Pass` dataclass
whose ``name`` equals the entry-point name), is reported by distribution and entry
point and does not take the others down. Two distributions offering the same pass
name is an error naming both; the name is then unusable until one is removed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.metadata
import re
import types
import typing
from dataclasses import dataclass

from edgec.diagnostics import Diagnostic, Location, UsageError
from edgec.passmgr.base import OptionError, Pass
from edgec.passmgr.pipeline import GROUPS, Option, PassInvocation, Pipeline
from edgec.plugins import distribution_name, plugin_failure

ENTRY_POINT_GROUP = "edgec.passes"
BUILTIN_DISTRIBUTION = "edgec"
# The code of the diagnostic for a pass name no installed pass has.
UNKNOWN_PASS = "pipeline.unknown-pass"
_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class PassEntry:
    name: str
    cls: type[Pass]
    source: str          # "built-in" or the plugin distribution's name
    entry_point: str     # "name = module:attr"


class PassRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, PassEntry] = {}
        # name -> sources, for names offered by more than one distribution
        self._duplicates: dict[str, list[str]] = {}
        # name -> why it is unusable (failed import, contract violation)
        self._broken: dict[str, str] = {}
        self.problems: list[Diagnostic] = []

    # -- loading
    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> "PassRegistry":
        registry = cls()
        eps = sorted(importlib.metadata.entry_points(group=group),
                     key=lambda ep: (distribution_name(ep) != BUILTIN_DISTRIBUTION, distribution_name(ep), ep.name))
        for ep in eps:
            registry._load(ep)
        return registry

    def _load(self, ep: importlib.metadata.EntryPoint) -> None:
        dist = distribution_name(ep)
        source = "built-in" if dist == BUILTIN_DISTRIBUTION else dist
        described = f"{ep.name} = {ep.value}"
        who = "built-in pass" if source == "built-in" else f"plugin '{dist}'"
        try:
            obj = ep.load()
        except (Exception, SystemExit) as e:  # a plugin's import error must not take the
            # others down; nor may its sys.exit() end edgec with "success" having done
            # nothing. KeyboardInterrupt still stops edgec.
            reason = plugin_failure(e)
            self._broken[ep.name] = f"{who} failed to load ({reason})"
            self.problems.append(Diagnostic.warning(
                f"{who} failed to load entry point '{described}': {reason}",
                code="plugin.import-failed"))
            return
        problem = contract_problem(ep.name, obj)
        if problem:
            self._broken[ep.name] = f"{who} does not fit the pass contract ({problem})"
            self.problems.append(Diagnostic.warning(
                f"{who} entry point '{described}' is not a valid pass: {problem}",
                code="plugin.bad-pass"))
            return
        self.register(obj, source=source, entry_point=described)

    def register(self, cls: type[Pass], *, source: str = "built-in",
                 entry_point: str = "") -> None:
        name = cls.name
        if name in self._entries or name in self._duplicates:
            sources = self._duplicates.setdefault(name, [self._entries[name].source]
                                                  if name in self._entries else [])
            sources.append(source)
            self._entries.pop(name, None)
            self.problems.append(Diagnostic.error(
                f"pass '{name}' is defined twice: by {_and(sources)}",
                code="plugin.duplicate-pass",
                notes=["uninstall one of them, or ask its author to rename the pass"]))
            return
        self._entries[name] = PassEntry(name, cls, source, entry_point)

    # -- queries
    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[PassEntry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str, *, offset: int | None = None, text: str | None = None) -> type[Pass]:
        entry = self._entries.get(name)
        if entry is not None:
            return entry.cls
        if name in self._duplicates:
            raise UsageError(_located(f"pass '{name}' is ambiguous: it is defined by "
                                      f"{_and(self._duplicates[name])}", offset, text))
        if name in self._broken:
            raise UsageError(_located(f"pass '{name}' is unavailable: {self._broken[name]}",
                                      offset, text))
        notes = []
        close = difflib.get_close_matches(name, list(self._entries) + list(GROUPS), n=1)
        if close:
            notes.append(f"did you mean '{close[0]}'?")
        notes.append("`edgec passes` lists the installed passes")
        raise UsageError(_located(f"unknown pass '{name}'", offset, text, notes,
                                  code=UNKNOWN_PASS, length=len(name)))

    def create(self, invocation: PassInvocation, text: str | None = None) -> Pass:
        """An instance of the invoked pass with its options converted to their types."""
        cls = self.get(invocation.name, offset=invocation.offset, text=text)
        options = {o.name: o for o in cls.options()}
        kwargs = {}
        for opt in invocation.options:
            spec = options.get(opt.key)
            if spec is None:
                close = difflib.get_close_matches(opt.key, list(options), n=1)
                notes = [f"did you mean '{close[0]}'?"] if close else []
                notes.append(f"'{invocation.name}' takes: "
                             f"{', '.join(options) if options else 'no options'}")
                raise UsageError(_located(f"pass '{invocation.name}' has no option '{opt.key}'",
                                          opt.offset, text, notes))
            try:
                kwargs[spec.field_name] = convert_option(opt, spec.type)
            except ValueError as e:
                raise UsageError(_located(f"option '{opt.key}' of pass '{invocation.name}': {e}",
                                          opt.offset, text)) from None
        try:
            return cls(**kwargs)
        except OptionError as e:
            written = next((o for o in invocation.options if o.key == e.option), None)
            if written is None:  # a default that fails only with the options given
                raise UsageError(_located(f"pass '{invocation.name}': {e}", invocation.offset,
                                          text)) from None
            raise UsageError(_located(f"option '{e.option}' of pass '{invocation.name}': "
                                      f"{e.message}", written.offset, text)) from None
        except (TypeError, ValueError) as e:
            raise UsageError(_located(f"pass '{invocation.name}': {e}", invocation.offset,
                                      text)) from None

    def check_pipeline(self, pipeline: Pipeline, text: str | None = None) -> None:
        """Raise UsageError naming every pass of ``pipeline`` that is unknown or whose
        options are unknown, ill-typed or invalid (each pass is constructed)."""
        problems = self.pipeline_problems(pipeline, text)
        if problems:
            raise UsageError(problems)

    def pipeline_problems(self, pipeline: Pipeline, text: str | None = None) -> list[Diagnostic]:
        """The errors `check_pipeline` raises, one per bad element, in text order."""
        problems: list[Diagnostic] = []
        for element in pipeline:
            try:
                if element.children is not None:
                    _check_group_options(element, text)
                else:
                    self.create(element, text)
            except UsageError as e:
                problems.extend(e.diagnostics)
            if element.children is not None:
                problems.extend(self.pipeline_problems(element.children, text))
        return problems


def _check_group_options(element: PassInvocation, text: str | None) -> None:
    for opt in element.options:
        if opt.key != "max-iterations":
            raise UsageError(_located(f"group '{element.name}' has no option '{opt.key}'",
                                      opt.offset, text, ["it takes: max-iterations"]))
        try:
            if int(opt.text) < 1:
                raise ValueError
        except ValueError:
            raise UsageError(_located("max-iterations must be a positive integer",
                                      opt.offset, text)) from None


def convert_option(opt: Option, annotation) -> object:
    """Turn an option's text into a value of the field's declared type."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item_type = args[0] if args else str
        items = [s.strip() for s in opt.text.split(",")] if opt.text else []
        return tuple(_scalar(s, item_type) for s in items)
    # `bool | None` (types.UnionType) as well as Optional[bool] (typing.Union).
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if opt.text in ("none", "None") and len(args) < len(typing.get_args(annotation)):
            return None
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        allowed = typing.get_args(annotation)
        for value in allowed:  # Literal[8, 4] is written 8 or 4 and is the int
            if str(value) == opt.text:
                return value
        raise ValueError(f"expected one of {', '.join(map(str, allowed))}, got '{opt.text}'")
    return _scalar(opt.text, annotation)


def _scalar(text: str, annotation) -> object:
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got '{text}'")
    if annotation is int:
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(f"expected an integer, got '{text}'") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got '{text}'") from None
    return text


def contract_problem(name: str, obj: object) -> str | None:
    """Why ``obj`` cannot be the pass entry point ``name``, or None when it fits."""
    if not isinstance(obj, type) or not issubclass(obj, Pass):
        return f"it is {type(obj).__name__} {obj!r}, not a subclass of edgec.passmgr.Pass"
    if not dataclasses.is_dataclass(obj) or not obj.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        return "a pass must be a frozen dataclass (@dataclass(frozen=True))"
    if obj.name != name:
        return f"its name is '{obj.name}' but the entry point is named '{name}'"
    if not _KEBAB.match(name):
        return f"pass names are kebab-case (like 'fold-constants'), not '{name}'"
    if obj.run is Pass.run:
        return "it does not implement run(model, ctx)"
    return None


def _and(items: list[str]) -> str:
    quoted = [f"'{i}'" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _located(message: str, offset: int | None, text: str | None, notes=(), *,
             code: str | None = None, length: int = 1) -> Diagnostic:
    """A diagnostic pointing into pipeline text (column = offset + 1)."""
    if offset is None or text is None:
        return Diagnostic.error(message, notes=notes, code=code)
    return Diagnostic.error(message, Location(path="<pipeline>", line=1, column=offset + 1,
                                              length=length),
                            notes=notes, source_line=text, code=code)


@functools.lru_cache(maxsize=1)
def default_registry() -> PassRegistry:
    """The registry of every installed pass, loaded once per process."""
    return PassRegistry.from_entry_points()
