"""Usage: per team x model x day counters. Numbers only: never a prompt, an answer, or a key.

Each gateway process keeps its own running totals and writes them under its own instance id
(`<day>|<team>|<model>|<instance>`): a flush is a plain overwrite of this process's totals, so several gateway
containers never race on a shared counter (a modal.Dict has no atomic increment), and a flush that fails is
simply retried with the same totals next time. `fleet usage` sums the instances.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from .store import Store

COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "errors", "cold_waits")
FLUSH_INTERVAL = 60.0


@dataclass
class Counters:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    cold_waits: int = 0

    def add(self, other: Counters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class UsageRow:
    day: str
    team: str
    model: str
    counters: Counters

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day, "team": self.team, "model": self.model, **asdict(self.counters)}


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d")


class UsageMeter:
    """Counts in memory (a dict update under a lock: nanoseconds on the request path), flushes on demand."""

    def __init__(self, store: Store, instance: str | None = None) -> None:
        self.store = store
        self.instance = instance or secrets.token_hex(6)
        self._totals: dict[tuple[str, str, str], Counters] = {}
        self._dirty: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def record(
        self,
        team: str,
        model: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        error: bool = False,
        cold_wait: bool = False,
        now: float | None = None,
    ) -> None:
        slot = (day_of(time.time() if now is None else now), team, model)
        with self._lock:
            counters = self._totals.setdefault(slot, Counters())
            counters.add(Counters(1, prompt_tokens, completion_tokens, int(error), int(cold_wait)))
            self._dirty.add(slot)

    def flush(self) -> int:
        """Write the totals that changed since the last flush; how many were written. On failure they stay
        dirty for the next flush."""
        with self._lock:
            dirty = {slot: asdict(self._totals[slot]) for slot in self._dirty}
            self._dirty.clear()
        if not dirty:
            return 0
        try:
            self.store.put_many({"|".join((*slot, self.instance)): value for slot, value in dirty.items()})
        except BaseException:
            with self._lock:
                self._dirty.update(dirty)
            raise
        return len(dirty)

    def totals(self) -> dict[tuple[str, str, str], Counters]:
        with self._lock:
            return {slot: Counters(**asdict(c)) for slot, c in self._totals.items()}


def summarize(
    entries: list[tuple[str, Any]], *, since_day: str | None = None, team: str | None = None
) -> list[UsageRow]:
    """The store's per-instance entries summed per day x team x model, oldest day first."""
    summed: dict[tuple[str, str, str], Counters] = {}
    for stored_as, value in entries:
        parts = stored_as.split("|")
        if len(parts) != 4 or not isinstance(value, dict):
            continue  # not a usage entry
        day, owner, model, _instance = parts
        if (since_day is not None and day < since_day) or (team is not None and owner != team):
            continue
        counters = Counters(**{name: int(value.get(name, 0)) for name in COUNTERS})
        summed.setdefault((day, owner, model), Counters()).add(counters)
    return [UsageRow(day, owner, model, c) for (day, owner, model), c in sorted(summed.items())]
