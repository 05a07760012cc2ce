"""Filesystem helpers with no heavy imports (used by data writers, checkpoints and run folders).

Directory swaps (:func:`replace_dir`) go ``final -> final.old``, ``final.tmp -> final``, then
delete ``final.old``. A crash between the two renames leaves ``final.old`` (the last complete
copy) and ``final.tmp`` (the new copy, complete or not: nothing on disk says which) and no
``final``; :func:`recover_dir` puts ``final.old`` back and never trusts a ``.tmp``.

:class:`RunLock` is the lock file ``RUN/.lock`` of a training run folder (owner PID and host).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from t2igan import T2IError

LOCK = ".lock"


def old_of(final: Path) -> Path:
    return final.with_name(final.name + ".old")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a completed ``tmp`` directory to ``final``, replacing an older ``final``.

    The old copy is moved aside before the new one goes in, so at every moment one complete
    version exists on disk: ``final``, or ``final.old`` between the two renames. A ``final.old``
    without a ``final`` (an earlier swap interrupted between its renames) is that last complete
    copy and is kept until ``tmp`` is in place."""
    old = old_of(final)
    if final.exists():
        if old.exists():  # left by a swap interrupted after its second rename: final is the newer copy
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(final: Path) -> str | None:
    """Undo a swap of ``final`` interrupted between its two renames: when ``final`` is missing
    and ``final.old`` exists, move ``final.old`` back (the last complete copy). A ``final.tmp``
    is left where it is and never used: it may be a half-written save (the next save of
    ``final`` deletes it). Returns a note when something was restored, else None."""
    old = old_of(final)
    if final.exists() or not old.is_dir():
        return None
    os.replace(old, final)
    return f"restored {final} from {old.name} (a save was interrupted between its two renames)"


def needs_recovery(final: Path) -> bool:
    return not final.exists() and old_of(final).is_dir()


# ----------------------------------------------------------------------------- run lock
def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) is not a probe there: assume alive (the user deletes the lock)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


def read_lock(path: Path) -> dict:
    """The owner recorded in a lock file ({} when missing, empty or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _owner(info: dict) -> str:
    return f"PID {info.get('pid', '?')} on {info.get('host', '?')}"


try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the PID in the file is all there is
    fcntl = None


class RunLock:
    """``RUN/.lock``: at most one training process writes a run folder.

    The file holds the owner's PID and host (JSON); on POSIX the owner also holds an
    ``flock`` on it, which the kernel drops when the process dies however it ends. A lock
    whose recorded PID is alive on this host, or that is flocked, or that names another host,
    refuses the folder (one :class:`T2IError` line naming the folder and the PID). A lock whose
    PID is not running on this host (and that no process holds) is stale: it is taken over and
    :attr:`note` says so. :meth:`release` deletes the file."""

    def __init__(self, run: Path):
        self.run = Path(run)
        self.path = self.run / LOCK
        self.fd: int | None = None
        self.note: str | None = None
        self.host = socket.gethostname()

    @property
    def held(self) -> bool:
        return self.fd is not None

    def _refusal(self, info: dict) -> T2IError:
        return T2IError(f"{self.run} is in use by another training process ({_owner(info)}, lock file {self.path}); "
                        "wait for it to finish or stop it (delete the lock file only if that process is gone)")

    def _stale(self, info: dict) -> bool | None:
        """True: the recorded owner is gone; False: it may be alive; None: no owner recorded."""
        if not info:
            return None
        try:
            pid = int(info.get("pid"))
        except (TypeError, ValueError):
            return None
        if info.get("host") != self.host:
            return False  # cannot tell whether a process on another machine is alive
        if pid == os.getpid():
            return True  # our own PID, not held by this object: a dead process's PID, reused
        return not pid_alive(pid)

    def check(self) -> None:
        """Refuse now if another live process holds the lock; writes nothing."""
        if self.held or not self.path.exists():
            return
        info = read_lock(self.path)
        if fcntl is not None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if isinstance(e, BlockingIOError):
                    raise self._refusal(read_lock(self.path) or info) from None
            finally:
                os.close(fd)
        if self._stale(info) is False:
            raise self._refusal(info)

    def acquire(self) -> None:
        if self.held:
            return
        self.run.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": self.host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for attempt in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            ok = False
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        if attempt < 4:  # perhaps another process's check(), which holds it for an instant
                            time.sleep(0.05)
                            continue
                        raise self._refusal(read_lock(self.path)) from None
                    except OSError:
                        pass  # a filesystem without flock: the PID in the file decides
                    try:
                        if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                            continue  # released (unlinked) and re-created meanwhile: lock the current file
                    except FileNotFoundError:
                        continue
                raw = b""
                while chunk := os.read(fd, 65536):
                    raw += chunk
                try:
                    info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
                except (ValueError, UnicodeDecodeError):
                    info = {}
                info = info if isinstance(info, dict) else {}
                stale = self._stale(info)
                if stale is False:
                    raise self._refusal(info)
                if stale is None and raw.strip() == b"" and fcntl is None and attempt < 10:
                    time.sleep(0.05)  # being written by its creator
                    continue
                if info:
                    self.note = (f"note: {self.path}: took over the stale lock of {_owner(info)} "
                                 "(that process is not running)")
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, (json.dumps(me) + "\n").encode("utf-8"))
                os.fsync(fd)
                ok = True
                self.fd = fd
                return
            finally:
                if not ok:
                    os.close(fd)
        raise T2IError(f"{self.path}: could not take the lock (it keeps changing); is another process starting on {self.run}?")

    def __del__(self):  # a Trainer built but never fitted, dropped with its lock held
        try:
            self.release()
        except Exception:  # noqa: BLE001, S110  (at interpreter shutdown os may be gone)
            pass

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)
