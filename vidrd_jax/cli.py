"""What every command-line tool shares: user errors as one ``error: ...`` line with exit status 2, outputs checked
before any work starts, and outputs that are never left half-written.

    def main(argv: Sequence[str] | None = None) -> int | Any:   # raises on bad input
        args = parser.parse_args(argv)
        cli.check_output_dir(args.out, "--out", overwrite=args.overwrite)   # before the slow part
        with cli.atomic_directory(args.out) as tmp:                          # renamed to --out on success only
            ...
    if __name__ == "__main__":
        sys.exit(cli.run_cli(main))

User errors are :class:`UsageError`, ``OSError`` (missing, unreadable or unwritable files and directories),
``ValueError`` (the validation errors of configs, flags and weights) and ``ImportError`` (a missing optional extra),
plus any a tool names; every other exception is a bug and keeps its traceback.

This module imports nothing from ``vidrd_jax`` (``data_pipelines`` uses it too) and nothing heavy.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from typing import IO, Any, Callable, Iterator, Sequence

EXIT_USAGE = 2
TRACEBACK_ENV = "VIDRD_TRACEBACK"  # set to 1: user errors propagate with their traceback (debugging)
USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError)


class UsageError(Exception):
    """A bad argument, config value, input or output: reported as one ``error: ...`` line, exit status 2."""


# --- errors ------------------------------------------------------------------------------------------------------

def error_line(error: BaseException | str) -> str:
    """``"error: <message on one line>"``."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"error: {text}"


def run_cli(main: Callable[[Any], Any], argv: Sequence[str] | None = None, *,
            errors: tuple[type[BaseException], ...] = ()) -> int:
    """Runs ``main(argv)`` and returns the process exit status.

    An int result is the status, anything else means 0; ``SystemExit`` (argparse's ``--help`` 0, usage error 2)
    keeps its code. :class:`UsageError`, :data:`USER_ERRORS` and ``errors`` print :func:`error_line` to stderr and
    give :data:`EXIT_USAGE` (with ``VIDRD_TRACEBACK=1`` in the environment they propagate with their traceback, for
    a ``ValueError`` that is a bug rather than bad input); any other exception propagates with its traceback.
    """
    try:
        result = main(argv)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(error_line(str(e.code).removeprefix("error: ")), file=sys.stderr)  # SystemExit("message")
        return EXIT_USAGE
    except (UsageError, *USER_ERRORS, *errors) as e:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(error_line(e), file=sys.stderr)
        return EXIT_USAGE
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def run_command(run: Callable[[list[str]], Any], doc: str, argv: Sequence[str] | None = None) -> int:
    """A recipe-style command: ``-h``/``--help`` prints ``doc`` (exit 0), else :func:`run_cli` of ``run(argv)``
    (``argv[0]`` is the program name; default ``sys.argv``)."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(doc)
        return 0
    return run_cli(run, argv)


# --- checking outputs before the work ----------------------------------------------------------------------------

def _is_url(path: str) -> bool:
    return "://" in path


def _check_parent(path: str, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a directory where a file can be created (missing
    directories below it are created when the output is written)."""
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UsageError(f"{flag}: cannot write {path!r}: {ancestor!r} is not a directory")
    try:  # a real write: permission bits say nothing to root, on read-only mounts or pseudo file systems
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise UsageError(f"{flag}: cannot write {path!r}: directory {ancestor!r} is not writable "
                         f"({e.strerror or e})") from None


def check_output_file(path: str, flag: str = "--out") -> None:
    """Raises :class:`UsageError` unless ``path`` can be written: not a directory, under a writable directory.

    An existing file is fine (it is replaced on success).
    """
    if os.path.isdir(path):
        raise UsageError(f"{flag}: {path!r} is a directory")
    _check_parent(path, flag)


def check_output_dir(path: str, flag: str = "--out", *, overwrite: bool = False) -> None:
    """Raises :class:`UsageError` unless directory ``path`` can be written: not a file, under a writable directory,
    and not an existing non-empty directory unless ``overwrite``. URLs are not checked."""
    if _is_url(path):
        return
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag}: {path!r} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise UsageError(f"{flag}: {path!r} already exists and is not empty; pass --overwrite to replace it")
    _check_parent(path, flag)


# --- writing outputs atomically ----------------------------------------------------------------------------------

def _ordinary_permissions(path: str, mode: int) -> None:
    """``mkstemp``/``mkdtemp`` create 0600/0700; give the output what ``open``/``mkdir`` would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


class AtomicFiles:
    """Files written under temporary names beside their final paths and renamed over them together on success.

        with AtomicFiles() as files:
            write_video(files.path("out.mp4"), frames)
            write_contact_sheet(files.path("out.png"), frames)

    A temporary name keeps the final extension (writers pick their format by it). If the block raises (Ctrl-C
    included), the temporary files are deleted and every earlier file at the final paths is left untouched; on
    success they are renamed in the order :meth:`path` was called.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, str]] = []

    def path(self, final: str | os.PathLike) -> str:
        """A new temporary path in ``final`` 's directory (created if missing)."""
        final = os.fspath(final)
        directory, name = os.path.split(os.path.abspath(final))
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp{os.path.splitext(name)[1]}")
        self._pending.append((final, tmp))
        return tmp

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for final, tmp in self._pending:
                    os.replace(tmp, final)
        finally:
            for _, tmp in self._pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self._pending.clear()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only when the block succeeds (see :class:`AtomicFiles`)."""
    with AtomicFiles() as files:
        tmp = files.path(path)
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yields a new temporary directory beside ``path``; it replaces ``path`` (an existing one is removed) when the
    block succeeds and is deleted when it raises, so ``path`` is never a half-written directory.

    URLs (``gs://...``) are yielded unchanged and written in place: object stores have no rename.
    """
    if _is_url(path):
        yield path
        return
    final = os.path.abspath(path)
    parent, name = os.path.split(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        _ordinary_permissions(tmp, 0o777)
        if not os.path.lexists(final):
            os.rename(tmp, final)
            return
        old = os.path.join(parent, f".{name}.{secrets.token_hex(4)}.old")
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            raise
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old)
        else:
            os.unlink(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
