"""Which failures of a `glossator` command are expected faults (the user can act on
them: a message and exit code 2) and which are bugs (an internal error, exit code 1,
the traceback with -v); `cli.common.user_errors` reports both, around each command and
around the whole app (`cli.app.GlossatorApp`)."""

from __future__ import annotations

from pathlib import Path

from errors import GlossatorError

UTF8_HINT = "glossator reads UTF-8 text: convert it first (e.g. iconv -t UTF-8)"


def fault_message(err: BaseException) -> str | None:
    """The message of an expected fault, or None when `err` is a bug."""
    import redis
    from pydantic import ValidationError

    if isinstance(err, GlossatorError | ValidationError):
        return str(err)
    if isinstance(err, UnicodeDecodeError):  # a file given (corpus, spec) is not UTF-8
        return f"a file or text given is not valid UTF-8 ({err}); {UTF8_HINT}"
    if isinstance(err, UnicodeEncodeError) and "surrogates" in err.reason:
        # undecodable argv bytes that reached an encoder (Python keeps them as surrogates)
        return f"a text or name given is not valid UTF-8; {UTF8_HINT}"
    if isinstance(err, redis.ConnectionError | redis.TimeoutError):  # went away mid-command
        return (
            f"lost the connection to Redis ({err}); check that the server is running "
            "(GLOSSATOR_REDIS_URL, or the embedded one in the data dir) and run the command again"
        )
    if isinstance(err, OSError) and err.errno is not None:
        return _os_fault(err)
    return None


def _os_fault(err: OSError) -> str:
    """A file or folder glossator could not use: which one, why, and where to look."""
    if err.filename is None:
        return f"{err.strerror} ({type(err).__name__})"
    where = f"cannot use {err.filename}: {err.strerror}"
    data_dir = _data_dir()
    if data_dir is not None and Path(str(err.filename)).is_relative_to(data_dir):
        return (
            f"{where}. It is in glossator's data dir, {data_dir}: set GLOSSATOR_DATA_DIR "
            "to a folder this user may write"
        )
    return where


def _data_dir() -> Path | None:
    """The configured data dir, or None when the settings themselves do not load."""
    from runtime.settings import get_settings

    try:
        return Path(get_settings().data_dir).expanduser().absolute()
    except Exception:  # the message goes out without the hint
        return None


def undecodable_argument(argv: list[str]) -> str | None:
    """Why an argument is refused: bytes that are not UTF-8 (Python decodes argv with
    surrogateescape, so they would fail later, deep in a tokenizer or a Redis write)."""
    for position, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return f"argument {position} ('{shown}') is not valid UTF-8; {UTF8_HINT}"
    return None
