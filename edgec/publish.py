"""Putting folders in place without ever losing one: the artifact folder OUT and the
entries of the build cache.

The rules (issue 12):

- OUT is replaced only when it is an edgec artifact (an edgec ``manifest.json`` and
  nothing but the files it describes) or an empty folder; anything else is refused,
  never deleted (`replace_problem`).
- A new OUT is built complete in a staging folder beside it, then swapped in with one
  ``renameat2(RENAME_EXCHANGE)``: at every instant OUT is the old artifact or the new
  one. Where the kernel or file system lacks it, a recoverable protocol is used instead
  (old aside, new in, old to the trash); a crash between its renames leaves the old
  artifact under a ``.OUT.edgec-old-*`` name, and the next edgec that publishes beside
  it (or `recover`) puts it back. Swaps into one parent folder are serialised by an
  ``flock`` on that folder, so concurrent compiles into one OUT take turns.
- Leftovers are recognised by name only (``.NAME.edgec-{tmp,old,trash}-PID-*``, names
  nothing but edgec makes) and removed only once their process is gone.
- The cache only ever deletes what it created: a valid entry is never replaced; a
  corrupt one (a file whose sha256 differs from its manifest's) is swapped out and
  removed; an entry being written lives under a temporary name until complete.
- Every file copied out of the cache is checked against the manifest's sha256 after it
  is copied (the copy is what gets published, so a concurrent change cannot slip in).
- Every file is written through a temporary name and one rename, with the permissions
  an ordinary build output has (0666 minus the umask, or the mode of the file it
  replaces), and no temporary file survives a failure.

Fault injection, for the tests: ``EDGEC_FAULT=KIND:N[:ACTION][,...]`` stops the process
at the Nth step of KIND (``publish``: the renames and removals that put OUT in place;
``cache``: storing in and copying from the cache; ``write``: each file written
atomically). ACTION is ``kill`` (SIGKILL, the default) or ``enospc`` (the OSError of a
full disk). ``EDGEC_FAULT_TRACE=FILE`` appends ``KIND:N where`` for each step reached.
``EDGEC_NO_RENAMEAT2=1`` forces the recoverable protocol.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import signal
import stat
import tempfile
from contextlib import contextmanager, suppress
from typing import Callable, Iterator

from edgec import artifact_format as art
from edgec.diagnostics import Diagnostic, Location, UsageError

# Files every artifact holds besides those its manifest lists with their sha256.
UNLISTED = (art.MANIFEST, art.MEASUREMENTS, art.REPORT, "report.html")
# The most an unlisted file (reports, measurements) may hold when copied from the cache.
_UNLISTED_LIMIT = 256 << 20

_LEFTOVER = re.compile(r"^\.(?P<base>.+)\.edgec-(?P<kind>tmp|old|trash)-(?P<pid>\d+)-[^/]*$")


# --------------------------------------------------------------------------- fault injection

_fault_counts: dict[str, int] = {}


def fault_point(kind: str, where: str = "") -> None:
    """One numbered step of ``kind``; see the module docstring (``EDGEC_FAULT``)."""
    plan = os.environ.get("EDGEC_FAULT")
    trace = os.environ.get("EDGEC_FAULT_TRACE")
    if not plan and not trace:
        return
    n = _fault_counts[kind] = _fault_counts.get(kind, 0) + 1
    if trace:
        with open(trace, "a") as f:
            f.write(f"{kind}:{n} {where}\n")
    for item in (plan or "").split(","):
        parts = item.strip().split(":")
        if len(parts) >= 2 and parts[0] == kind and parts[1] == str(n):
            if len(parts) > 2 and parts[2] == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
            os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- writing files


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def ordinary_mode(path: str, executable: bool = False) -> int:
    """The mode a file written at ``path`` gets: that of the regular file it replaces,
    else 0666 (0777 when executable) minus the umask, as a compiler's output has."""
    with suppress(OSError):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    return (0o777 if executable else 0o666) & ~_umask()


def ensure_folder(directory: str) -> None:
    """os.makedirs, saying "Not a directory" when a file is in the way."""
    try:
        os.makedirs(directory, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory) from None


def write_atomically(path: str, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and one rename:
    a reader sees the old bytes or the new ones, never a part. On any failure the
    temporary file is removed and the OSError raised."""
    directory = os.path.dirname(os.path.abspath(path))
    ensure_folder(directory)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    fd, tmp = tempfile.mkstemp(prefix=".edgec-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        fault_point("write", os.path.basename(path))
        os.chmod(tmp, ordinary_mode(path) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def write_if_changed(path: str, text: str) -> bool:
    """Write ``text`` unless the file already holds exactly it (keeps mtimes stable);
    atomically, with ordinary permissions (`write_atomically`)."""
    data = text.encode()
    try:
        with open(path, "rb") as f:
            if f.read(len(data) + 1) == data:
                return False
    except OSError:
        pass
    write_atomically(path, data)
    return True


def normal_permissions(folder: str) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; an artifact is meant to be
    copied and deployed, so give it the permissions an ordinary build output has."""
    umask = _umask()
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, (0o777 if st.st_mode & 0o100 else 0o666) & ~umask)


# --------------------------------------------------------------------------- what may be replaced


def _some(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def replace_problem(path: str) -> str | None:
    """None when edgec may replace ``path``: it does not exist, is an empty folder, or
    is an edgec artifact folder holding nothing but the artifact's own files.
    Otherwise why not, in words."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"it cannot be examined ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it exists and is not a folder"
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if not names:
        return None
    manifest = art.read_manifest(path)
    if manifest is None:
        return f"it is not an edgec artifact (no edgec manifest.json) and holds {_some(names)}"
    known = set(UNLISTED) | set(manifest["files"])
    others = []
    for name in names:
        try:
            regular = stat.S_ISREG(os.lstat(os.path.join(path, name)).st_mode)
        except OSError:
            regular = False
        if name not in known or not regular:
            others.append(name)
    if others:
        return f"it holds {_some(others)}, which edgec did not write"
    return None


def check_output_folder(out: str, protected: dict[str, list[str]]) -> None:
    """Refuse (exit 2) an OUT that is, or lies above, anything in ``protected``
    (what -> paths: the model, the spec, the data, the cache, the working folder):
    replacing OUT would delete it."""
    real_out = os.path.realpath(out)
    for what, paths in protected.items():
        for p in paths:
            if not p:
                continue
            real = os.path.realpath(p)
            if real == real_out or os.path.commonpath([real, real_out]) == real_out:
                raise UsageError(Diagnostic.error(
                    f"the output folder is or holds {what} ({p}); edgec replaces the output folder "
                    f"on every compile and never deletes its inputs: choose another -o",
                    Location(path=out)))
    # An artifact inside another would be a folder the outer one's manifest does not
    # list: the outer one could then never be replaced (nor the inner one kept by it).
    parent = os.path.dirname(real_out)
    while parent and parent != os.path.dirname(parent):
        if art.read_manifest(parent) is not None:
            raise UsageError(Diagnostic.error(
                f"the output folder is inside the edgec artifact {parent}, which holds only "
                "the files its manifest lists: choose another -o", Location(path=out)))
        parent = os.path.dirname(parent)


def check_replaceable(out: str) -> None:
    problem = replace_problem(out)
    if problem:
        raise UsageError(_refusal(out, problem))


def _refusal(out: str, problem: str) -> Diagnostic:
    return Diagnostic.error(
        f"refusing to replace the output folder: {problem}; edgec replaces only an "
        "artifact it wrote (or an empty folder): remove it yourself or choose another -o",
        Location(path=out))


# --------------------------------------------------------------------------- renames and locks


AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_renameat2_fn = None
_renameat2_missing = False


def _renameat2(src: str, dst: str, flags: int) -> bool:
    """renameat2(2) with ``flags``; False where the libc, kernel or file system lacks it."""
    global _renameat2_fn, _renameat2_missing
    if _renameat2_missing or os.environ.get("EDGEC_NO_RENAMEAT2"):
        return False
    if _renameat2_fn is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):
            _renameat2_missing = True
            return False
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        _renameat2_fn = fn
    if _renameat2_fn(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), src, None, dst)


@contextmanager
def locked(folder: str) -> Iterator[None]:
    """An exclusive flock on ``folder`` itself: edgec processes that swap folders inside
    it take turns. Released when the process dies, however it dies."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _sibling(dest: str, kind: str) -> str:
    parent, base = os.path.split(dest)
    return os.path.join(parent, f".{base}.edgec-{kind}-{os.getpid()}-{os.urandom(4).hex()}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_tree(path: str, kind: str | None = None) -> None:
    """Remove a folder edgec made (a staging folder, a swapped-out artifact)."""
    first = True
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        with suppress(OSError):
            os.unlink(path)
        return
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in names:
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with suppress(OSError):
                os.unlink(p)
        if first and kind:
            fault_point(kind, f"removing {os.path.basename(path)}")
        first = False
    shutil.rmtree(path, ignore_errors=True)


def _recover_locked(parent: str) -> None:
    """With ``parent``'s lock held: put back an artifact a crash left aside, remove the
    leftovers of processes that are gone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in sorted(names):
        m = _LEFTOVER.match(name)
        if not m:
            continue
        path = os.path.join(parent, name)
        if m["kind"] == "old":
            # Only a lock holder makes these, and this process holds the lock now: the
            # one that made it died between moving OUT aside and putting the new one in.
            dest = os.path.join(parent, m["base"])
            if not os.path.lexists(dest):
                with suppress(OSError):
                    os.rename(path, dest)
            elif replace_problem(dest) is None and os.listdir(dest):
                remove_tree(path)  # the new artifact made it in place: the old one is done
            # else: something not edgec's took its place; keep the old artifact aside
        elif not _alive(int(m["pid"])):
            remove_tree(path)


def recover(out: str) -> None:
    """Finish what a crashed edgec left beside ``out``: restore OUT if it was moved
    aside, remove dead processes' staging folders."""
    parent = os.path.dirname(os.path.abspath(out))
    try:
        with locked(parent):
            _recover_locked(parent)
    except OSError:
        pass


class _Refused(Exception):
    pass


def _swap_in_locked(tmp: str, dest: str, check: Callable[[str], str | None],
                    kind: str) -> str | None:
    """Put folder ``tmp`` at ``dest`` (the caller holds the parent's lock). Returns where
    the folder it replaced now lies (for the caller to remove), or None. ``check``
    (path -> problem or None) is asked about the folder about to be replaced, and asked
    again once it is swapped out, so that nothing put there meanwhile is removed."""
    if not os.path.lexists(dest):
        try:
            if _renameat2(tmp, dest, RENAME_NOREPLACE):
                fault_point(kind, "moved into place")
                return None
        except FileExistsError:
            pass
        else:
            try:
                os.rename(tmp, dest)
                fault_point(kind, "moved into place")
                return None
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
    problem = check(dest)
    if problem:
        raise _Refused(problem)
    if _renameat2(tmp, dest, RENAME_EXCHANGE):
        fault_point(kind, "exchanged")
        problem = check(tmp)
        if problem:
            _renameat2(tmp, dest, RENAME_EXCHANGE)
            raise _Refused(problem)
        return tmp
    # The recoverable protocol: old aside, new in, old to the trash.
    old = _sibling(dest, "old")
    os.rename(dest, old)
    fault_point(kind, "old moved aside")
    problem = check(old)
    if problem:
        os.rename(old, dest)
        raise _Refused(problem)
    try:
        os.rename(tmp, dest)
    except OSError:
        os.rename(old, dest)
        raise
    fault_point(kind, "new in place")
    trash = _sibling(dest, "trash")
    os.rename(old, trash)
    fault_point(kind, "old in the trash")
    return trash


# --------------------------------------------------------------------------- OUT


def publish(tmp: str, out: str) -> None:
    """Put the complete folder ``tmp`` (beside ``out``) at ``out``, replacing the
    artifact there, if any, in one exchange. Refuses (exit 2, ``tmp`` removed) when
    ``out`` is something else."""
    normal_permissions(tmp)
    fault_point("publish", "staging complete")
    parent = os.path.dirname(out)
    try:
        with locked(parent):
            _recover_locked(parent)
            old = _swap_in_locked(tmp, out, replace_problem, "publish")
    except _Refused as r:
        remove_tree(tmp)
        raise UsageError(_refusal(out, str(r))) from None
    if old:
        remove_tree(old, "publish")


@contextmanager
def staging_dir(out: str) -> Iterator[str]:
    """A temporary folder beside ``out``; on success it is published at ``out``
    (`publish`); on failure it is removed and ``out`` is untouched."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    try:
        ensure_folder(parent)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.edgec-tmp-{os.getpid()}-",
                               dir=parent)
    except OSError as e:
        raise UsageError(Diagnostic.error(
            f"cannot create the output folder: {e.strerror}", Location(path=out))) from None
    try:
        yield tmp
        publish(tmp, out)
    finally:
        if os.path.lexists(tmp):
            remove_tree(tmp)


# --------------------------------------------------------------------------- the cache


class _Corrupt(Exception):
    pass


def _copy_file(src: str, dst: str, limit: int) -> None:
    """Copy a regular file of at most ``limit`` bytes (no links, devices or FIFOs)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Corrupt(f"{src} is not a regular file")
        with open(dst, "xb") as g:
            remaining = limit + 1
            while remaining > 0:
                chunk = f.read(min(1 << 20, remaining))
                if not chunk:
                    break
                g.write(chunk)
                remaining -= len(chunk)
            if remaining <= 0:
                raise _Corrupt(f"{src} is larger than its manifest says")


def _copy_artifact(src: str, dst: str) -> dict:
    """Copy the artifact in ``src`` into the empty folder ``dst``: its manifest, the
    files the manifest lists and the unlisted reports. Returns the copied manifest."""
    _copy_file(os.path.join(src, art.MANIFEST), os.path.join(dst, art.MANIFEST), art.MANIFEST_LIMIT)
    manifest = art.read_manifest(dst)
    if manifest is None:
        raise _Corrupt("not an edgec manifest")
    fault_point("cache", f"copied {art.MANIFEST}")
    for name, digest in sorted(manifest["files"].items()):
        if not art.plain_name(name) or name in UNLISTED or not isinstance(digest, dict) \
                or not isinstance(digest.get("bytes"), int):
            raise _Corrupt(f"the manifest's entry for {name!r} is not valid")
        _copy_file(os.path.join(src, name), os.path.join(dst, name), digest["bytes"])
        fault_point("cache", f"copied {name}")
    for name in UNLISTED[1:]:
        with suppress(FileNotFoundError):
            _copy_file(os.path.join(src, name), os.path.join(dst, name), _UNLISTED_LIMIT)
    return manifest


def _valid_entry(entry: str, key: str) -> bool:
    manifest = art.read_manifest(entry)
    return (manifest is not None and manifest.get("cache_key") == key
            and not art.verify_files(entry, manifest))


def _empty(folder: str) -> None:
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with suppress(OSError):
                os.unlink(p)


def _entry_problem(path: str) -> str | None:
    return None if art.read_manifest(path) is not None else "not an edgec cache entry"


def cache_fetch(entry: str, key: str, staging: str) -> dict | None:
    """Copy the cache's artifact ``entry`` (cache/artifacts/KEY) into the empty folder
    ``staging`` and check the copy against its manifest's sha256. Returns the
    manifest, or None (``staging`` emptied again) when the entry is missing, another
    key's, or corrupt; a corrupt entry is removed from the cache."""
    try:
        if not os.path.isdir(entry):
            return None
        manifest = _copy_artifact(entry, staging)
        if manifest.get("cache_key") != key or manifest.get("format_version") != art.FORMAT_VERSION:
            raise _Corrupt("another key's entry")
        problems = art.verify_files(staging, manifest)
        if problems:
            raise _Corrupt("; ".join(problems))
        return manifest
    except (OSError, _Corrupt):
        _empty(staging)
        _discard_if_corrupt(entry, key)
        return None


def _discard_if_corrupt(entry: str, key: str) -> None:
    parent = os.path.dirname(entry)
    old = None
    try:
        with locked(parent):
            if os.path.isdir(entry) and not os.path.islink(entry) and not _valid_entry(entry, key):
                old = _sibling(entry, "trash")
                os.rename(entry, old)
                fault_point("cache", "corrupt entry moved out")
    except OSError:
        return
    if old:
        remove_tree(old)


def cache_store(folder: str, entry: str) -> None:
    """Add a copy of the artifact ``folder`` to the cache as ``entry``. Only ever adds:
    a valid entry already there is kept; a corrupt one is replaced. A cache that cannot
    be written (a full disk, no permission) only costs time: nothing is raised and
    nothing partial is left."""
    parent = os.path.dirname(entry)
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        with locked(parent):
            _recover_locked(parent)
        manifest = art.read_manifest(folder)
        if manifest is None:
            return
        key = manifest.get("cache_key")
        if _valid_entry(entry, key):
            return
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(entry)}.edgec-tmp-{os.getpid()}-",
                               dir=parent)
        fault_point("cache", "entry folder made")
        copied = _copy_artifact(folder, tmp)
        if art.verify_files(tmp, copied):
            return
        normal_permissions(tmp)
        fault_point("cache", "entry complete")
        with locked(parent):
            if os.path.isdir(entry) and _valid_entry(entry, key):
                return  # another process stored it first
            tmp = _swap_in_locked(tmp, entry, _entry_problem, "cache")
    except (OSError, _Corrupt, _Refused):
        pass
    finally:
        if tmp and os.path.lexists(tmp):
            remove_tree(tmp)
