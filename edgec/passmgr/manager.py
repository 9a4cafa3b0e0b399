"""The pass manager: runs a pipeline over a model, verifying, timing and recording each pass.

A pass that fails is reported as "while running X (after A, B)". When a reproducer
directory is given, the model as it entered the pipeline and the pipeline prefix up
to the failing pass are written there (``input.onnx``, ``pipeline.txt`` and the
command that replays them), as MLIR's crash reproducers do.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from edgec.diagnostics import (Diagnostic, EdgecError, ExitCode, Location, ModelError,
                               UsageError)
from edgec.ir.core import Model
from edgec.ir.verifier import verify_model
from edgec.passmgr.base import Pass, PassContext, PassError, PassUsageError
from edgec.passmgr.instruments import Instrument, PassRecord
from edgec.passmgr.pipeline import (Pipeline, PassInvocation, PipelineSyntaxError,
                                    parse_pipeline)
from edgec.passmgr.registry import PassRegistry, default_registry

DEFAULT_PIPELINE = "fixed-point(fold-constants,cse,dce),infer-shapes,fuse,fixed-point(fold-constants,cse,dce),infer-shapes"


def default_pipeline(pass_options: Mapping[str, Mapping[str, str]] | None = None,
                     final_passes: Sequence[str] = (), *,
                     registry: PassRegistry | None = None) -> str:
    """The default pipeline, adjusted to what its consumer (a backend: see
    `edgec.backends.Capabilities`) needs: ``pass_options`` set on every invocation of
    the passes they name, then ``final_passes`` run last. Edited as a parsed pipeline."""
    pipeline = parse_pipeline(DEFAULT_PIPELINE)
    for name, options in (pass_options or {}).items():
        pipeline = pipeline.with_options(name, options)
    # A final pass this install does not have (an editable install whose metadata
    # predates it) is left out rather than failing on an unknown pass.
    installed = set((registry or default_registry()).names()) if final_passes else set()
    return str(pipeline.then(*(name for name in final_passes if name in installed)))


DEFAULT_MAX_ITERATIONS = 10


class InternalError(EdgecError):
    """A bug in edgec or a plugin (exit 1): the message points at the log/reproducer."""

    exit_code = ExitCode.INTERNAL


@dataclass
class PipelineRun:
    """The outcome of running a pipeline: the (possibly new) model and what each pass did."""

    model: Model
    records: list[PassRecord] = field(default_factory=list)

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.records)


def parse_and_check(text: str, registry: PassRegistry | None = None) -> Pipeline:
    """Parse pipeline text and check every pass and option exists; errors point into the text."""
    try:
        pipeline = parse_pipeline(text)
    except PipelineSyntaxError as e:
        raise UsageError(Diagnostic.error(
            f"invalid pipeline: {e.message}",
            Location(path="<pipeline>", line=1, column=e.offset + 1),
            source_line=text)) from None
    (registry or default_registry()).check_pipeline(pipeline, text)
    return pipeline


class PassManager:
    def __init__(self, pipeline: Pipeline | str, *, registry: PassRegistry | None = None,
                 verify_each: bool = False, instruments: Sequence[Instrument] = (),
                 context: PassContext | None = None, reproducer_dir: str | None = None,
                 source: str | None = None):
        self.registry = registry or default_registry()
        self.text = pipeline if isinstance(pipeline, str) else str(pipeline)
        self.pipeline = (parse_and_check(pipeline, self.registry) if isinstance(pipeline, str)
                         else pipeline)
        self.verify_each = verify_each
        self.instruments = list(instruments)
        self.context = context or PassContext()
        self.reproducer_dir = reproducer_dir
        self.source = source
        self._instances: dict[int, Pass] = {}

    def run(self, model: Model, *, input_bytes: bytes | None = None) -> PipelineRun:
        """Run the pipeline. ``input_bytes`` (the model file as read) saves a snapshot
        for the reproducer; without it one is taken only if a reproducer is wanted."""
        if self.reproducer_dir is not None and input_bytes is None:
            from edgec.frontend.onnx_export import export_model
            input_bytes = export_model(model).SerializeToString()
        self._input_bytes = input_bytes
        run = PipelineRun(model)
        self._done: list[str] = []
        self._run_pipeline(self.pipeline, run, iteration=None)
        return run

    # -- execution
    def _run_pipeline(self, pipeline: Pipeline, run: PipelineRun, iteration: int | None) -> bool:
        modified = False
        for element in pipeline:
            if element.children is not None:
                modified |= self._run_fixed_point(element, run)
            else:
                modified |= self._run_pass(element, run, iteration)
        return modified

    def _run_fixed_point(self, group: PassInvocation, run: PipelineRun) -> bool:
        limit = int(group.option("max-iterations", str(DEFAULT_MAX_ITERATIONS)))
        assert group.children is not None
        any_change = False
        for i in range(limit):
            if not self._run_pipeline(group.children, run, iteration=i + 1):
                return any_change
            any_change = True
        self.context.diagnostics.warning(
            f"'{group}' did not reach a fixed point in {limit} iterations; "
            "the result is correct but may not be fully simplified")
        return any_change

    def _instance(self, invocation: PassInvocation) -> Pass:
        key = id(invocation)
        if key not in self._instances:
            self._instances[key] = self.registry.create(invocation, self.text)
        return self._instances[key]

    def _run_pass(self, invocation: PassInvocation, run: PipelineRun,
                  iteration: int | None) -> bool:
        p = self._instance(invocation)
        for inst in self.instruments:
            inst.run_before_pass(invocation, run.model)
        start = time.perf_counter()
        try:
            result = p.run(run.model, self.context)
        except EdgecError as e:
            raise type(e)(self._while_running(invocation, e.diagnostics), e.exit_code) from None
        except PassError as e:
            diag = Diagnostic.error(str(e), Location(path=self.source))
            error = UsageError if isinstance(e, PassUsageError) else ModelError
            raise error(self._while_running(invocation, [diag])) from None
        except Exception as e:
            self._internal_failure(invocation, f"{type(e).__name__}: {e}",
                                   traceback.format_exc())
        seconds = time.perf_counter() - start
        if result.model is not None:
            run.model = result.model
        record = PassRecord(invocation.name, str(invocation), bool(result.modified), seconds,
                            dict(result.stats), iteration)
        run.records.append(record)
        self._done.append(str(invocation))
        if self.verify_each:
            errors = [d for d in verify_model(run.model, source=self.source) if d.is_error]
            if errors:
                self._done.pop()
                detail = "; ".join(d.render(caret=False) for d in errors[:3])
                self._internal_failure(invocation, f"the IR is invalid after the pass: {detail}",
                                       None)
        for inst in self.instruments:
            inst.run_after_pass(invocation, run.model, record)
        return record.modified

    # -- failures
    def _while_running(self, invocation: PassInvocation, diagnostics) -> list[Diagnostic]:
        context = f"while running '{invocation}'"
        if self._done:
            context += f" (after {', '.join(self._done)})"
        out = []
        for d in diagnostics:
            out.append(Diagnostic(d.severity, d.message, d.location,
                                  (*d.notes, context), d.code, d.source_line))
        return out

    def _internal_failure(self, invocation: PassInvocation, message: str,
                          trace: str | None) -> None:
        notes = []
        path = self._write_reproducer(invocation, message, trace)
        if path:
            notes.append(f"a reproducer was written to {path}")
        elif trace:
            notes.append("run with --reproducer DIR to save the input and pipeline")
        notes.append("this is a bug in edgec or in the plugin providing the pass; please report it")
        diag = Diagnostic.error(f"internal error in pass '{invocation.name}': {message}",
                                Location(path=self.source), notes=notes)
        raise InternalError(self._while_running(invocation, [diag]))

    def _write_reproducer(self, invocation: PassInvocation, message: str,
                          trace: str | None) -> str | None:
        if self.reproducer_dir is None or self._input_bytes is None:
            return None
        os.makedirs(self.reproducer_dir, exist_ok=True)
        path = tempfile.mkdtemp(prefix="edgec-reproducer-", dir=self.reproducer_dir)
        prefix = ",".join([*self._done, str(invocation)])
        with open(os.path.join(path, "input.onnx"), "wb") as f:
            f.write(self._input_bytes)
        with open(os.path.join(path, "pipeline.txt"), "w") as f:
            f.write(prefix + "\n")
        with open(os.path.join(path, "command.sh"), "w") as f:
            # Quoted for the shell: option values are the user's text (quotes included).
            f.write(f"edgec opt input.onnx -p {shlex.quote(prefix)} --verify-each -o /dev/null\n")
        with open(os.path.join(path, "error.txt"), "w") as f:
            f.write(f"while running '{invocation}'\n{message}\n")
            if trace:
                f.write("\n" + trace)
        try:
            from edgec.frontend.onnx_import import import_model, parse_model_bytes
            from edgec.ir.printer import print_model
            model = import_model(parse_model_bytes(self._input_bytes), check=False)
            with open(os.path.join(path, "input.ir"), "w") as f:
                f.write(print_model(model))
        except Exception:  # the text form is a convenience; input.onnx is the reproducer
            pass
        return path


def run_pipeline(model: Model, text: str | None = None, *, verify_each: bool = True,
                 context: PassContext | None = None,
                 instruments: Sequence[Instrument] = ()) -> PipelineRun:
    """Run pipeline ``text`` (default: `DEFAULT_PIPELINE`) over ``model`` in place.

    Verification after each pass is on by default here (tests and library use);
    the CLI turns it on with ``--verify-each``.
    """
    manager = PassManager(DEFAULT_PIPELINE if text is None else text, verify_each=verify_each,
                          context=context, instruments=instruments)
    return manager.run(model)
