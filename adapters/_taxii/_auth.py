"""Organisation credentials for the TAXII server: scrypt-hashed secrets in a TOML file.

A credential is a token ``<org>.<random>``. Clients send it as the password of HTTP Basic
(user = the organisation id) or as ``Authorization: Bearer <token>`` / ``Token <token>``;
the organisation is read from the token, so one scrypt check decides. The file holds only
hashes::

    [orgs.northbank]
    secrets = ["scrypt$16384$8$1$<salt b64>$<hash b64>"]

Verified tokens are remembered for a few minutes under a keyed digest, so that a paging
client does not pay for scrypt on every request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

import tomli_w

from .._bridge import atomic_write
from .._errors import AdapterError

__all__ = [
    "Credentials",
    "CredentialsError",
    "FailedLogins",
    "LoginsBusy",
    "claimed_org",
    "hash_secret",
    "new_token",
    "set_secret",
]

_N, _R, _P = 2**14, 8, 1
_ORG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")


def claimed_org(user: str | None, token: str) -> str:
    """The organisation a login names, for rate limits and logs; "" when it names none.

    HTTP Basic: the user name, when it is an organisation id. A bearer token
    (``<org>.<secret>``): its head, when that is one. Never any other part of a password: one
    typed without its ``<org>.`` head must not reach the logs.
    """
    if user is not None:
        return user if _ORG_RE.match(user) else ""
    head, dot, _ = token.partition(".")
    return head if dot and _ORG_RE.match(head) else ""


_CACHE_TTL = 300.0


class LoginsBusy(AdapterError):
    """Too many logins wait for their secret check; the client should retry shortly."""


class CredentialsError(AdapterError):
    """The credentials file cannot be read or written."""


def hash_secret(token: str, *, n: int = _N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=n, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def _check(token: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            token.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, want)


def new_token(org: str) -> str:
    return f"{org}.{secrets.token_urlsafe(24)}"


class Credentials:
    """Hashed secrets per organisation; ``verify`` returns the organisation or ``None``.

    A failed check always costs the same: as many scrypt runs as the organisation with the
    most secrets has (two while one rotates), with its parameters, whether the organisation
    exists or not, so that the time an answer takes tells neither. At most
    ``max_parallel`` scrypt checks run at once (each takes tens of milliseconds and 16 MiB)
    and at most ``max_waiting`` more wait for their turn: past that a login is refused at once
    with ``LoginsBusy`` (a 503), so a flood of guesses from many addresses neither takes the
    machine nor makes a real login wait behind thousands of others. Tokens verified in the
    last minutes never queue.
    """

    def __init__(
        self,
        hashes: Mapping[str, tuple[str, ...]],
        *,
        max_parallel: int = 2,
        max_waiting: int = 64,
    ) -> None:
        self._hashes = dict(hashes)
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[str, float]] = {}
        self._checks = max((len(v) for v in self._hashes.values()), default=1)
        sample = next((v[0] for v in self._hashes.values() if v), None)
        n = int(sample.split("$")[1]) if sample is not None else _N
        self._decoy = hash_secret(secrets.token_urlsafe(24), n=n)
        self._gate = asyncio.Semaphore(max_parallel)
        self._max_queued = max_parallel + max_waiting
        self._queued = 0
        """Checks running or waiting for the gate."""

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise CredentialsError(f"taxii credentials {path}: cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise CredentialsError(f"taxii credentials {path}: not valid TOML: {exc}") from exc
        return cls(_parse(data, path))

    @property
    def orgs(self) -> frozenset[str]:
        return frozenset(self._hashes)

    def cached(self, user: str | None, token: str) -> str | None:
        """The organisation of a token verified in the last few minutes, without scrypt."""
        hit = self._cache.get(self._cache_id(token))
        if hit is not None and hit[1] > time.monotonic() and user in (None, hit[0]):
            return hit[0]
        return None

    @property
    def busy(self) -> bool:
        """The queue of secret checks is full: a login now would be refused (LoginsBusy)."""
        return self._queued >= self._max_queued

    def _check_done(self, check: asyncio.Future[bool]) -> None:
        self._queued -= 1
        self._gate.release()
        if not check.cancelled():
            check.exception()  # retrieved: a cancelled request no longer awaits it

    def _cache_id(self, token: str) -> bytes:
        return hmac.new(self._cache_key, token.encode(), hashlib.sha256).digest()

    def _verify_now(self, org: str, token: str) -> bool:
        stored = self._hashes.get(org, ())
        padded = [*stored, *[self._decoy] * (self._checks - len(stored))]
        # Every check runs (no early exit): the time does not say which one matched.
        results = [_check(token, one) for one in padded]
        return any(results[: len(stored)])

    async def verify(self, user: str | None, token: str) -> str | None:
        """Basic (``user`` given) or bearer (``user`` None); the organisation, or ``None``."""
        if len(token) > 512:
            return None
        found = self.cached(user, token)
        if found is not None:
            return found
        org = token.split(".", 1)[0]
        if user is not None and user != org:
            return None  # the token names another organisation: no scrypt needed to say no
        if self.busy:
            raise LoginsBusy(f"{self._queued} logins are being checked; retry in a second")
        self._queued += 1
        try:
            await self._gate.acquire()
        except BaseException:
            self._queued -= 1
            raise
        # From here the slot is given back when the check ends, not when this request does:
        # a cancelled request cannot stop its scrypt thread, which still takes a core.
        check = asyncio.ensure_future(asyncio.to_thread(self._verify_now, org, token))
        check.add_done_callback(self._check_done)
        valid = await asyncio.shield(check)
        if not valid:
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[self._cache_id(token)] = (org, time.monotonic() + _CACHE_TTL)
        return org


class FailedLogins:
    """Failed logins per (client address, claimed organisation), in a sliding window.

    After ``limit`` failures within ``window`` seconds that pair must wait until the oldest
    of them leaves the window; a success clears it. Keyed on the pair, so that a guesser
    slows itself down without locking the organisation out for its other addresses. Behind
    a proxy every client shares the proxy's address: rate-limit there too.
    """

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], collections.deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> collections.deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def wait(self, key: tuple[str, str]) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self._clock())

    def failed(self, key: tuple[str, str]) -> None:
        times = self._failures.pop(key, None)
        if times is None:
            times = collections.deque(maxlen=self.limit)
            while len(self._failures) >= self._max_keys:
                # Under a flood: forget the pair that failed least recently, never all.
                del self._failures[next(iter(self._failures))]
        times.append(self._clock())
        self._failures[key] = times  # re-inserted: the dict's order is the order of failures

    def succeeded(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)

    def forgive(self, key: tuple[str, str]) -> None:
        """Take back the latest failure (an attempt counted before it turned out right)."""
        times = self._failures.get(key)
        if times:
            times.pop()
        if not times:
            self._failures.pop(key, None)  # an empty entry would hold a slot of the table


def _parse(data: Mapping[str, object], path: Path) -> dict[str, tuple[str, ...]]:
    orgs = data.get("orgs", {})
    if not isinstance(orgs, dict) or set(data) - {"orgs"}:
        raise CredentialsError(f"taxii credentials {path}: expected only [orgs.<id>] tables")
    out: dict[str, tuple[str, ...]] = {}
    for org, entry in orgs.items():
        hashes = entry.get("secrets") if isinstance(entry, dict) else None
        if (
            not _ORG_RE.match(org)
            or not isinstance(hashes, list)
            or not all(isinstance(h, str) and h.startswith("scrypt$") for h in hashes)
        ):
            raise CredentialsError(
                f"taxii credentials {path}: orgs.{org}.secrets must be a list of scrypt hashes"
            )
        out[org] = tuple(hashes)
    return out


def set_secret(path: Path, org: str, *, keep_old: bool = False, n: int = _N) -> str:
    """Create or replace ``org``'s secret in the file (0600); returns the new token once."""
    if not _ORG_RE.match(org):
        raise CredentialsError(f"{org!r} is not a valid organisation id")
    hashes = _parse(tomllib.loads(path.read_text()), path) if path.exists() else {}
    token = new_token(org)
    hashes[org] = ((*hashes.get(org, ()),) if keep_old else ()) + (hash_secret(token, n=n),)
    doc = {"orgs": {o: {"secrets": list(h)} for o, h in sorted(hashes.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, tomli_w.dumps(doc).encode(), mode=0o600)
    return token
