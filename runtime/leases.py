"""Leases in Redis: which process drives a run (or a benchmark) right now.

A lease's value names its holder (host, pid and a token for this process) and the
holder's last beat in Redis time: `host:pid:token|beat_ms`. The holder beats every
BEAT_S; the lease lapses LEASE_S after the last beat, long enough to ride out a Redis
hiccup. The beat lets another process tell a holder that died (kill -9) from one that
works long before the lease lapses: on the same host a dead pid that has gone quiet is
taken over at once; elsewhere a quiet holder may only be slow, so the caller is told
when the lease lapses instead (`LeaseView.lapses_in_s`).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from identifiers.redis_keys import decoded

LEASE_S = 30.0  # a lease lapses this long after its holder's last beat
BEAT_S = 1.0  # a holder beats this often
QUIET_S = 2.5 * BEAT_S  # a holder silent this long missed two beats: stopped, or stuck

# KEYS[1]: the lease; ARGV: holder, ttl in ms, the value to replace ('' for none).
# Takes the lease when it is free (or still holds `replace`): returns {1}; else
# {0, value, pttl, now_ms}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('GET', KEYS[1])
if (not current) or (ARGV[3] ~= '' and current == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. now, 'PX', ARGV[2])
  return {1}
end
return {0, current, redis.call('PTTL', KEYS[1]), now}
"""
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. now, 'PX', ARGV[2])
return 1
"""
# Deletes the lease only while `holder` holds it (a successor's lease is left alone).
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_me: tuple[int, str] | None = None


def holder() -> str:
    """This process as a lease holder: `host:pid:token` (a new token after a fork)."""
    global _me
    if _me is None or _me[0] != os.getpid():
        token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        _me = (os.getpid(), token)
    return _me[1]


@dataclass(frozen=True)
class LeaseView:
    """Someone else's lease (or this process's, left behind)."""

    value: str  # as stored, to replace it atomically
    holder: str
    quiet_s: float  # since the holder's last beat
    lapses_in_s: float  # until the lease expires by itself

    @property
    def mine(self) -> bool:
        return self.holder == holder()

    def holder_dead(self) -> bool:
        """Whether the holder is a process of this host that no longer runs."""
        if self.mine:
            return False
        host, _, rest = self.holder.partition(":")
        pid_text, _, _token = rest.partition(":")
        me_host, me_pid, _ = holder().split(":")
        if host != me_host or not pid_text.isdigit():
            return False
        if pid_text == me_pid:  # this pid, another token: an earlier process (restarted)
            return True
        return not _running(int(pid_text))

    @property
    def beating(self) -> bool:
        return self.quiet_s < QUIET_S


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    try:  # a zombie (killed, not yet reaped by its parent) runs no more
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def take(client: Any, key: str, replace: LeaseView | None = None) -> LeaseView | None:
    """Take the lease at `key` for this process: None when taken, else the lease that
    stands. With `replace`, a lease still holding that value is taken over."""
    script = client.register_script(_TAKE)
    reply = script(
        keys=[key], args=[holder(), round(LEASE_S * 1000), replace.value if replace else ""]
    )
    if int(reply[0]) == 1:
        return None
    value, pttl, now_ms = decoded(reply[1]), int(reply[2]), int(reply[3])
    who, _, beat = value.rpartition("|")
    beat_ms = int(beat) if beat.isdigit() else now_ms - round(LEASE_S * 1000)
    return LeaseView(
        value=value,
        holder=who or value,
        quiet_s=max(0.0, (now_ms - beat_ms) / 1000),
        lapses_in_s=max(0.0, pttl / 1000),
    )


def beat(client: Any, key: str) -> None:
    """Hold (or keep holding) the lease at `key`: this process, beating now."""
    client.register_script(_BEAT)(keys=[key], args=[holder(), round(LEASE_S * 1000)])


def release(client: Any, key: str) -> None:
    """Give the lease up, unless another process holds it by now."""
    client.register_script(_RELEASE)(keys=[key], args=[holder()])


def verdict(standing: LeaseView, driving_here: bool = False) -> tuple[str, float]:
    """What a caller that wants to drive the thing does about a lease that stands:
    ("take", 0) over it (its holder is gone), ("follow", 0) it (its holder beats), or
    ("wait", seconds) before asking again (its holder went quiet and may be dead)."""
    if standing.mine:  # not driving here: left behind by this process (a failed release)
        return ("follow", 0.0) if driving_here else ("take", 0.0)
    if standing.holder_dead():
        if not standing.beating:
            return "take", 0.0
        return "wait", QUIET_S - standing.quiet_s  # just died: its last beat is fresh
    if standing.beating:
        return "follow", 0.0
    return "wait", standing.lapses_in_s  # quiet elsewhere: stuck or dead, can't tell
