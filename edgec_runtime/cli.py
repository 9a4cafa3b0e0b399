"""``python3 -m edgec_runtime``: run, bench and check an artifact on this machine.

Exit codes as edgec's: 0 success, 1 internal error (a bug: the traceback goes to a log
file), 2 usage, a damaged artifact, unusable inputs, or an artifact this machine cannot
run. `edgec run` and `edgec bench` call `cmd_run` and `cmd_bench` below.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback

from edgec_runtime.errors import RuntimeFailure


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", metavar="ARTIFACT")
    parser.add_argument("--inputs", required=True, metavar="FILE.npz",
                        help="inputs keyed by the model's input names: batch-leading arrays "
                             "(rank of the input) or per-sample feeds ([S, *input shape])")
    parser.add_argument("-o", "--output", metavar="OUT.npz",
                        help="where to write the outputs (exactly this path, replaced "
                             "atomically)")
    _add_cpu_fallback(parser)


def _add_cpu_fallback(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-cpu-fallback", action="store_true",
                        help="run an artifact made for a GPU on the CPU where onnxruntime has "
                             "no GPU provider (also: EDGEC_ALLOW_CPU_FALLBACK=1)")


def _allow_cpu_fallback(args: argparse.Namespace) -> None:
    """--allow-cpu-fallback: the loaders read it from the environment, so that the Python
    API takes the same switch."""
    if getattr(args, "allow_cpu_fallback", False):
        from edgec_runtime.ort_runner import CPU_FALLBACK_ENV
        os.environ[CPU_FALLBACK_ENV] = "1"


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", metavar="ARTIFACT")
    parser.add_argument("--inputs", metavar="FILE.npz",
                        help="inputs (default: synthetic, at the spec's batch)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads the runtime may use (default: the runtime's own choice)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document: p50/p90/mean in ms, runs, where measured")
    _add_cpu_fallback(parser)


def cmd_run(args: argparse.Namespace, load=None) -> int:
    from edgec_runtime.artifact import Artifact
    from edgec_runtime.errors import InputError
    from edgec_runtime.npz import write_npz

    _allow_cpu_fallback(args)
    if args.output and (args.output.endswith(os.sep) or os.path.isdir(args.output)):
        raise InputError("the outputs path is a folder; give a file name (OUT.npz)", args.output)
    artifact = (load or Artifact)(args.artifact)
    outputs = artifact.run_file(args.inputs)
    if args.output:
        write_npz(args.output, outputs)
    else:
        for name, value in outputs.items():
            print(f"{name}: {value.dtype}{list(value.shape)}")
    return 0


def cmd_bench(args: argparse.Namespace, load=None) -> int:
    from edgec_runtime.artifact import Artifact
    from edgec_runtime.errors import InputError

    _allow_cpu_fallback(args)
    if args.threads is not None and not 1 <= args.threads <= 4096:
        raise InputError(f"--threads {args.threads} is not a thread count")
    artifact = (load or Artifact)(args.artifact)
    artifact.runner(threads=args.threads)
    feed = artifact.bench_inputs(args.inputs)
    stats = artifact.bench(feed, threads=args.threads)
    if args.json:
        print(json.dumps({"artifact": artifact.path, "backend": artifact.backend_name, **stats},
                         indent=2))
    else:
        print(f"{artifact.path}: p50 {stats['p50_ms']:.3f} ms  p90 {stats['p90_ms']:.3f} ms  "
              f"mean {stats['mean_ms']:.3f} ms  ({stats['samples']} runs, {stats['where']})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from edgec_runtime.artifact import Artifact

    artifact = Artifact(args.artifact)
    artifact.check_runnable()
    print(f"{artifact.path}: {artifact.backend_name} artifact, verified, runnable here")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edgec_runtime import __version__

    parser = argparse.ArgumentParser(
        prog="python3 -m edgec_runtime",
        description="Run an edgec artifact on this machine (the device runtime).")
    parser.add_argument("--version", action="version", version=f"edgec-runtime {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")
    run = sub.add_parser("run", help="run the artifact on inputs from an .npz")
    add_run_arguments(run)
    run.set_defaults(handler=cmd_run)
    bench = sub.add_parser("bench", help="measure the artifact's latency on this machine")
    add_bench_arguments(bench)
    bench.set_defaults(handler=cmd_bench)
    check = sub.add_parser("check", help="verify the artifact and say whether it runs here")
    check.add_argument("artifact", metavar="ARTIFACT")
    check.set_defaults(handler=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except RuntimeFailure as e:
        print(e.render(), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgec-runtime: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        fd, log = tempfile.mkstemp(prefix="edgec-runtime-crash-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(f"argv: {argv if argv is not None else sys.argv}\n\n{traceback.format_exc()}")
        print(f"error: internal error: {sys.exc_info()[1]!r}".splitlines()[0], file=sys.stderr)
        print(f"note: this is a bug in edgec-runtime; the traceback is in {log}", file=sys.stderr)
        return 1
