"""File-system boundary: every path a user gives enters through here, so OS and decoding errors name the path.

``read_text`` / ``read_bytes`` / ``opened`` map ``OSError`` and ``UnicodeDecodeError`` to a ``TrustlabError`` (by
default ``DataError``, exit 2) whose message names the path and the cause; ``writable_dir`` checks an output folder
before a long run starts instead of failing at its end. ``write_secret`` is the one writer that uses mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from .errors import ConfigError, DataError, TrustlabError

_CAUSES = {
    errno.ENOENT: ("does not exist", "check the path"),
    errno.EACCES: ("is not readable (permission denied)", "check the file's permissions"),
    errno.EPERM: ("is not accessible (operation not permitted)", "check the file's permissions"),
    errno.EISDIR: ("is a folder, not a file", "name a file inside it"),
    errno.ENOTDIR: ("has a file where a folder is expected", "check each part of the path"),
    errno.ENOSPC: ("cannot be written: the disk is full", "free some disk space"),
    errno.EROFS: ("is on a read-only file system", "choose a writable location"),
    errno.EEXIST: ("already exists", "it is never overwritten: choose another path"),
    errno.ENAMETOOLONG: ("has a name that is too long", "use a shorter path"),
}


def os_error(path: str | Path, exc: OSError, what: str = "file",
             error: type[TrustlabError] = DataError) -> TrustlabError:
    """The TrustlabError for ``exc`` raised while using ``path``."""
    cause, hint = _CAUSES.get(exc.errno, (f"cannot be used: {exc.strerror or exc}", "check the path"))
    return error(f"{what} {str(path)!r} {cause}", hint=hint)


@contextlib.contextmanager
def at_path(path: str | Path, what: str = "file", error: type[TrustlabError] = DataError) -> Iterator[None]:
    """Map OSError / UnicodeDecodeError raised inside the block to ``error`` naming ``path``."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason})",
                    hint="save it as UTF-8") from None
    except OSError as exc:
        raise os_error(path, exc, what, error) from None


def read_text(path: str | Path, what: str = "file", error: type[TrustlabError] = DataError) -> str:
    """UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is ``error`` naming the path."""
    with at_path(path, what, error):
        return Path(path).read_text(encoding="utf-8")


def read_bytes(path: str | Path, what: str = "file", error: type[TrustlabError] = DataError) -> bytes:
    with at_path(path, what, error):
        return Path(path).read_bytes()


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) and prove it writable; ConfigError naming it otherwise (exit 2)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a file, not a folder", hint="choose another --out folder")
    with at_path(path, what, ConfigError):
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    return path


def write_secret(path: str | Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; never overwrites an existing file."""
    path = Path(path)
    with at_path(path, "secret file", ConfigError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
