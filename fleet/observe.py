"""Operate the deployed fleet: live status, logs, cost, rollback. Stage functions with typed results.

Everything Modal knows comes through `fleet.modal_api.ModalClient` (stats, logs, history, billing); what is
here is pure where it can be, so the tests run it on plain values:

    redact(line)                      keys out of a log line, by pattern (fleet cannot know the key values)
    lifecycle(line)                   boot / ready / warm-up / sleep / snapshot / restore / wake / crash / None
    cold_starts(lines)                one ColdStart per container seen starting: restored, booted, crashed
    snapshot_verdict(spec, starts)    none yet / in use / failing / not restoring (alpha not enabled?)
    live_status(client, specs)        the live columns of `fleet status`, looked up in parallel
    model_costs(rows, prefix)         the billing report's rows as dollars per model, GPU vs the rest
    split_by_team(costs, usage)       each model's daily cost shared by each team's tokens that day
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from .errors import FleetError
from .modal_api import BillingRow, LogLine
from .prices import GPU_USD_PER_HOUR, price_note
from .probe import SNAPSHOT_ALPHA_HINT as ASK_MODAL
from .spec import ModelSpec

# --- redaction ----------------------------------------------------------------------------------------------

REDACTED = "[REDACTED]"  # the runtime's own marker (fleet/runtime.py), so both read the same
# Patterns, not values: the keys live in a Modal secret that fleet never reads. Each keeps its prefix (so the
# line still says what was there) and replaces what follows. Where a key may be followed by more keys
# (`--api-key k1 k2`, a header), everything to the end of the line goes.
_TO_END_OF_LINE = [
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?\s*bearer\s).*"),
    re.compile(r"(?i)(api[-_ ]?key[\"']?\s*[:=]?\s*).*"),
    re.compile(r"(?i)(x-modal-token-secret[\"']?\s*[:=]\s*).*"),
]
_ONE_VALUE = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\b((?:[A-Z0-9]+_)*(?:TOKEN|SECRET|PASSWORD|API_KEY)\s*[=:]\s*[\"']?)[^\s\"',]+"),
    re.compile(r"(?i)((?:token|secret|password)[\"']?\s*[=:]\s*[\"']?)[^\s\"',}]+"),
]
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{8,}")
_MODAL_SECRET = re.compile(r"\b(?:as|ak|wk)-[A-Za-z0-9]{16,}")


def redact(line: str) -> str:
    """The line with anything that looks like a key replaced by [REDACTED]; never raises."""
    for pattern in _TO_END_OF_LINE:
        line = pattern.sub(lambda m: m.group(1) + REDACTED if not m.group(0).endswith(REDACTED) else m.group(0), line)
    for pattern in _ONE_VALUE:
        line = pattern.sub(lambda m: m.group(1) + REDACTED if not m.group(0).endswith(REDACTED) else m.group(0), line)
    line = _HF_TOKEN.sub(REDACTED, line)
    return _MODAL_SECRET.sub(REDACTED, line)


# --- lifecycle lines ----------------------------------------------------------------------------------------

# What a container prints as it goes through its life: Modal's own lines (as reported in public issues,
# modal-client #4132) and the runtime's `[fleet] ...` lines (fleet/runtime.py). Checked in order.
_LIFECYCLE: list[tuple[str, re.Pattern[str]]] = [
    ("snapshot", re.compile(r"Creating (?:GPU )?memory snapshot|Snapshot created")),
    ("restore", re.compile(r"Restoring Function from memory snapshot")),
    ("crash", re.compile(r"(?i)segmentation fault|SIGSEGV|exit(?:ed)?(?: with)? (?:code|status)\s*:?\s*[1-9]\d*")),
    ("boot", re.compile(r"\[fleet\] starting vLLM")),
    ("ready", re.compile(r"\[fleet\] vLLM ready")),
    ("warm-up", re.compile(r"\[fleet\] warm-up done")),
    ("sleep", re.compile(r"\[fleet\] vLLM asleep")),
    ("wake", re.compile(r"\[fleet\] vLLM awake")),
    ("stop", re.compile(r"\[fleet\] (?:stopping|engine stopped)|Stopping container|received SIGTERM")),
]
_EXIT_CODE = re.compile(r"exit(?:ed)?(?: with)? (?:code|status)\s*:?\s*(\d+)")


def lifecycle(text: str) -> str | None:
    """Which step of a container's life the line reports, if any."""
    for kind, pattern in _LIFECYCLE:
        if pattern.search(text):
            return kind
    return None


def exit_code(text: str) -> int | None:
    found = _EXIT_CODE.search(text)
    return int(found.group(1)) if found else None


# --- cold starts and the snapshot's state -------------------------------------------------------------------

RESTORED = "restored"  # the container came from the GPU snapshot
BOOTED = "booted"  # the container booted vLLM from scratch (no snapshot in use yet, or snapshots off)
SNAPSHOTTED = "booted, made snapshot"  # booted, then Modal took the snapshot: the next ones should restore
CRASHED = "restore crashed"  # the restore failed (Modal's known crash: exit code 139)


@dataclass(frozen=True)
class ColdStart:
    container: str
    at: datetime
    kind: str  # RESTORED | BOOTED | SNAPSHOTTED | CRASHED
    exit_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "at": self.at.isoformat(timespec="seconds"),
            "kind": self.kind,
            "exit_code": self.exit_code,
        }


def cold_starts(lines: Iterable[LogLine]) -> list[ColdStart]:
    """One ColdStart per container whose start is in `lines`, oldest first. Lines without a container id
    cannot be grouped and are ignored."""
    seen: dict[str, dict[str, Any]] = {}
    for line in sorted(lines, key=lambda ln: ln.at):
        if not line.container:
            continue
        kind = lifecycle(line.text)
        if kind is None:
            continue
        state = seen.setdefault(line.container, {"at": line.at, "kinds": set(), "exit": None})
        state["kinds"].add(kind)
        if kind == "crash":
            state["exit"] = exit_code(line.text)
    starts = []
    for container, state in seen.items():
        kinds = state["kinds"]
        if "restore" in kinds and "crash" in kinds and "snapshot" not in kinds:
            kind = CRASHED
        elif "snapshot" in kinds:
            kind = SNAPSHOTTED
        elif "restore" in kinds:
            kind = RESTORED
        elif "boot" in kinds:
            kind = BOOTED
        else:
            continue  # only later lines of a container that started before the window: not a cold start seen
        starts.append(ColdStart(container, state["at"], kind, state["exit"]))
    return sorted(starts, key=lambda s: s.at)


NONE_YET = "none yet"
IN_USE = "in use"
FAILING = "failing"
NOT_RESTORING = "not restoring"
OFF = "off"
NO_DATA = "no data"

# The first 3 to 5 cold starts after a deploy do not use the snapshot yet (facts.md): past this many with no
# restore at all, something is wrong.
COLD_STARTS_BEFORE_ALARM = 5
CRASHES_IN_A_ROW = 2


@dataclass(frozen=True)
class SnapshotVerdict:
    state: str  # NONE_YET | IN_USE | FAILING | NOT_RESTORING | OFF
    note: str = ""  # what to do, when there is something to do


def snapshot_verdict(spec: ModelSpec, starts: list[ColdStart]) -> SnapshotVerdict:
    """What the cold starts in the logs say about the model's GPU snapshot."""
    if not spec.snapshot:
        return SnapshotVerdict(OFF)
    if not starts:
        return SnapshotVerdict(NONE_YET, "no cold start in the logs yet")
    recent = starts[-CRASHES_IN_A_ROW:]
    if len(recent) == CRASHES_IN_A_ROW and all(s.kind == CRASHED for s in recent):
        code = recent[-1].exit_code
        return SnapshotVerdict(
            FAILING,
            f"the last {CRASHES_IN_A_ROW} restores crashed"
            + (f" (exit code {code})" if code is not None else "")
            + ": Modal's known restore crash (modal-client #4132). `fleet deploy --force` makes a new snapshot; "
            "`snapshot: false` avoids them; report the app id to Modal",
        )
    last = next((s for s in reversed(starts) if s.kind != CRASHED), None)
    if last is not None and last.kind == RESTORED:
        return SnapshotVerdict(IN_USE)
    if not any(s.kind in (RESTORED, CRASHED) for s in starts) and len(starts) >= COLD_STARTS_BEFORE_ALARM:
        return SnapshotVerdict(
            NOT_RESTORING, f"{len(starts)} cold starts in the logs and none restored from the snapshot. {ASK_MODAL}"
        )
    return SnapshotVerdict(NONE_YET, f"{len(starts)} cold start(s) so far; restores begin after 3 to 5")


# --- live status --------------------------------------------------------------------------------------------

STATS_WINDOW = timedelta(hours=1)
LOG_WINDOW = timedelta(days=7)  # how far back the cold starts are looked for
# The texts of the lines that tell a cold start (see _LIFECYCLE), searched for by Modal rather than read from
# every line: a busy model logs a line per request, and reading 1,000 lines costs ~80 ms of CPU per model.
COLD_START_SEARCHES = ("memory snapshot", "exit code", "[fleet] starting vLLM")
PARALLEL_LOOKUPS = 32


@dataclass(frozen=True)
class LiveStatus:
    """The live side of one deployed model. None means Modal had no data (or the lookup failed: `problems`),
    never zero."""

    containers: int | None = None
    requests: int | None = None  # in the last hour
    errors: int | None = None
    last_cold_start: ColdStart | None = None
    snapshot: SnapshotVerdict = SnapshotVerdict(NO_DATA)
    problems: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "containers": self.containers,
            "requests_last_hour": self.requests,
            "errors_last_hour": self.errors,
            "last_cold_start": self.last_cold_start.as_dict() if self.last_cold_start else None,
            "snapshot": self.snapshot.state,
            "snapshot_note": self.snapshot.note or None,
            "problems": list(self.problems),
        }


def status_with_live(client: Any, plan: Any) -> tuple[list[dict[str, object]], dict[str, LiveStatus]]:
    """`fleet status`: the plan's rows (fleet.deploy.status_rows) and, looked up meanwhile, the live columns
    of every deployed app of the plan."""
    from .deploy import status_rows

    specs = [item.app.spec for item in plan.items if item.deployed is not None and item.app is not None]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="live") as background:
        live = background.submit(live_status, client, specs)
        rows = status_rows(plan, client)
        return rows, live.result()


def live_status(client: Any, specs: list[ModelSpec], *, now: datetime | None = None) -> dict[str, LiveStatus]:
    """The live columns for each deployed model (by catalog name): one listing for the running containers,
    then per model its last hour's stats and its recent logs, all in parallel. A failed lookup leaves its
    columns empty and names itself in `problems`; it never fails the whole status."""
    until = now or datetime.now(timezone.utc)
    since = until - STATS_WINDOW
    logs_since = until - LOG_WINDOW

    def containers() -> dict[str, int] | str:
        try:
            return client.running_containers()
        except FleetError as exc:
            return str(exc)

    def counts(spec: ModelSpec) -> Any:
        try:
            return client.app_counts(spec.app_name, since, until)
        except FleetError as exc:
            return str(exc)

    def search(spec: ModelSpec, text: str) -> list[LogLine] | str:
        try:
            return client.search_logs(spec.app_name, logs_since, text)
        except FleetError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=PARALLEL_LOOKUPS, thread_name_prefix="live") as pool:
        running = pool.submit(containers)
        stats = {spec.name: pool.submit(counts, spec) for spec in specs}
        found = {(spec.name, t): pool.submit(search, spec, t) for spec in specs for t in COLD_START_SEARCHES}
        by_app = running.result()
        result = {}
        for spec in specs:
            parts = [found[(spec.name, t)].result() for t in COLD_START_SEARCHES]
            failed = next((p for p in parts if isinstance(p, str)), None)
            lines = failed if failed is not None else [ln for part in parts for ln in part if not isinstance(ln, str)]
            result[spec.name] = _live_one(spec, by_app, stats[spec.name].result(), lines)
    return result


def _live_one(spec: ModelSpec, by_app: dict[str, int] | str, counts: Any, lines: list[LogLine] | str) -> LiveStatus:
    problems = []
    running = None
    if isinstance(by_app, str):
        problems.append(by_app)
    else:
        running = by_app.get(spec.app_name, 0)  # listed apps only: a deployed app not listed runs nothing
    requests = errors = None
    if isinstance(counts, str):
        problems.append(counts)
    elif counts.has_data:
        requests, errors = counts.requests, counts.failed
    starts: list[ColdStart] = []
    if isinstance(lines, str):
        problems.append(lines)
        verdict = SnapshotVerdict(NO_DATA) if spec.snapshot else SnapshotVerdict(OFF)
    else:
        starts = cold_starts(lines)
        verdict = snapshot_verdict(spec, starts)
    return LiveStatus(running, requests, errors, starts[-1] if starts else None, verdict, tuple(problems))


def last_restore_seen(client: Any, spec: ModelSpec, after: datetime) -> bool | None:
    """For `fleet prime`: did the cold start that began after `after` restore from the snapshot? True or
    False from the logs; None when the logs do not show it (yet), so the caller falls back to timings."""
    try:
        lines = [ln for text in COLD_START_SEARCHES for ln in client.search_logs(spec.app_name, after, text)]
    except FleetError:
        return None
    starts = [s for s in cold_starts(lines) if s.at >= after]
    if not starts:
        return None
    return starts[-1].kind == RESTORED


# --- logs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownLine:
    """A log line ready to print: redacted, with its lifecycle step when it is one."""

    at: datetime
    container: str
    source: str
    text: str
    step: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(timespec="milliseconds"),
            "container": self.container,
            "source": self.source,
            "step": self.step,
            "text": self.text,
        }


def shown(line: LogLine) -> ShownLine:
    text = redact(line.text)
    return ShownLine(line.at, line.container, line.source, text, lifecycle(text))


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`30m`, `1h`, `2d` (ago) or an ISO date/time (UTC when it has no zone)."""
    now = now or datetime.now(timezone.utc)
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", value)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FleetError(f"--since {value!r}: give a duration (30m, 1h, 2d) or a date (2026-11-01)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# --- cost ---------------------------------------------------------------------------------------------------

PERIODS = ("today", "yesterday", "this week", "last week", "this month", "last month")


def period(for_: str | None, since: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) in UTC, whole days, the way Modal's billing report counts them (default: this month)."""
    now = now or datetime.now(timezone.utc)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if since is not None:
        start = parse_since(since, now)
        # Modal reports whole days only: end at tomorrow's midnight so that today so far is in.
        return start.replace(hour=0, minute=0, second=0, microsecond=0), today + timedelta(days=1)
    name = (for_ or "this month").strip().lower()
    monday = today - timedelta(days=today.weekday())
    first = today.replace(day=1)
    next_first = (first + timedelta(days=32)).replace(day=1)
    last_first = (first - timedelta(days=1)).replace(day=1)
    ranges = {
        "today": (today, today + timedelta(days=1)),
        "yesterday": (today - timedelta(days=1), today),
        "this week": (monday, monday + timedelta(weeks=1)),
        "last week": (monday - timedelta(weeks=1), monday),
        "this month": (first, next_first),
        "last month": (last_first, first),
    }
    if name not in ranges:
        raise FleetError(f"--for {for_!r}: one of {', '.join(repr(p) for p in PERIODS)}")
    return ranges[name]


def is_gpu_resource(resource: str) -> bool:
    """Whether a billing report's resource name is GPU time (Modal's names are not documented: "GPU" or a
    GPU type name in it)."""
    flat = re.sub(r"[^a-z0-9]", "", resource.lower())
    return "gpu" in flat or any(re.sub(r"[^a-z0-9]", "", g.lower()) in flat for g in GPU_USD_PER_HOUR)


@dataclass(frozen=True)
class ModelCost:
    name: str
    app_name: str
    gpu_usd: Decimal
    other_usd: Decimal
    in_catalog: bool
    by_day: tuple[tuple[date, Decimal], ...] = ()

    @property
    def total_usd(self) -> Decimal:
        return self.gpu_usd + self.other_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "app": self.app_name,
            "gpu_usd": _money(self.gpu_usd),
            "other_usd": _money(self.other_usd),
            "total_usd": _money(self.total_usd),
            "in_catalog": self.in_catalog,
        }


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def model_costs(rows: Iterable[BillingRow], prefix: str, catalog_names: Iterable[str]) -> list[ModelCost]:
    """Dollars per model of this fleet (`prefix`), most expensive first. A row is the fleet's when its tags
    say so (`fleet-prefix`, `fleet-model`), or, for apps deployed before those tags, when its app name is
    `<prefix>-<name>`. Other apps of the workspace are left out."""
    from .render import TAG_MODEL, TAG_PREFIX

    names = set(catalog_names)
    gpu: dict[str, Decimal] = defaultdict(Decimal)
    other: dict[str, Decimal] = defaultdict(Decimal)
    daily: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    apps: dict[str, str] = {}
    for row in rows:
        name = _model_of(row, prefix, TAG_MODEL, TAG_PREFIX)
        if name is None:
            continue
        apps.setdefault(name, row.app_name)
        resources = row.by_resource or {"unspecified": row.cost}
        for resource, usd in resources.items():
            (gpu if is_gpu_resource(resource) else other)[name] += usd
        daily[name][row.interval_start.date()] += row.cost
    result = [
        ModelCost(n, apps[n], gpu[n], other[n], n in names, tuple(sorted(daily[n].items()))) for n in apps
    ]
    return sorted(result, key=lambda c: (-c.total_usd, c.name))


def _model_of(row: BillingRow, prefix: str, tag_model: str, tag_prefix: str) -> str | None:
    if row.tags.get(tag_model) and row.tags.get(tag_prefix, prefix) == prefix:
        return row.tags[tag_model]
    if row.app_name.startswith(f"{prefix}-") and tag_prefix not in row.tags:
        return row.app_name[len(prefix) + 1 :]
    return None


@dataclass(frozen=True)
class Rate:
    """What one container of a model costs per hour in GPUs, and where the figure comes from."""

    name: str
    gpu: str
    usd_per_hour: Decimal
    source: str  # "Modal billing rates" | the price table's date note


def model_rates(specs: list[ModelSpec], modal_rates: dict[str, Decimal] | None) -> list[Rate]:
    """Per model, the hourly price of its GPUs: Modal's own rate for the GPU type when Modal gave one (per
    second, as Modal bills), else the dated table in fleet/prices.py."""
    by_type = {_flat(k): v for k, v in (modal_rates or {}).items()}
    rates = []
    for spec in specs:
        per_second = by_type.get(_flat(spec.gpu_type))
        if per_second is not None:
            hourly = per_second * 3600 * spec.gpu_count
            rates.append(Rate(spec.name, spec.gpu, hourly.quantize(Decimal("0.01")), "Modal billing rates"))
        else:
            hourly = Decimal(str(GPU_USD_PER_HOUR[spec.gpu_type])) * spec.gpu_count
            rates.append(Rate(spec.name, spec.gpu, hourly.quantize(Decimal("0.01")), price_note()))
    return rates


def _flat(name: str) -> str:
    return re.sub(r"[^a-z0-9!+]", "", name.lower())


# --- per team: each model's cost shared by the teams' tokens --------------------------------------------------

NO_USAGE = "(no usage recorded)"


@dataclass(frozen=True)
class UsageRow:
    """One team's tokens on one model on one day (the gateway's usage store)."""

    team: str
    model: str
    day: date
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TeamCost:
    team: str
    model: str
    tokens: int
    usd: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {"team": self.team, "model": self.model, "tokens": self.tokens, "usd": _money(self.usd)}


def split_by_team(costs: Iterable[ModelCost], usage: Iterable[UsageRow]) -> list[TeamCost]:
    """Each model's cost on each day, shared among the teams by their tokens (prompt + completion) on that
    model that day. A day with cost and no tokens (a container kept warm, a cold start nobody used) goes
    to NO_USAGE, so the shares always add up to the bill."""
    tokens: dict[tuple[str, date], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in usage:
        if row.tokens > 0:
            tokens[(row.model, row.day)][row.team] += row.tokens
    usd: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    used: dict[tuple[str, str], int] = defaultdict(int)
    for cost in costs:
        for day, amount in cost.by_day:
            teams = tokens.get((cost.name, day))
            if not teams:
                usd[(NO_USAGE, cost.name)] += amount
                continue
            total = sum(teams.values())
            for team, count in teams.items():
                usd[(team, cost.name)] += amount * count / total
                used[(team, cost.name)] += count
    rows = [TeamCost(team, model, used[(team, model)], amount) for (team, model), amount in usd.items()]
    return sorted(rows, key=lambda r: (r.team == NO_USAGE, r.team, -r.usd, r.model))


def usage_rows(catalog: Any, start: datetime, end: datetime) -> list[UsageRow]:
    """The gateway's usage (tokens per team x model x day, from the Modal Dict named in `_fleet.yaml`) for the
    days of [start, end). No gateway enabled: no usage, and `fleet cost` shows no per-team split."""
    if not catalog.settings.gateway.enabled:
        return []
    from .gateway.store import ModalDictStore
    from .gateway.usage import summarize

    store = ModalDictStore(catalog.settings.gateway.usage_dict, catalog.settings.environment)
    first, last = start.date().isoformat(), end.date().isoformat()
    return [
        UsageRow(row.team, row.model, date.fromisoformat(row.day), row.counters.prompt_tokens,
                 row.counters.completion_tokens)
        for row in summarize(store.items(), since_day=first)
        if row.day < last or (row.day == last and end.time() != datetime.min.time())
    ]


@dataclass(frozen=True)
class CostReport:
    start: datetime
    end: datetime
    models: list[ModelCost]
    rates: list[Rate]
    teams: list[TeamCost]
    billed: bool  # False: no credentials, no bill: only the rates are known

    def as_dict(self) -> dict[str, Any]:
        total = sum((m.total_usd for m in self.models), Decimal())
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "billed": self.billed,
            "total_usd": _money(total) if self.billed else None,
            "models": [m.as_dict() for m in self.models],
            "rates": [
                {"model": r.name, "gpu": r.gpu, "usd_per_hour": str(r.usd_per_hour), "source": r.source}
                for r in self.rates
            ],
            "teams": [t.as_dict() for t in self.teams],
        }


def cost_report(
    client: Any | None,
    catalog: Any,
    start: datetime,
    end: datetime,
    usage: Callable[[Any, datetime, datetime], list[UsageRow]] | None = None,
) -> CostReport:
    """`fleet cost`: Modal's bill for [start, end) per model, with the rates; without a client (no
    credentials) only the rates, from the dated price table."""
    from .render import TAG_MODEL, TAG_PREFIX

    specs = list(catalog.models)
    if client is None:
        return CostReport(start, end, [], model_rates(specs, None), [], billed=False)
    try:
        modal_rates = client.billing_rates()
    except FleetError:
        modal_rates = None  # the bill is what matters; the table stands in for the rates
    rows = client.billing_report(start, end, [TAG_MODEL, TAG_PREFIX])
    costs = model_costs(rows, catalog.settings.prefix, [s.name for s in specs])
    used = (usage or usage_rows)(catalog, start, end)
    teams = split_by_team(costs, used) if used else []  # no usage store: no split, rather than "nobody"
    return CostReport(start, end, costs, model_rates(specs, modal_rates), teams, billed=True)


# --- rollback -----------------------------------------------------------------------------------------------

ROLLED_BACK_HASH = "rolled-back-to-v{version}"


def rollback_target(history: list[Any], version: int | None) -> Any:
    """The deployment to go back to: `version`, else the one before the current one."""
    current = next((d for d in history if d.current), None)
    if version is None:
        older = [d for d in history if current is None or d.version < current.version]
        if not older:
            raise FleetError("nothing to roll back to: the app has a single deployment")
        return older[0]
    found = next((d for d in history if d.version == version), None)
    if found is None:
        versions = ", ".join(f"v{d.version}" for d in history)
        raise FleetError(f"no version v{version} in the app's history (it has {versions})")
    if found.current:
        raise FleetError(f"v{version} is the current deployment: nothing to roll back")
    return found


@dataclass(frozen=True)
class RollbackResult:
    app_name: str
    from_version: int | None
    to_version: int
    modal_said: str


def rollback(client: Any, spec: ModelSpec, target: Any, history: list[Any]) -> RollbackResult:
    """Modal's rollback to `target`, then the app's spec-hash tag set to say so: what runs is no longer what
    the catalog renders, and `fleet plan` must show it as changed rather than in sync."""
    from .render import TAG_SPEC_HASH

    current = next((d.version for d in history if d.current), None)
    said = client.rollback(spec.app_name, target.version)
    client.set_app_tag(spec.app_name, TAG_SPEC_HASH, ROLLED_BACK_HASH.format(version=target.version))
    return RollbackResult(spec.app_name, current, target.version, said)


def log_lines(client: Any, spec: ModelSpec, *, since: datetime | None, follow: bool) -> Iterable[ShownLine]:
    """`fleet logs`: the model's lines since `since`, or followed as they come; redacted, steps marked."""
    source = client.follow_logs(spec.app_name) if follow else client.logs_between(spec.app_name, since)
    return (shown(line) for line in source)


# --- the live columns of `fleet status` -----------------------------------------------------------------------

LIVE_HEADER = ["CONTAINERS", "REQ/1H", "ERR/1H", "LAST COLD START", "SNAPSHOT"]


def live_cells(status: LiveStatus | None) -> list[str]:
    """The live columns of one status row as text: "no data" where Modal had none, never a made-up zero."""
    if status is None:
        return ["", "", "", "", ""]

    def count(value: int | None) -> str:
        return NO_DATA if value is None else str(value)

    start = status.last_cold_start
    last = f"{start.at:%m-%d %H:%M} {start.kind}" if start else NO_DATA
    return [count(status.containers), count(status.requests), count(status.errors), last, status.snapshot.state]


def live_notes(live: dict[str, LiveStatus]) -> list[str]:
    """What needs saying under the table: snapshots failing or never restoring, lookups that failed."""
    notes = []
    for name, status in sorted(live.items()):
        if status.snapshot.state in (FAILING, NOT_RESTORING):
            notes.append(f"{name}: snapshot {status.snapshot.state}: {status.snapshot.note}")
        notes += [f"{name}: {problem}" for problem in status.problems]
    return notes
