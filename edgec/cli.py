"""The ``edgec`` command: subcommands, and the one place exceptions become diagnostics and exit codes.

Exit codes (DESIGN.md): 0 success, 1 internal error, 2 usage or spec error,
3 model error, 4 budget or tolerance not met. A user's mistake never shows a
traceback; an internal error writes one to a log file and says where.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback


from edgec._version import __version__
from edgec.diagnostics import Diagnostic, EdgecError, ExitCode, Location, UsageError
from edgec_runtime.errors import RuntimeFailure


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    _check_options(parser, sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return int(args.handler(args))
    except EdgecError as e:
        _report(e.diagnostics, json_mode=getattr(args, "json", False))
        return int(e.exit_code)
    except RuntimeFailure as e:  # the device runtime's errors, raised below edgec's code
        from edgec.artifact import runtime_error

        error = runtime_error(e)
        _report(error.diagnostics, json_mode=getattr(args, "json", False))
        return int(error.exit_code)
    except MemoryError:  # a model whose own computation does not fit: not a bug
        _report([Diagnostic.error(
            "out of memory: running the model (or a candidate) on the samples needs more "
            "memory than this machine allows", notes=["fewer samples (--data), a smaller "
                                                      "batch, or a machine with more memory"])],
            json_mode=getattr(args, "json", False))
        return ExitCode.MODEL
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return ExitCode.OK
    except Exception:  # a bug: one line for the user, the traceback in a log
        log = _write_crash_log(argv)
        _report([Diagnostic.error(
            f"internal error: {sys.exc_info()[1]!r}".splitlines()[0],
            notes=[f"this is a bug in edgec; the traceback is in {log}"])],
            json_mode=getattr(args, "json", False))
        return ExitCode.INTERNAL


def _report(diagnostics: list[Diagnostic], *, json_mode: bool) -> None:
    if json_mode:
        print(json.dumps({"ok": False, "diagnostics": [d.to_json() for d in diagnostics]},
                         indent=2))
        return
    for d in diagnostics:
        print(d.render(), file=sys.stderr)


def _write_crash_log(argv: list[str] | None) -> str:
    fd, path = tempfile.mkstemp(prefix="edgec-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"edgec {__version__}\nargv: {argv if argv is not None else sys.argv}\n\n")
        f.write(traceback.format_exc())
    return path


# --------------------------------------------------------------------------- parser


def _check_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """An option the subcommand does not have is an error with the subcommand's usage
    and the nearest option it has (`--spce` -> `--spec`), before argparse would say only
    that a required option is missing, or print the top-level usage."""
    import difflib
    import re

    commands = next((a.choices for a in parser._actions
                     if isinstance(a, argparse._SubParsersAction)), {})
    position = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if position is None or argv[position] not in commands:
        return
    sub = commands[argv[position]]
    known = list(sub._option_string_actions)
    for arg in argv[position + 1:]:
        if arg == "--":
            return
        if not arg.startswith("-") or arg == "-" or re.match(r"-\d", arg):
            continue
        name = arg.split("=", 1)[0]
        if name in known or (name.startswith("--") and any(k.startswith(name) for k in known)) \
                or (not name.startswith("--") and arg[:2] in known):
            continue
        longs = [k for k in known if k.startswith("--")]
        guess = difflib.get_close_matches(name, longs, n=1, cutoff=0.7)
        sub.error(f"unrecognized argument: {arg}"
                  + (f" (did you mean {guess[0]}?)" if guess else ""))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgec",
        description="Compile ONNX models into artifacts that hold a latency budget and an "
                    "accuracy tolerance on edge hardware.")
    parser.add_argument("--version", action="version", version=f"edgec {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    opt = sub.add_parser("opt", help="run passes over a model (like LLVM's opt)",
                         description="Run a pass pipeline over an ONNX model.")
    opt.add_argument("model", metavar="MODEL", help="ONNX file, or - for standard input")
    opt.add_argument("-p", "--pipeline", metavar="PIPELINE",
                     help="pass pipeline text, e.g. 'fold-constants,dce' "
                          "(default: the default pipeline)")
    opt.add_argument("-o", "--output", metavar="OUT",
                     help="where to write the optimized ONNX (- for standard output)")
    opt.add_argument("--verify-each", action="store_true",
                     help="verify the IR after every pass")
    opt.add_argument("--print-after", metavar="PASS", action="append", default=[],
                     help="print the IR after each run of PASS (repeatable, or comma-separated)")
    opt.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    opt.add_argument("--print-ir", action="store_true", help="print the final IR to standard output")
    opt.add_argument("--time-passes", action="store_true", help="report time spent in each pass")
    opt.add_argument("--stats", nargs="?", const="text", choices=["text", "json"],
                     help="report each pass's statistics (as a table, or --stats=json)")
    opt.add_argument("--dump-dir", metavar="DIR", help="write the IR after each pass to DIR/NNN_pass.txt")
    opt.add_argument("--reproducer", metavar="DIR",
                     help="where to write a reproducer if a pass fails "
                          "(default: the system's temporary directory)")
    opt.add_argument("--json", action="store_true",
                     help="print one JSON document (result, per-pass records, diagnostics)")
    opt.add_argument("-v", "--verbose", action="store_true", help="say what was done")
    opt.set_defaults(handler=_cmd_opt)

    passes = sub.add_parser("passes", help="list installed passes, plugins included")
    passes.add_argument("--json", action="store_true", help="print the list as JSON")
    passes.set_defaults(handler=_cmd_passes)

    comp = sub.add_parser("compile", help="compile a model for a spec into an artifact folder",
                          description="Compile MODEL for SPEC into the artifact folder OUT.")
    comp.add_argument("model", metavar="MODEL", help="the ONNX model")
    comp.add_argument("--spec", required=True, metavar="SPEC", help="the .edge spec file")
    comp.add_argument("-o", "--output", metavar="OUT",
                      help="the artifact folder (default: build/<model name>)")
    comp.add_argument("--data", metavar="DATA",
                      help="sample data (.npz, folder or glob), overriding the spec's")
    from edgec.backends import backend_names  # the registry: plugins included

    comp.add_argument("--backend", choices=["auto", *backend_names()],
                      help="override the spec's backend")
    comp.add_argument("--cache-dir", metavar="DIR",
                      help="build and tuning caches (default: $EDGEC_CACHE_DIR or ~/.cache/edgec)")
    comp.add_argument("--depfile", metavar="FILE", help="write a Makefile-syntax depfile")
    comp.add_argument("--allow-over-budget", action="store_true",
                      help="write the artifact even when a budget is missed (marked so)")
    comp.add_argument("--rpc-tracker", metavar="HOST:PORT",
                      help="measure (and tune) on devices through this TVM RPC tracker")
    comp.add_argument("--rpc-key", metavar="KEY", help="the device key at the tracker")
    comp.add_argument("--rpc-emulated", action="store_true",
                      help="the RPC device is an emulator (qemu): score accuracy on the "
                           "module there, but take no latency from it and do not tune on it")
    comp.add_argument("--threads", type=int, metavar="N", help="threads for measurement")
    comp.add_argument("--json", action="store_true",
                      help="print one JSON document: outcome, budgets, candidates, diagnostics")
    comp.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    comp.set_defaults(handler=_cmd_compile)

    from edgec_runtime.cli import add_bench_arguments, add_run_arguments

    run = sub.add_parser("run", help="run an artifact on this host")
    add_run_arguments(run)
    run.set_defaults(handler=_cmd_run)

    bench = sub.add_parser("bench", help="measure an artifact's latency (here or over RPC)")
    add_bench_arguments(bench)
    bench.add_argument("--rpc-tracker", metavar="HOST:PORT",
                       help="measure on a device reached through this TVM RPC tracker "
                            "instead of this host (tvm artifacts)")
    bench.add_argument("--rpc-key", metavar="KEY",
                       help="the device key at the tracker (with --rpc-tracker)")
    bench.add_argument("--rpc-emulated", action="store_true",
                       help="the RPC device is an emulator: its timings are labelled so")
    bench.set_defaults(handler=_cmd_bench)

    inspect = sub.add_parser("inspect", help="what an artifact holds and which budgets hold")
    inspect.add_argument("artifact", metavar="ARTIFACT")
    inspect.add_argument("--json", action="store_true", help="print the manifest")
    inspect.set_defaults(handler=_cmd_inspect)

    _add_dsl_commands(sub)
    return parser


def _add_dsl_commands(sub) -> None:
    """`check` and `targets` live with the spec language."""
    try:
        from edgec.dsl import commands
    except ImportError:  # pragma: no cover - the spec language ships with edgec
        return
    check = sub.add_parser("check", help="parse and validate a spec, print the resolved spec")
    commands.add_check_arguments(check)
    check.set_defaults(handler=commands.run_check)
    targets = sub.add_parser("targets", help="list built-in and plugin targets")
    commands.add_targets_arguments(targets)
    targets.set_defaults(handler=commands.run_targets)


# --------------------------------------------------------------------------- opt


def _cmd_opt(args: argparse.Namespace) -> int:
    from edgec.frontend.onnx_export import save_model
    from edgec.frontend.onnx_import import import_model, parse_model_bytes, read_model_bytes
    from edgec.passmgr import DEFAULT_PIPELINE, PassContext, PassManager
    from edgec.passmgr.instruments import (DumpEach, PrintAfter, stats_json, stats_table,
                                           timing_table)

    text = DEFAULT_PIPELINE if args.pipeline is None else args.pipeline
    instruments = []
    print_after = {n.strip() for item in args.print_after for n in item.split(",") if n.strip()}
    if args.print_after_all:
        instruments.append(PrintAfter(None))
    elif print_after:
        instruments.append(PrintAfter(print_after))
    if args.dump_dir:
        instruments.append(DumpEach(args.dump_dir))
    context = PassContext()
    # Parse the pipeline before reading the model: a typo costs nothing.
    manager = PassManager(text, verify_each=args.verify_each, instruments=instruments,
                          context=context, source=args.model,
                          reproducer_dir=args.reproducer or tempfile.gettempdir())
    for problem in manager.registry.problems:
        if problem.is_error and any(n in problem.message for n in manager.pipeline.pass_names()):
            raise UsageError([problem])
    data, base_dir = read_model_bytes(args.model)
    model = import_model(parse_model_bytes(data, args.model), base_dir=base_dir,
                         source=args.model)
    nodes_before = model.node_count()
    run = manager.run(model, input_bytes=data)
    if args.output:
        save_model(run.model, args.output)
    diagnostics = [*manager.registry.problems, *context.diagnostics.diagnostics]
    if args.json:
        print(json.dumps({
            "ok": True, "input": args.model, "output": args.output, "pipeline": text,
            "nodes_before": nodes_before, "nodes_after": run.model.node_count(),
            "passes": [r.to_json() for r in run.records],
            "diagnostics": [d.to_json() for d in diagnostics],
        }, indent=2))
        return ExitCode.OK
    for d in diagnostics:
        print(d.render(), file=sys.stderr)
    if args.print_ir:
        from edgec.ir.printer import print_model
        sys.stdout.write(print_model(run.model) + "\n")
    not_written = "; nothing written (give -o OUT.onnx, or -o - for standard output)"
    if args.verbose:
        changed = [r.text for r in run.records if r.modified]
        print(f"{args.model}: {nodes_before} -> {run.model.node_count()} nodes with '{text}'"
              f" ({len(run.records)} pass runs; changed by: {', '.join(changed) or 'none'})"
              + (f"; written to {args.output}" if args.output else not_written), file=sys.stderr)
    elif not args.output:
        # Without -o the result goes nowhere: say so rather than exit 0 in silence.
        print(f"edgec opt: {args.model}: {nodes_before} -> {run.model.node_count()} nodes"
              + not_written, file=sys.stderr)
    if args.stats == "json":
        print(stats_json(run.records))
    elif args.stats:
        print(stats_table(run.records), file=sys.stderr)
    if args.time_passes:
        print(timing_table(run.records), file=sys.stderr)
    return ExitCode.OK


# --------------------------------------------------------------------------- compile, run, bench, inspect


def _rpc(args) -> "object | None":
    from edgec.backends.base import RpcConfig

    if not getattr(args, "rpc_tracker", None):
        if getattr(args, "rpc_key", None) or getattr(args, "rpc_emulated", False):
            raise UsageError(("--rpc-key" if getattr(args, "rpc_key", None) else
                              "--rpc-emulated") + " needs --rpc-tracker HOST:PORT")
        return None
    if not args.rpc_key:
        raise UsageError("--rpc-tracker needs --rpc-key KEY (the device key at the tracker)")
    try:
        return RpcConfig.parse(args.rpc_tracker, args.rpc_key,
                               emulated=getattr(args, "rpc_emulated", False))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _cmd_compile(args: argparse.Namespace) -> int:
    from edgec.compiler import CompileOptions, compile_model
    from edgec.diagnostics import BudgetError
    from edgec.progress import ProgressPrinter

    out = args.output or os.path.join("build", os.path.splitext(os.path.basename(args.model))[0])
    quiet = args.quiet or args.json
    options = CompileOptions(data=args.data, backend=args.backend, cache_dir=args.cache_dir,
                             allow_over_budget=args.allow_over_budget, depfile=args.depfile,
                             rpc=_rpc(args), threads=args.threads,
                             progress=ProgressPrinter(quiet=quiet))
    try:
        result = compile_model(args.model, args.spec, out, options)
    except BudgetError as e:
        if args.json:
            manifest = getattr(e, "manifest", None) or {}
            print(json.dumps({"ok": False, "outcome": "over-budget", "output": None,
                              "budgets": manifest.get("budgets", []),
                              "configuration": manifest.get("configuration"),
                              "candidates": manifest.get("candidates", []),
                              "summary": manifest.get("summary", []),
                              "diagnostics": [*manifest.get("diagnostics", []),
                                              *[d.to_json() for d in e.diagnostics]]},
                             indent=2))
            return int(e.exit_code)
        raise
    manifest = result.manifest
    if args.json:
        print(json.dumps({
            "ok": True, "outcome": "ok" if manifest["budgets_held"] else "over-budget-allowed",
            "output": out, "cached": result.cached, "budgets": manifest["budgets"],
            "configuration": manifest["configuration"], "candidates": manifest["candidates"],
            "diagnostics": [*manifest.get("diagnostics", []),
                            *[d.to_json() for d in result.diagnostics]]}, indent=2))
        return ExitCode.OK
    if not args.quiet:
        if result.cached == "output":
            print(f"edgec: {out} is up to date", file=sys.stderr)
        else:
            sys.stderr.write(result.report)
            if result.cached == "cache":
                print(f"edgec: {out} copied from the cache (no rebuild)", file=sys.stderr)
    if not manifest["budgets_held"]:
        print(f"warning: {out} is over budget (written because of --allow-over-budget)",
              file=sys.stderr)
    return ExitCode.OK


def _cmd_run(args: argparse.Namespace) -> int:
    from edgec.artifact import load, translated_errors
    from edgec_runtime.cli import cmd_run

    with translated_errors():
        return cmd_run(args, load=load)


def _cmd_bench(args: argparse.Namespace) -> int:
    from edgec.artifact import load, translated_errors
    from edgec_runtime.cli import cmd_bench

    rpc = _rpc(args)
    if rpc is None:
        with translated_errors():
            artifact = load(args.artifact)
            code = cmd_bench(args, load=lambda path: artifact)
        caveat = _foreign_target_caveat(artifact.manifest)
        if caveat:
            print(f"warning: {caveat}", file=sys.stderr)
        return code
    # Over RPC: the module runs on the device; this host only sends it.
    from edgec.backends import capabilities, get_backend
    from edgec.backends.base import BuildOptions
    from edgec.compiler import default_cache_dir
    from edgec_runtime.feeds import synthetic
    from edgec_runtime.npz import read_npz
    from edgec_runtime.tvm_runner import value_infos

    artifact = load(args.artifact)
    backend = get_backend(artifact.backend_name)
    if not capabilities(artifact.backend_name).measures_over_rpc:
        raise UsageError(f"--rpc-tracker measures artifacts of backends with a TVM RPC "
                         f"runtime; this one is '{artifact.backend_name}': run `edgec bench` "
                         "(or python3 -m edgec_runtime bench) on the device")
    details = artifact.manifest["backend"]["details"]
    with translated_errors():
        inputs_info = value_infos(details.get("inputs"), "inputs", artifact.path)
        if args.inputs:
            arrays = read_npz(args.inputs, {i.name: i.wanted for i in inputs_info},
                              layouts=("batch",))
        else:
            arrays = synthetic(inputs_info, artifact.batch())
    stats = backend.measure(artifact.path, details, arrays,
                            BuildOptions(cache_dir=default_cache_dir(), threads=args.threads,
                                         rpc=rpc))
    if args.json:
        print(json.dumps({"artifact": artifact.path, "backend": artifact.backend_name,
                          **stats.to_json()}, indent=2))
    else:
        print(f"{artifact.path}: p50 {stats.p50 * 1e3:.3f} ms  p90 {stats.p90 * 1e3:.3f} ms  "
              f"mean {stats.mean * 1e3:.3f} ms  ({stats.samples} runs, {stats.where})")
    return ExitCode.OK


def _foreign_target_caveat(manifest: dict) -> str | None:
    """An artifact for another machine that runs here anyway (onnxruntime runs anywhere):
    its figures on this host say little about the target."""
    from edgec.dsl.host import architecture

    target = manifest.get("target")
    target = target if isinstance(target, dict) else {}
    if target.get("name") == "host" or (target.get("at_hand")
                                        and target.get("arch") == architecture()):
        return None
    return (f"built for {target.get('name', 'another machine')} ({target.get('arch', '?')}); "
            f"these figures were measured on this host ({architecture()}), not on the target: "
            "measure there, or with --rpc-tracker HOST:PORT --rpc-key KEY")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from edgec.artifact import load
    from edgec.report import text_report

    # Not verified on opening: inspect reports the damage itself, after the manifest.
    artifact = load(args.artifact, verify=False)
    from edgec_runtime.artifact import verify_files

    problems = verify_files(artifact.path, artifact.manifest)
    if args.json:
        print(json.dumps(artifact.manifest, indent=2, sort_keys=True))
    elif not problems:
        try:
            text = text_report(artifact.manifest, artifact.measurements)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise UsageError(Diagnostic.error(
                f"manifest.json is damaged: cannot report on it ({type(e).__name__}: {e})",
                Location(path=artifact.path))) from None
        sys.stdout.write(text)
    if problems:
        raise UsageError([Diagnostic.error(f"the artifact is damaged: {p}",
                                           Location(path=artifact.path)) for p in problems])
    return ExitCode.OK


# --------------------------------------------------------------------------- passes


def _cmd_passes(args: argparse.Namespace) -> int:
    from edgec.passmgr import default_registry

    registry = default_registry()
    entries = registry.entries()
    if args.json:
        print(json.dumps({
            "passes": [{
                "name": e.name, "summary": e.cls.summary(), "source": e.source,
                "entry_point": e.entry_point,
                "options": [{"name": o.name, "type": _type_name(o.type),
                             "default": _jsonable(o.default), "help": o.help}
                            for o in e.cls.options()],
            } for e in entries],
            "diagnostics": [d.to_json() for d in registry.problems],
        }, indent=2))
    else:
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            origin = "" if e.source == "built-in" else f"  [plugin: {e.source}]"
            print(f"{e.name:<{width}}  {e.cls.summary()}{origin}")
            for o in e.cls.options():
                help_text = f"  {o.help}" if o.help else ""
                print(f"{'':<{width}}    {o.name}: {_type_name(o.type)} = "
                      f"{_show_default(o.default)}{help_text}")
        for d in registry.problems:
            print(d.render(), file=sys.stderr)
    return ExitCode.USAGE if any(d.is_error for d in registry.problems) else ExitCode.OK


def _type_name(t) -> str:
    from edgec.passmgr.base import literal_values

    allowed = literal_values(t)
    if allowed is not None:  # Literal["l1", "l2"] -> l1|l2
        return "|".join("none" if a is None else str(a) for a in allowed)
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _show_default(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value




if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
