"""What the build keeps between runs, and how it writes its output.

- :func:`content_key`: a stage's cache key, hashed from what the stage reads (its own config, its inputs'
  keys), never from a hand-kept list of fields to leave out.
- :class:`StageStore`: finished stages by content key (JSON records and folders), each entry written
  atomically with the sha256 of every file and checked on read. A bad entry (truncated, altered, zeroed)
  is reported, moved aside and rebuilt, never used.
- :class:`Staging`: the bundle is staged in a hidden folder beside the output, under an exclusive lock on
  the output's name, and renamed into place only when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from probscale_edge.errors import ProbscaleError

ENTRY = "entry.json"  # per cache entry: {"files": {name: {"sha256", "bytes"}}}


def content_key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def model_fingerprint(src) -> str:
    """A cheap fingerprint of a model folder (names, sizes, first and last MiB of each file)."""
    p = Path(str(src))
    if not p.is_dir():
        return str(src)
    h = hashlib.sha256()
    for name in sorted(os.listdir(p)):
        fp = p / name
        if fp.is_file() and name.endswith((".json", ".safetensors", ".bin", ".txt", ".model")):
            st = fp.stat()
            h.update(f"{name}:{st.st_size}".encode())
            with open(fp, "rb") as f:
                h.update(f.read(1 << 20))
                if st.st_size > 1 << 20:
                    f.seek(-(1 << 20), 2)
                    h.update(f.read())
    return h.hexdigest()


def _digests(folder: Path) -> dict:
    from probscale_edge.runtime.bundle import sha256_file

    return {str(p.relative_to(folder)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ENTRY}


class StageStore:
    """Content-keyed cache entries under ``root``; ``log`` reports a bad entry moved aside."""

    def __init__(self, root: Path, log=None):
        self.root = Path(root)
        self.log = log or (lambda *_: None)

    def path(self, key: str) -> Path:
        return self.root / key

    def _bad(self, key: str, why: str) -> None:
        dest = self.root / f".bad-{key}-{int(time.time())}"
        try:
            os.replace(self.root / key, dest)
        except OSError:
            shutil.rmtree(self.root / key, ignore_errors=True)
        self.log(f"[cache] entry {key} is damaged ({why}): moved aside to {dest.name}, rebuilding it")

    def get_dir(self, key: str) -> Path | None:
        """The entry's folder if it exists and every file matches its checksum; None otherwise."""
        d = self.root / key
        if not d.is_dir():
            return None
        try:
            files = json.loads((d / ENTRY).read_text())["files"]
            present = _digests(d)
        except (OSError, ValueError, KeyError, TypeError):
            self._bad(key, f"no readable {ENTRY}")
            return None
        if present != files:
            changed = sorted(set(files) ^ set(present) | {n for n in files if present.get(n) != files[n]})
            self._bad(key, f"{changed[0]} does not match its checksum" if changed else "checksums differ")
            return None
        return d

    def put_dir(self, key: str, fill) -> Path:
        """Write an entry: ``fill(folder)`` writes the files; checksums are added, then the folder is renamed
        into place (a reader never sees a half-written entry)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}."))
        try:
            d = tmp / "d"
            d.mkdir()
            fill(d)
            (d / ENTRY).write_text(json.dumps({"files": _digests(d)}, indent=1))
            dest = self.root / key
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(d, dest)
            return dest
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def get_json(self, key: str):
        d = self.get_dir(key)
        return None if d is None else json.loads((d / "record.json").read_text())

    def put_json(self, key: str, obj) -> None:
        self.put_dir(key, lambda d: (d / "record.json").write_text(json.dumps(obj, default=str)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Staging:
    """The output's staging folder: ``with Staging(out) as work:`` ... ``staging.publish(folder)``."""

    def __init__(self, out: Path, force: bool = False):
        self.out, self.force = Path(out), force
        self.parent = self.out.resolve().parent
        self.work: Path | None = None
        self._lock = None

    def _take_lock(self) -> None:
        """An exclusive lock on ``.NAME.lock`` beside the output: a second build to the same output is refused
        at once. The file is removed on exit, so after locking we check it is still the file at that path."""
        path = self.parent / f".{self.out.name}.lock"
        for _ in range(5):
            f = open(path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise ProbscaleError(f"another build is writing {self.out} right now",
                                     "wait for it to finish, or pass another --output") from None
            try:
                if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
                    self._lock, self._lock_path = f, path
                    return
            except FileNotFoundError:
                pass
            f.close()  # removed by the build that held it: take the new file
        raise ProbscaleError(f"could not lock {path}", "retry the build")

    def __enter__(self) -> "Staging":
        self.parent.mkdir(parents=True, exist_ok=True)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes the output (and locks it)
            self.work = Path(tempfile.mkdtemp(dir=self.parent, prefix=f".{self.out.name}.build-{os.getpid()}-"))
            return self
        self._take_lock()
        try:
            self._check_free()  # another build may have finished this output since check_output
        except BaseException:
            self.__exit__()
            raise
        self.clean_stale()
        self.work = Path(tempfile.mkdtemp(dir=self.parent, prefix=f".{self.out.name}.build-{os.getpid()}-"))
        return self

    def __exit__(self, *exc) -> None:
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        if self._lock is not None:
            try:
                os.unlink(self._lock_path)  # before closing: a waiting build re-checks the inode (_take_lock)
            except OSError:
                pass
            self._lock.close()

    def _check_free(self) -> None:
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())) and not self.force:
            raise ProbscaleError(f"output folder {self.out} already exists (another build wrote it meanwhile)",
                                 "pass --force to replace it, or another --output")

    def clean_stale(self) -> list[str]:
        """Remove staging folders left by builds that were killed (SIGKILL skips our cleanup)."""
        removed = []
        for p in self.parent.iterdir():
            for tag in (".build-", ".old-"):
                prefix = f".{self.out.name}{tag}"
                if p.name.startswith(prefix):
                    pid = p.name[len(prefix):].split("-")[0]
                    if pid.isdigit() and not _pid_alive(int(pid)) and p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                        removed.append(p.name)
        return removed

    def publish(self, folder: Path) -> None:
        """Rename ``folder`` into place; an old bundle (``--force``) is moved aside only now."""
        from probscale_edge.faults import fault

        fault("rename")
        self._check_free()
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(folder, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
