"""An emulated device: a Debian root for another architecture, run under qemu-user.

edgec cross-compiles for boards it never runs on. This module builds a small Debian
root for the board's architecture (arm64 today), with numpy, onnxruntime and
apache-tvm installed from the foreign platform's wheels, and runs Python in it under
``qemu-<arch>-static -cpu <cpu>``, so that an artifact built for a Raspberry Pi can be
run as the Pi would run it (the emulated CPU model traps instructions the real CPU
lacks). Tests use it through the ``device_root`` fixture; by hand::

    python3 -m edgec.testing.device_root build --arch arm64      # 1.5-2 min here, then cached
    python3 -m edgec.testing.device_root python --cpu cortex-a76 -- -c 'import tvm'
    python3 -m edgec.testing.device_root sizes --arch arm64      # device install sizes

How the root is built (binfmt_misc is not needed, root is):

1. ``debootstrap --foreign --variant=minbase --include=python3,python3-venv,python3-pip``
   from the Debian mirror apt already uses on this host (``EDGEC_DEBIAN_MIRROR``
   overrides); the second stage cannot run without binfmt, so every downloaded ``.deb``
   is unpacked with ``dpkg-deb`` instead (no maintainer scripts: python needs none);
2. ``qemu-<arch>-static`` is copied in; programs run as
   ``chroot ROOT /usr/bin/qemu-aarch64-static -cpu cortex-a72 /usr/bin/python3 ...``;
3. wheels are fetched on this host with ``pip download --platform manylinux_2_28_aarch64
   --python-version 3.11`` and installed with ``pip install --target`` into
   ``ROOT/opt/edgec-device/site`` (on ``PYTHONPATH`` inside the root). Versions are
   pinned to the ones installed on this host, so a module compiled here loads with the
   same TVM there.

Nothing inside the root can exec another foreign binary (no binfmt): run ``python3 -m
...`` rather than console scripts, and never ``subprocess`` a foreign program from
inside it.

The root is cached under ``$EDGEC_DEVICE_ROOT`` (default ``~/.cache/edgec/device-roots``),
one folder per set of inputs (suite, mirror, architecture, packages, wheel pins,
builder version): a stamp file written last marks it complete, and a lock keeps two
processes from building the same one.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

BUILDER_VERSION = 1
SUITE = "bookworm"              # Debian 12: python3.11, matching the cp311 wheels
PYTHON_VERSION = "3.11"
DEBIAN_PACKAGES = ("python3", "python3-venv", "python3-pip")
SITE = "/opt/edgec-device/site"     # wheels installed for the device (PYTHONPATH)
SOURCE = "/opt/edgec-device/src"    # pure-Python code staged per run (edgec_runtime)
WORK = "/work"                      # artifacts and data staged per run
STAMP = ".edgec-device-root.json"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


# TVM's RPC server, in the device's python itself: `python -m tvm.exec.rpc_server` starts
# its server in a `python -m tvm.exec.popen_worker` subprocess, which a foreign root
# cannot exec without binfmt_misc. Its sessions are forked (no exec), which works.
RPC_SERVER = """\
import sys
from tvm.rpc.server import _popen_start_rpc_server as start
host, port, tracker, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tracker_host, _, tracker_port = tracker.rpartition(":")
bound = start(host, port, port + 100, False,
              (tracker_host, int(tracker_port)) if tracker else None, key)
print(f"TVM RPC server on {host}:{bound}, key {key!r}, tracker {tracker or None}", flush=True)
"""


@dataclass(frozen=True)
class Arch:
    debian: str            # Debian's architecture name
    machine: str           # platform.machine() on the device
    qemu: str              # the qemu-user binary
    platform: str | None   # pip's platform tag for its wheels; None: no wheels exist
    default_cpu: str


ARCHES = {
    "arm64": Arch("arm64", "aarch64", "qemu-aarch64-static", "manylinux_2_28_aarch64",
                  "cortex-a72"),
    # numpy, onnxruntime and apache-tvm publish no armv7 wheels on PyPI (checked with
    # pip download --platform manylinux_2_28_armv7l / linux_armv7l, python 3.11).
    "armhf": Arch("armhf", "armv7l", "qemu-arm-static", None, "cortex-a7"),
}
ALIASES = {"aarch64": "arm64", "armv7": "armhf", "armv7l": "armhf"}

# What goes on the device, per backend. The versions are this host's, when installed.
BACKEND_PACKAGES = {
    "ort": ("numpy", "onnxruntime"),
    "tvm": ("numpy", "apache-tvm", "apache-tvm-ffi"),
}
# apache-tvm-ffi 0.1.15 segfaults in tvm.ir.save_json (docs/tvm-notes.md): the pin the host uses.
FALLBACK_PINS = {"apache-tvm-ffi": "0.1.14.post1"}


class Unavailable(RuntimeError):
    """The emulated device cannot be built or run here; the message says what is missing."""


def arch_info(arch: str) -> Arch:
    name = ALIASES.get(arch, arch)
    if name not in ARCHES:
        raise Unavailable(f"no emulated device for architecture '{arch}' "
                          f"(known: {', '.join(ARCHES)})")
    return ARCHES[name]


def pinned_requirements(packages: Sequence[str]) -> list[str]:
    """``name==version`` with the version installed on this host, where it is."""
    from importlib import metadata

    pins = []
    for name in packages:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(f"{name}=={FALLBACK_PINS[name]}" if name in FALLBACK_PINS else name)
    return pins


def device_requirements() -> list[str]:
    names = list(dict.fromkeys(name for packages in BACKEND_PACKAGES.values()
                               for name in packages))
    return pinned_requirements(names)


def debian_mirror() -> str:
    """The Debian archive apt already uses on this host (deb822 or one-line sources)."""
    if os.environ.get("EDGEC_DEBIAN_MIRROR"):
        return os.environ["EDGEC_DEBIAN_MIRROR"]
    files = [Path("/etc/apt/sources.list")]
    directory = Path("/etc/apt/sources.list.d")
    if directory.is_dir():
        files += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?(\S+)|URIs:\s*(\S+))",
                                 text, re.M):
            uri = (match.group(1) or match.group(2)).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def cache_base() -> Path:
    if os.environ.get("EDGEC_DEVICE_ROOT"):
        return Path(os.environ["EDGEC_DEVICE_ROOT"]).expanduser()
    return Path("~/.cache/edgec/device-roots").expanduser()


def missing_tools(arch: Arch, building: bool = True) -> list[str]:
    """What this host lacks to build (``building``) or only run the root, one phrase each."""
    missing = []
    tools = [(arch.qemu, "qemu-user-static"), ("chroot", "coreutils")]
    if building:
        tools += [("debootstrap", "debootstrap"), ("dpkg-deb", "dpkg"), ("tar", "tar")]
    for tool, package in tools:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if os.geteuid() != 0:
        missing.append("root (debootstrap and chroot need it)")
    return missing


@dataclass
class DeviceRoot:
    """A built root; `python` runs the device's python3 in it under qemu."""

    path: Path
    arch: Arch
    info: dict

    @property
    def qemu(self) -> str:
        return f"/usr/bin/{self.arch.qemu}"

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "PYTHONPATH": f"{self.work}/src:{SOURCE}:{SITE}", "PYTHONDONTWRITEBYTECODE": "1",
               "TMPDIR": "/tmp"}
        env.update(extra or {})
        return env

    def command(self, args: Sequence[str], cpu: str | None = None) -> list[str]:
        # The host's chroot, by its full path: the environment given is the device's.
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        return [chroot, str(self.path), self.qemu, "-cpu", cpu or self.arch.default_cpu,
                "/usr/bin/python3", *map(str, args)]

    def python(self, args: Sequence[str], *, cpu: str | None = None,
               env: dict[str, str] | None = None, timeout: float | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
        """Run the device's ``python3 ARGS`` (paths in ARGS are inside the root)."""
        return subprocess.run(self.command(args, cpu), env=self.environment(env),
                              capture_output=True, text=True, timeout=timeout, check=check)

    def popen(self, args: Sequence[str], *, cpu: str | None = None,
              env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(args, cpu), env=self.environment(env), **kwargs)

    def rpc_server(self, *, tracker: str | None, key: str, host: str = "127.0.0.1",
                   port: int = 9090, cpu: str | None = None, **kwargs) -> subprocess.Popen:
        """A TVM RPC server on the emulated device (it shares this host's network),
        registered with ``tracker`` (HOST:PORT) under ``key``. Timings taken from it are
        the emulator's: pass ``--rpc-emulated`` to edgec with its tracker."""
        return self.popen(["-c", RPC_SERVER, host, str(port), tracker or "", key], cpu=cpu,
                          **kwargs)

    def host_path(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    @property
    def work(self) -> str:
        """This process's folder under the root's /work (processes share a root)."""
        return f"{WORK}/{os.getpid()}"

    def clean_work(self) -> None:
        shutil.rmtree(self.host_path(self.work), ignore_errors=True)

    def stage(self, source: str | os.PathLike, name: str) -> str:
        """Copy a file or folder from this host into this process's folder under the
        root's /work; its path inside the root."""
        inside = f"{self.work}/{name}"
        target = self.host_path(inside)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(source).is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return inside

    def stage_source(self, package_dir: str | os.PathLike) -> None:
        """Put a pure-Python package (edgec_runtime from this checkout) on the device's
        PYTHONPATH for this process's runs (``{work}/src``, before ``SOURCE``)."""
        package_dir = Path(package_dir)
        target = self.host_path(f"{self.work}/src") / package_dir.name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(package_dir, target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


# --------------------------------------------------------------------------- building


def _key(arch: Arch, mirror: str, requirements: list[str]) -> tuple[str, dict]:
    inputs = {"builder": BUILDER_VERSION, "suite": SUITE, "mirror": mirror,
              "arch": arch.debian, "debian_packages": list(DEBIAN_PACKAGES),
              "python": PYTHON_VERSION, "platform": arch.platform, "wheels": requirements}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    return f"{arch.debian}-{SUITE}-{digest}", inputs


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"device-root: {message}", file=sys.stderr, flush=True)


def _run(command: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-3000:]
        raise Unavailable(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
                          f"{tail}")


def _nice() -> list[str]:
    return ["nice", "-n", "10"] if shutil.which("nice") else []


def download_wheels(arch: Arch, requirements: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run([*_nice(), sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
          "--only-binary=:all:", "--platform", arch.platform, "--python-version",
          PYTHON_VERSION, "--implementation", "cp", "-d", str(dest), *requirements],
         f"fetching {arch.platform} wheels")


def install_wheels(arch: Arch, requirements: list[str], wheels: Path, target: Path) -> None:
    _run([*_nice(), sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "--no-index", "--find-links", str(wheels), "--target", str(target),
          "--only-binary=:all:", "--platform", arch.platform, "--python-version",
          PYTHON_VERSION, "--implementation", "cp", "--no-compile", *requirements],
         f"installing {arch.platform} wheels")


def _unpack_debs(root: Path) -> int:
    """Unpack every downloaded package over the root, keeping the merged-/usr links."""
    debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    for deb in debs:
        payload = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                   stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(root), "--keep-directory-symlink",
                                "--no-same-owner"], stdin=payload.stdout, capture_output=True)
        payload.stdout.close()
        if payload.wait() != 0 or untar.returncode != 0:
            raise Unavailable(f"unpacking {deb.name} failed: {untar.stderr.decode()[-500:]}")
        deb.unlink()  # the archive is not needed any more: 100+ MB less per root
    return len(debs)


def _device_nodes(root: Path) -> None:
    """/dev/null and friends (programs expect them; nothing is mounted in the root)."""
    for name in ("proc", "sys"):
        # debootstrap --foreign links proc to /proc where it cannot mount it: inside
        # the root that link points at itself. Nothing is mounted there; keep a folder.
        if (root / name).is_symlink():
            (root / name).unlink()
        (root / name).mkdir(exist_ok=True)
    dev = root / "dev"
    dev.mkdir(exist_ok=True)
    for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
        path = dev / name
        if path.exists():
            continue
        with contextlib.suppress(OSError):
            os.mknod(path, 0o666 | 0o020000, os.makedev(1, minor))
            os.chmod(path, 0o666)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    os.chmod(tmp, 0o1777)


def build(arch_name: str = "arm64", *, base: Path | None = None, force: bool = False,
          quiet: bool = False) -> DeviceRoot:
    """The cached root for ``arch_name``, built first when missing (minutes)."""
    arch = arch_info(arch_name)
    if arch.platform is None:
        raise Unavailable(f"no {arch.machine} wheels of numpy, onnxruntime or apache-tvm "
                          f"exist on PyPI: an emulated {arch.debian} device cannot run "
                          "artifacts")
    missing = missing_tools(arch, building=False)
    if missing:
        raise Unavailable("the emulated device needs " + ", ".join(missing))
    mirror = debian_mirror()
    requirements = device_requirements()
    name, inputs = _key(arch, mirror, requirements)
    base = base or cache_base()
    base.mkdir(parents=True, exist_ok=True)
    final = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = final / STAMP
        if stamp.exists() and not force:
            return DeviceRoot(final, arch, json.loads(stamp.read_text()))
        missing = missing_tools(arch)
        if missing:
            raise Unavailable("building the emulated device needs " + ", ".join(missing))
        if final.exists():
            shutil.rmtree(final)
        for stale in base.glob(f".{name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=base))
        try:
            root = work / "root"
            _log(f"debootstrap {SUITE} {arch.debian} from {mirror}", quiet)
            _run([*_nice(), "debootstrap", "--foreign", f"--arch={arch.debian}",
                  "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", SUITE,
                  str(root), mirror], "debootstrap")
            count = _unpack_debs(root)
            _log(f"unpacked {count} packages", quiet)
            shutil.copy2(shutil.which(arch.qemu), root / "usr/bin" / arch.qemu)
            _device_nodes(root)
            (root / SOURCE.lstrip("/")).mkdir(parents=True, exist_ok=True)
            (root / WORK.lstrip("/")).mkdir(parents=True, exist_ok=True)
            wheels = base / f"wheels-{arch.platform}"
            _log(f"wheels for {arch.platform}: {' '.join(requirements)}", quiet)
            download_wheels(arch, requirements, wheels)
            install_wheels(arch, requirements, wheels, root / SITE.lstrip("/"))
            device = DeviceRoot(root, arch, {})
            smoke = device.python(["-c", "import platform, numpy, onnxruntime, tvm_ffi; "
                                   "print(platform.machine())"], timeout=600)
            if smoke.returncode != 0 or smoke.stdout.strip() != arch.machine:
                raise Unavailable(f"the new root's python3 does not run under {arch.qemu}: "
                                  f"{(smoke.stdout + smoke.stderr).strip()[-2000:]}")
            info = {**inputs, "seconds_to_build": round(time.monotonic() - started, 1)}
            (root / STAMP).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
            root.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _log(f"built {final} in {info['seconds_to_build']} s", quiet)
        return DeviceRoot(final, arch, info)


# --------------------------------------------------------------------------- install sizes


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def install_sizes(arch_name: str = "arm64", *, base: Path | None = None,
                  runtime_dir: Path | None = None) -> dict:
    """MB that each backend's device install takes on ``arch_name`` (pip install
    --target of its wheels, bytes on disk without .pyc), per package."""
    arch = arch_info(arch_name)
    if arch.platform is None:
        raise Unavailable(f"no {arch.machine} wheels exist on PyPI")
    base = base or cache_base()
    wheels = base / f"wheels-{arch.platform}"
    result: dict = {"platform": arch.platform, "python": PYTHON_VERSION, "backends": {}}
    for backend, packages in BACKEND_PACKAGES.items():
        requirements = pinned_requirements(packages)
        download_wheels(arch, requirements, wheels)
        with tempfile.TemporaryDirectory() as target:
            install_wheels(arch, requirements, wheels, Path(target))
            parts = {}
            for entry in sorted(Path(target).iterdir()):
                if entry.name.endswith((".dist-info", ".data")) or entry.name == "bin":
                    continue
                key = entry.name[:-5] if entry.name.endswith(".libs") else entry.name
                parts[key] = parts.get(key, 0) + _tree_bytes(entry)
            total = _tree_bytes(Path(target))
            tvm_runtime = None
            if (Path(target) / "tvm").is_dir():
                # What the TVM runtime alone needs: libtvm_runtime.so plus tvm_ffi.
                lib = next(Path(target).glob("tvm/**/libtvm_runtime.so"), None)
                tvm_runtime = (lib.stat().st_size if lib else 0) + parts.get("tvm_ffi", 0)
        entry = {"requirements": requirements, "total_mb": round(total / 1e6, 1),
                 "packages_mb": {k: round(v / 1e6, 1) for k, v in sorted(parts.items())}}
        if tvm_runtime is not None:
            entry["tvm_runtime_only_mb"] = round(tvm_runtime / 1e6, 1)
        result["backends"][backend] = entry
    if runtime_dir is not None and Path(runtime_dir).is_dir():
        result["edgec_runtime_mb"] = round(_tree_bytes(Path(runtime_dir)) / 1e6, 2)
    return result


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edgec.testing.device_root",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or find cached) the emulated device root")
    b.add_argument("--arch", default="arm64")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    p = sub.add_parser("python", help="run the device's python3 under qemu")
    p.add_argument("--arch", default="arm64")
    p.add_argument("--cpu", help="qemu CPU model (default: the architecture's)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    r = sub.add_parser("rpc-server", help="a TVM RPC server on the emulated device")
    r.add_argument("--arch", default="arm64")
    r.add_argument("--cpu", help="qemu CPU model (default: the architecture's)")
    r.add_argument("--tracker", metavar="HOST:PORT", help="register with this RPC tracker")
    r.add_argument("--key", default="emulated", help="the device key at the tracker")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=9090)
    s = sub.add_parser("sizes", help="device install size per backend, as JSON")
    s.add_argument("--arch", default="arm64")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            started = time.monotonic()
            device = build(args.arch, force=args.force)
            print(json.dumps({"root": str(device.path),
                              "seconds": round(time.monotonic() - started, 1),
                              **device.info}, indent=2))
        elif args.command == "python":
            device = build(args.arch, quiet=True)
            rest = args.args[1:] if args.args[:1] == ["--"] else args.args
            return subprocess.run(device.command(rest, args.cpu),
                                  env=device.environment()).returncode
        elif args.command == "rpc-server":
            device = build(args.arch, quiet=True)
            return device.rpc_server(tracker=args.tracker, key=args.key, host=args.host,
                                     port=args.port, cpu=args.cpu).wait()
        elif args.command == "sizes":
            runtime = Path(__file__).resolve().parents[2] / "edgec_runtime"
            print(json.dumps(install_sizes(args.arch, runtime_dir=runtime), indent=2))
    except Unavailable as error:
        print(f"device-root: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
