"""What Modal runs for the fleet, as fleet records it: app tags (read and written here) and the deploy lock.

State lives in Modal, not in a local file, so two people on two laptops see the same plan. Each app fleet
deployed carries tags that say what it runs:

    fleet-managed        "true": an app of fleet's (any other app is never planned or stopped)
    fleet-catalog-file   the model's catalog file name
    fleet-model          the model's name, and fleet-prefix the fleet's prefix: what `fleet cost` groups
    fleet-prefix         Modal's billing report by (the app name alone fails once a model is renamed)
    fleet-spec-hash      hash of the rendered app with the live-changeable scaling values masked out, or
                         "pending" while a deploy is in flight (written BEFORE publishing, replaced after)
    fleet-scaling        "<min>.<max>.<scaledown>": the autoscaler values the app runs with, or "pending"
    fleet-weights        "ok" | "pending" (prefetch not done or failed: the next plan retries it) | "skipped"
    fleet-k-<key>        the deployed value of each deploy-relevant catalog key, so a plan can say old -> new

Modal's client (1.6.4, `modal/_utils/name_utils.py: check_tag_dict`) accepts tag keys and values of 1-63
characters from [A-Za-z0-9._-]; it documents no limit on the count. Values are written through a reversible
escape (`_xx` per other byte) and, when still too long, as a digest (`_h` + 12 hex), so every value fits.
Tags are few (at most 24 per app) and never carry a secret: environment values are recorded as a digest only.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

TAG_MANAGED = "fleet-managed"
TAG_CATALOG_FILE = "fleet-catalog-file"
TAG_SPEC_HASH = "fleet-spec-hash"
TAG_MODEL = "fleet-model"
TAG_PREFIX = "fleet-prefix"
TAG_SCALING = "fleet-scaling"
TAG_WEIGHTS = "fleet-weights"
TAG_KEY_PREFIX = "fleet-k-"
PENDING = "pending"
MAX_TAG_LENGTH = 63
MAX_TAGS = 24  # our own bound: Modal documents none, and billing reports list every tag
_TAG_CHARS = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
_UNSAFE_BYTE = re.compile(rb"[^A-Za-z0-9.-]")


class Weights:
    """Values of the fleet-weights tag."""

    OK = "ok"
    PENDING = PENDING
    SKIPPED = "skipped"


@dataclass(frozen=True, order=True)
class ScalingValues:
    """The autoscaler values Modal can change on a running app without a redeploy."""

    min_containers: int
    max_containers: int
    scaledown_window: int

    def tag(self) -> str:
        return f"{self.min_containers}.{self.max_containers}.{self.scaledown_window}"

    @classmethod
    def from_tag(cls, value: str | None) -> ScalingValues | None:
        parts = (value or "").split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))

    def as_dict(self) -> dict[str, int]:
        return {
            "min_containers": self.min_containers,
            "max_containers": self.max_containers,
            "scaledown_window": self.scaledown_window,
        }


@dataclass(frozen=True)
class DeployedApp:
    """What Modal knows about one deployed app of the fleet."""

    name: str
    app_id: str
    tags: dict[str, str]
    deployed_at: datetime | None

    @property
    def recorded(self) -> RecordedState:
        return RecordedState.from_tags(self.tags)


@dataclass(frozen=True)
class RecordedState:
    """The tags of a deployed app, read back into what they mean."""

    spec_hash: str | None  # None: never recorded (or written by an older fleet)
    pending: bool  # a deploy started and did not record its end: what runs is unknown
    scaling: ScalingValues | None  # None: unknown (pending or never recorded)
    weights: str | None
    keys: dict[str, str] = field(default_factory=dict)  # key -> encoded deployed value

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RecordedState:
        spec_hash = tags.get(TAG_SPEC_HASH) or None
        keys = {k[len(TAG_KEY_PREFIX):]: v for k, v in tags.items() if k.startswith(TAG_KEY_PREFIX)}
        return cls(
            spec_hash=None if spec_hash == PENDING else spec_hash,
            pending=spec_hash == PENDING,
            scaling=ScalingValues.from_tag(tags.get(TAG_SCALING)),
            weights=tags.get(TAG_WEIGHTS),
            keys=keys,
        )


def app_tags(
    *,
    catalog_file: str,
    model: str | None = None,
    prefix: str | None = None,
    spec_hash: str | None = None,
    scaling: ScalingValues | None = None,
    keys: dict[str, str] | None = None,
    weights: str | None = None,
    pending: bool = False,
    scaling_pending: bool = False,
    secret_keys: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The full tag set of an app (Modal's set_tags replaces all of them). With `pending`, the hash and the
    scaling say "pending": written before a deploy, so a deploy that ends half-way never looks finished."""
    tags = {TAG_MANAGED: "true", TAG_CATALOG_FILE: encode_tag_value(catalog_file)}
    if model is not None and prefix is not None:
        tags.update({TAG_MODEL: encode_tag_value(model), TAG_PREFIX: encode_tag_value(prefix)})
    if spec_hash is not None:
        tags[TAG_SPEC_HASH] = PENDING if pending else spec_hash
    if scaling is not None:
        tags[TAG_SCALING] = PENDING if pending or scaling_pending else scaling.tag()
    if weights is not None:
        tags[TAG_WEIGHTS] = weights
    for key, value in (keys or {}).items():
        tags[TAG_KEY_PREFIX + key] = digest_value(value) if key in secret_keys else encode_tag_value(value)
    assert len(tags) <= MAX_TAGS and all(_TAG_CHARS.match(k) and _TAG_CHARS.match(v) for k, v in tags.items()), tags
    return tags


def tags_for(app: Any, *, weights: str | None, pending: bool = False, scaling_pending: bool = False) -> dict[str, str]:
    """The full record of a planned app (fleet.plan.PlannedApp) as deployed from the catalog now."""
    prefix = app.app_name[: -len(app.name) - 1] if app.app_name.endswith(f"-{app.name}") else None
    return app_tags(
        catalog_file=app.catalog_file,
        model=app.name,
        prefix=prefix,
        spec_hash=app.spec_hash,
        scaling=app.scaling,
        keys=app.deploy_keys,
        weights=weights if app.has_weights else None,
        pending=pending,
        scaling_pending=scaling_pending,
        secret_keys=getattr(app, "secret_keys", frozenset()),
    )


def encode_tag_value(value: str) -> str:
    """A value Modal accepts as a tag, decodable back: '_' escapes every byte outside [A-Za-z0-9.-]."""
    encoded = _UNSAFE_BYTE.sub(lambda m: b"_%02x" % m.group()[0], value.encode("utf-8")).decode("ascii")
    if not encoded:
        return "_e"
    return encoded if len(encoded) <= MAX_TAG_LENGTH else digest_value(value)


def digest_value(value: str) -> str:
    return "_h" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


def decode_tag_value(encoded: str) -> str | None:
    """The recorded value, or None when only its digest was recorded (too long, or kept private)."""
    if encoded.startswith("_h"):
        return None
    if encoded == "_e":
        return ""
    out = bytearray()
    i = 0
    try:
        while i < len(encoded):
            if encoded[i] == "_":
                out.append(int(encoded[i + 1 : i + 3], 16))
                i += 3
            else:
                out.append(ord(encoded[i]))
                i += 1
    except ValueError:  # not written by fleet (edited by hand, or another tool): unknown, never a crash
        return None
    return out.decode("utf-8", errors="replace")


# --- the deploy lock: one `fleet deploy` per fleet at a time -------------------------------------------

LOCK_DICT = "fleet-deploy-locks"  # one Modal Dict per environment; one entry per fleet prefix
LOCK_STALE_AFTER_S = 3600  # a lock older than this may be broken with --break-lock


@dataclass(frozen=True)
class LockHolder:
    """Who holds a fleet's deploy lock: enough to find them and ask."""

    user: str
    host: str
    pid: int
    since: float  # epoch seconds
    token: str  # tells our own entry from another's, so we only ever release ours

    @classmethod
    def me(cls) -> LockHolder:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in a bare container is no reason to fail
            user = "unknown"
        return cls(user, socket.gethostname(), os.getpid(), time.time(), os.urandom(8).hex())

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "host": self.host, "pid": self.pid, "since": self.since, "token": self.token}

    @classmethod
    def from_dict(cls, data: Any) -> LockHolder:
        """Whatever the Dict holds (another tool may have written it): unknown fields become '?' or 0, so a
        lock of unknown age counts as stale (breakable with --break-lock), never as a crash."""
        data = data if isinstance(data, dict) else {}

        def number(key: str) -> float:
            try:
                return float(data.get(key) or 0)
            except (TypeError, ValueError):
                return 0.0

        return cls(
            str(data.get("user", "?"))[:64],
            str(data.get("host", "?"))[:128],
            int(number("pid")),
            number("since"),
            str(data.get("token", "")),
        )

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.since

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.since, tz=timezone.utc).isoformat(timespec="seconds")
        return f"{self.user}@{self.host} (pid {self.pid}) since {started} ({self.age_s() / 60:.0f} min ago)"
