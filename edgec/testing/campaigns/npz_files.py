"""Mutated .npz files against `edgec run`, `edgec bench` and `edgec compile --data`.

Campaign (a) of issue 12: 0 tracebacks, every refusal one line with exit 2.

    python3 -m edgec.testing.campaigns npz --count 10000 [--seed 0] [--json]
            [--targets run,bench,compile] [--keep DIR]
    (or python3 -m edgec.testing.campaigns.npz_files ...)

Each case is one file built from a valid digits data file by one or more mutations
(dtypes, ranks, shapes, names, layouts, truncation, bit flips, lying `.npy` headers, lying
zip sizes and methods, not-a-zip, `.npy`, empty files); case ``i`` goes to target
``targets[i % len(targets)]``. The CLI runs in this process (``edgec.cli.main``), so a
case costs milliseconds unless the file is valid and compile builds an artifact. A case
fails when the exit code is 1 (internal error) or anything other than 0/2, when an
exception escapes, or when a refusal is not exactly one ``error:`` line; failing files
are kept with ``--keep``. Prints a summary (``--json``: one JSON document).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from edgec.testing.artifacts import DIGITS, DIGITS_DATA, SPEC, build_digits

TARGETS = ("run", "bench", "compile")
_DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "int64", "bool",
           "complex64", "<U3", "|S2", "object", "datetime64[s]", ">f4", "<f8", "V4",
           [("a", "<f4")]]


# --------------------------------------------------------------------------- mutations


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _as_dtype(rng: random.Random, array: np.ndarray) -> np.ndarray:
    dtype = rng.choice(_DTYPES)
    if dtype == "object":
        out = np.empty(array.shape, dtype=object)
        out.flat[:] = [None] * out.size
        return out
    try:
        return array.astype(dtype)
    except (TypeError, ValueError):
        return np.zeros(array.shape, dtype=dtype)


def _reshape(rng: random.Random, array: np.ndarray) -> np.ndarray:
    choice = rng.randrange(8)
    if array.ndim < 2:  # already mutated to a scalar or a vector: grow it back instead
        return np.resize(array, (rng.randrange(0, 4), 1, 8, 8)) if array.size else array[None]
    if choice == 0:
        return array.reshape(len(array), -1)                     # rank - 2
    if choice == 1:
        return array[:, None]                                    # per-sample feeds (valid)
    if choice == 2:
        return array[:, None, None]                              # rank + 2
    if choice == 3:
        return np.asarray(array.flat[0])                         # scalar
    if choice == 4:
        return array[:0]                                         # no sample
    if choice == 5:
        shape = list(array.shape)
        shape[rng.randrange(1, len(shape))] = rng.choice([0, 2, 7, 9, 64])
        return np.zeros(shape, array.dtype)                      # wrong dim
    if choice == 6:
        return np.asfortranarray(array)                          # fortran order (valid)
    return array[: rng.randrange(1, len(array) + 1)]             # fewer samples (valid)


def _lie_header(rng: random.Random, npy: bytes) -> bytes:
    """Rewrite the .npy header's shape/descr/order, or its length fields and magic."""
    hlen = struct.unpack("<H", npy[8:10])[0]
    header = npy[10:10 + hlen].decode("latin1")
    body = npy[10 + hlen:]
    choice = rng.randrange(9)
    if choice == 0:
        header = header.replace("'shape': (", f"'shape': ({rng.choice([10**12, 2**62, 10**6])}, ")
    elif choice == 1:
        header = header.replace("'shape': (", "'shape': (-5, ")
    elif choice == 2:
        header = header.replace("'descr': '<f4'", f"'descr': {rng.choice(['<f8', '|O', '<U9', 'x9', '<c16', '|V16', '<f2'])!r}")
    elif choice == 3:
        header = header.replace("False", rng.choice(["'no'", "None", "1", "True"]))
    elif choice == 4:
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "(" * rng.randrange(1, 400) + "}"
    elif choice == 5:
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8), 'extra': 1}"
    elif choice == 6:
        return npy[:8] + struct.pack("<H", rng.randrange(65536)) + npy[10:]
    elif choice == 7:
        return b"\x93NUMPY" + bytes([rng.choice([0, 2, 3, 9]), 0]) + npy[8:]
    else:
        header = header.replace("'shape': (", "'shape': ('x', ")
    raw = header.encode("latin1")
    return npy[:8] + struct.pack("<H", len(raw)) + raw + body


def _lie_zip(rng: random.Random, data: bytes) -> bytes:
    """Change sizes, CRCs or the method in the zip's local and central headers."""
    out = bytearray(data)
    choice = rng.randrange(4)
    for sig, offsets in ((b"PK\x03\x04", {"method": 8, "crc": 14, "csize": 18, "usize": 22}),
                         (b"PK\x01\x02", {"method": 10, "crc": 16, "csize": 20, "usize": 24})):
        start = 0
        while True:
            at = bytes(out).find(sig, start)
            if at < 0:
                break
            start = at + 4
            if choice == 0:
                struct.pack_into("<I", out, at + offsets["usize"], rng.choice([0xFFFFFFFE, 1, 7, 10**9]))
            elif choice == 1:
                struct.pack_into("<I", out, at + offsets["csize"], rng.choice([0xFFFFFFFE, 0, 3]))
            elif choice == 2:
                struct.pack_into("<I", out, at + offsets["crc"], rng.randrange(2**32))
            else:
                struct.pack_into("<H", out, at + offsets["method"], rng.choice([1, 9, 12, 14, 99]))
    return bytes(out)


def make_case(rng: random.Random, base: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """One mutated file: (a short description, its bytes)."""
    x = base["input"][: rng.choice([1, 4, 16, 32])]
    arrays = {"input": x}
    names: list[str] = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.randrange(14)
        if "input" not in arrays and kind in (0, 1, 2, 4):
            kind = 3
        try:
            if kind == 0:
                arrays["input"] = _as_dtype(rng, arrays["input"]); names.append("dtype")
            elif kind == 1:
                arrays["input"] = _reshape(rng, np.asarray(arrays["input"])); names.append("shape")
            elif kind == 2:
                arrays[rng.choice(["image", "Input", "input ", "in/put", "ïnput", ""])] = arrays.pop("input")
                names.append("name")
            elif kind == 3:
                arrays[f"extra{rng.randrange(9)}"] = _as_dtype(rng, x[:2]); names.append("extra")
            elif kind == 4:
                arrays["input"] = arrays["input"].astype(arrays["input"].dtype.newbyteorder(">")) \
                    if arrays["input"].dtype.kind in "iuf" else arrays["input"]
                names.append("big-endian")
            else:
                names.append(["truncate", "flip", "header", "zip", "deflate", "npy", "empty",
                              "text", "dup"][kind - 5])
        except (ValueError, TypeError, IndexError, RuntimeError, OverflowError):
            names.append("skipped")  # numpy refused the mutation itself
    try:
        members = {f"{k}.npy": _npy_bytes(np.asarray(v)) for k, v in arrays.items()}
    except (ValueError, TypeError):
        members = {"input.npy": _npy_bytes(x)}
    compression = zipfile.ZIP_DEFLATED if "deflate" in names or rng.random() < 0.3 \
        else zipfile.ZIP_STORED
    if "header" in names and "input.npy" in members:
        members["input.npy"] = _lie_header(rng, members["input.npy"])
    if "dup" in names:
        data = _zip(members, compression)
        data = _zip({**members, "input.npy": _npy_bytes(x.astype(np.int64))}, compression) + data
    else:
        data = _zip(members, compression)
    if "zip" in names:
        data = _lie_zip(rng, data)
    if "flip" in names:
        out = bytearray(data)
        for _ in range(rng.choice([1, 3, 20])):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        data = bytes(out)
    if "truncate" in names:
        data = data[: rng.randrange(len(data))]
    if "npy" in names:
        data = _npy_bytes(x)
    if "empty" in names:
        data = b""
    if "text" in names:
        data = rng.choice([b"input,1,2\n", b"PK\x03\x04" + b"\0" * 30, b"\x93NUMPY", b"{}"])
    return "+".join(names), data


# --------------------------------------------------------------------------- running


class Campaign:
    def __init__(self, work: Path, targets: tuple[str, ...]):
        self.work = work
        self.targets = targets
        self.ort = build_digits(work / "ort-artifact", "ort")
        self.spec = work / "compile.edge"
        self.spec.write_text(SPEC.format(backend="ort", data=DIGITS_DATA, batch=1)
                             .replace("latency < 1000 ms p50 at batch 1", "size < 100 MiB"))
        self.base = {"input": np.load(DIGITS_DATA)["input"][:32]}

    def argv(self, target: str, path: Path) -> list[str]:
        if target == "run":
            return ["run", str(self.ort), "--inputs", str(path)]
        if target == "bench":
            return ["bench", str(self.ort), "--inputs", str(path)]
        return ["compile", str(DIGITS), "--spec", str(self.spec), "--data", str(path), "-o",
                str(self.work / "compile-out"), "--cache-dir", str(self.work / "compile-cache"),
                "-q"]

    def one(self, target: str, path: Path) -> tuple[int | str, str]:
        from edgec.cli import main

        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code: int | str = main(self.argv(target, path))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 2
            except BaseException:  # noqa: BLE001 - an escaped exception is what we count
                code = "exception"
                err.write(traceback.format_exc())
        if target == "compile":
            shutil.rmtree(self.work / "compile-cache", ignore_errors=True)
        return code, err.getvalue()


def verdict(code, err: str) -> str | None:
    """Why this outcome is a failure (None: it is fine)."""
    if code == "exception":
        return "exception escaped"
    if code == 0:
        return None
    if code != 2:
        return f"exit {code}"
    if "Traceback" in err or "internal error" in err:
        return "traceback"
    if len([line for line in err.splitlines() if "error:" in line]) != 1:
        return "not one error line"
    return None


def run_campaign(count: int, seed: int = 0, targets: tuple[str, ...] = TARGETS,
                 keep: str | None = None, progress=None) -> dict:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgec-npz-campaign-") as tmp:
        work = Path(tmp)
        campaign = Campaign(work, targets)
        rng = random.Random(seed)
        codes: dict[str, Counter] = {t: Counter() for t in targets}
        kinds: Counter = Counter()
        failures = []
        case_path = work / "case.npz"
        for i in range(count):
            description, data = make_case(rng, campaign.base)
            target = targets[i % len(targets)]
            case_path.write_bytes(data)
            code, err = campaign.one(target, case_path)
            codes[target][str(code)] += 1
            for name in description.split("+"):
                kinds[name] += 1
            why = verdict(code, err)
            if why:
                record = {"case": i, "target": target, "mutations": description, "why": why,
                          "stderr": err.strip().splitlines()[-3:]}
                failures.append(record)
                if keep:
                    os.makedirs(keep, exist_ok=True)
                    shutil.copy(case_path, os.path.join(keep, f"case-{i:05d}-{target}.npz"))
            if progress and (i + 1) % 500 == 0:
                progress(i + 1, count, len(failures))
    peak = None
    try:
        with open("/proc/self/status") as f:
            peak = next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmHWM"))
    except (OSError, StopIteration):
        pass
    total = sum(sum(c.values()) for c in codes.values())
    return {"cases": total, "seed": seed, "seconds": round(time.monotonic() - start, 1),
            "exit_codes": {t: dict(c) for t, c in codes.items()},
            "tracebacks": sum(1 for f in failures if f["why"] in ("traceback", "exception escaped",
                                                                   "exit 1")),
            "failures": len(failures), "failure_examples": failures[:20],
            "mutations": dict(kinds), "peak_rss_mib": peak}


NAME = "npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated: run, bench, compile (case i goes to target "
                             "i mod their number)")
    parser.add_argument("--keep", metavar="DIR", help="copy failing files here")
    parser.add_argument("--json", action="store_true")


def run(args) -> int:
    targets = tuple(t for t in args.targets.split(",") if t)
    if not targets or any(t not in TARGETS for t in targets):
        print(f"error: --targets takes {', '.join(TARGETS)}", file=sys.stderr)
        return 2

    def progress(done, total, failed):
        print(f"{done}/{total} cases, {failed} failures", file=sys.stderr, flush=True)

    summary = run_campaign(args.count, args.seed, targets, args.keep, progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['cases']} cases in {summary['seconds']} s (seed {summary['seed']}): "
              f"{summary['failures']} failures, {summary['tracebacks']} tracebacks; peak RSS "
              f"{summary['peak_rss_mib']} MiB")
        for target, codes in summary["exit_codes"].items():
            print(f"  {target}: " + ", ".join(f"exit {k}: {v}" for k, v in sorted(codes.items())))
        for failure in summary["failure_examples"]:
            print(f"  case {failure['case']} ({failure['target']}, {failure['mutations']}): "
                  f"{failure['why']}: {' | '.join(failure['stderr'])[:300]}")
    return 0 if summary["failures"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edgec.testing.campaigns npz",
                                     description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
