"""Team keys: made once, shown once, stored only as a hash; checked on every request through a short cache.

Why sha256 and not bcrypt: a key is 32 random bytes (256 bits), so nobody can guess it back from its hash and
a slow password hash buys nothing. bcrypt exists for low-entropy human passwords; here it would cost ~100 ms
of CPU on every request's hot path and, being salted per key, would rule out finding a key by its hash in one
lookup (10,000 keys would mean 10,000 bcrypt checks). sha256 of the whole key is one O(1) store lookup.

Layout in the keys store: `key:<sha256 hex>` -> the record (team, models, created, expires, key id);
`used:<key id>` -> last-used time, written by the gateway apart from the record, so a last-used update racing
a revoke can never bring the revoked record back.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .store import Store

KEY_PREFIX = "fleet-"
RECORD = "key:"
USED = "used:"
ALL_MODELS = "*"
TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_CACHE_TTL = 30.0  # a revoked key stops working everywhere within this many seconds


@dataclass(frozen=True)
class TeamKey:
    """What is stored about a key: never the key itself."""

    key_id: str
    team: str
    models: tuple[str, ...]  # ("*",) for every model of the catalog
    created: float  # unix seconds
    expires: float | None

    def allows(self, model: str) -> bool:
        return ALL_MODELS in self.models or model in self.models

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "models": list(self.models)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeamKey:
        return cls(
            key_id=str(data["key_id"]),
            team=str(data["team"]),
            models=tuple(data["models"]),
            created=float(data["created"]),
            expires=None if data.get("expires") is None else float(data["expires"]),
        )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(
    team: str, models: tuple[str, ...], expires_in: float | None, now: float | None = None
) -> tuple[str, TeamKey]:
    """A fresh key and its record. The key is returned once, to print; only the record is stored."""
    if not TEAM_NAME.match(team):
        raise ValueError(f"team name {team!r}: use letters, digits, '.', '_' or '-' (at most 64, starting alnum)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    created = time.time() if now is None else now
    record = TeamKey(
        key_id=hash_key(key)[:12],  # a short handle for list/revoke; says nothing usable about the key
        team=team,
        models=models or (ALL_MODELS,),
        created=created,
        expires=None if expires_in is None else created + expires_in,
    )
    return key, record


def store_key(store: Store, key: str, record: TeamKey) -> None:
    store.put_many({RECORD + hash_key(key): record.to_json()})


def list_keys(store: Store) -> list[tuple[TeamKey, float | None]]:
    """Every key's record with its last-used time (None: never used)."""
    entries = dict(store.items())
    records = [TeamKey.from_json(v) for k, v in entries.items() if k.startswith(RECORD)]
    return sorted(
        ((r, entries.get(USED + r.key_id)) for r in records), key=lambda pair: (pair[0].team, pair[0].created)
    )


def revoke(store: Store, team_or_key_id: str) -> list[TeamKey]:
    """Delete every key of a team, or the one key with this id; the revoked records (empty: none matched)."""
    revoked = []
    for stored_as, value in store.items():
        if not stored_as.startswith(RECORD):
            continue
        record = TeamKey.from_json(value)
        if team_or_key_id in (record.team, record.key_id):
            store.pop(stored_as)
            store.pop(USED + record.key_id)
            revoked.append(record)
    return revoked


def parse_duration(text: str) -> float:
    """'90d', '12h', '30m', '45s' -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise ValueError(f"duration {text!r}: use a number and a unit, e.g. 90d, 12h, 30m")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]


def iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class KeyCache:
    """Presented key -> its record (or None), asked of the store at most once per `ttl` per key.

    Unknown keys are cached too (as None), so a client hammering with a wrong key costs one lookup per TTL.
    The cache is bounded: past `max_entries`, the oldest half is dropped.
    """

    def __init__(self, store: Store, ttl: float = DEFAULT_CACHE_TTL, max_entries: int = 100_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, TeamKey | None]] = {}

    def cached(self, key: str, now: float) -> tuple[bool, TeamKey | None]:
        """(fresh, record) from memory only: the hot path, no store call."""
        found = self._entries.get(hash_key(key))
        if found is None or now - found[0] >= self.ttl:
            return False, None
        return True, found[1]

    def fetch(self, key: str, now: float) -> TeamKey | None:
        """Ask the store (blocking: run it off the event loop) and remember the answer."""
        digest = hash_key(key)
        value = self.store.get(RECORD + digest)
        record = None if value is None else TeamKey.from_json(value)
        if len(self._entries) >= self.max_entries:
            for old in sorted(self._entries, key=lambda k: self._entries[k][0])[: self.max_entries // 2]:
                del self._entries[old]
        self._entries[digest] = (now, record)
        return record
