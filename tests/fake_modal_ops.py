"""The operating side of the fake Modal control plane: app stats, app logs, deployment history, rollback, and
the workspace's billing report and rates. A mixin of `FakeModal` (tests/fake_modal.py).

The RPCs are the ones the real `modal` 1.6.4 client sends:

    App.stats()                      AppGetTimeRangeStats
    App.logs.fetch(since=...)        AppCountLogs (buckets), then AppFetchLogs per interval
    App.logs.tail(n)                 AppFetchLogs with `limit`, widening 1 h / 1 d / 7 d / 30 d until n lines
    App.logs.stream()                AppGetLogs (server stream, resumed from `last_entry_id`; ends at `app_done`)
    modal app history                AppDeploymentHistory
    modal app rollback [vN]          AppRollback (version -1: the previous one)
    Workspace.billing.report(...)    WorkspaceNameLookup (hydration), WorkspaceBillingReport (server stream)
    Workspace.billing.rates()        WorkspaceBillingRates

Test knobs: `set_app_stats`, `add_log`, `add_cold_start` (the lines Modal and fleet's runtime print for a boot,
a restore, a restore that crashes with exit code 139), `add_billing`, `billing_rates`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpclib import GRPCError, Status
from modal_proto import api_pb2

# The lines real containers print (Modal's own from public issue reports, modal-client #4132; the rest from
# fleet/runtime.py), so that the parser in fleet/observe.py is tested against what it will meet.
SNAPSHOT_CREATING = "Creating GPU memory snapshot for Function."
SNAPSHOT_CREATED = "Snapshot created. Restoring Function from memory snapshot."
RESTORING = "Restoring Function from memory snapshot."
SEGFAULT = "Runner segmentation fault (SIGSEGV), exit code: 139."
RUNTIME_BOOT = "[fleet] starting vLLM: python -m vllm.entrypoints.openai.api_server --model /models/m --port 8000"

_SOURCES = {
    "stdout": api_pb2.FILE_DESCRIPTOR_STDOUT,
    "stderr": api_pb2.FILE_DESCRIPTOR_STDERR,
    "system": api_pb2.FILE_DESCRIPTOR_INFO,
}

# What a default workspace's rates look like: per second, as decimal strings (the real keys are not
# documented; fleet/observe.py matches them by GPU type name).
DEFAULT_RATES = {
    "A100-80GB": "0.000694",
    "H100": "0.001097",
    "L4": "0.000222",
    "L40S": "0.000542",
    "CPU": "0.0000131",
    "Memory": "0.00000222",
}


@dataclass(frozen=True)
class FakeLogEntry:
    seq: int
    app_id: str
    timestamp: float
    data: str
    task_id: str
    source: int  # api_pb2.FILE_DESCRIPTOR_*


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.seconds = int(seconds)
    ts.nanos = int((seconds - int(seconds)) * 1e9)
    return ts


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


class FakeModalOps:
    """Mixin: the state lives on the FakeModal instance, created by `_reset_ops()` from `FakeModal.reset()`."""

    apps: dict[str, Any]

    def _reset_ops(self) -> None:
        self.app_stats: dict[str, api_pb2.AppGetTimeRangeStatsResponse] = {}  # app_id -> canned answer
        self.logs: dict[str, list[FakeLogEntry]] = {}  # app_id -> its lines, in the order they were added
        self._log_seq = 0
        self.histories: dict[str, list[api_pb2.AppDeploymentHistory]] = {}  # app_id -> versions, oldest first
        self.billing_items: list[api_pb2.WorkspaceBillingReportItem] = []
        self.billing_rates: dict[str, str] = dict(DEFAULT_RATES)
        self.stats_unavailable = False  # True: AppGetTimeRangeStats answers UNIMPLEMENTED (an older server)

    # ------------------------------------------------------------------ knobs

    def _ops_app(self, app_name: str) -> Any:
        app = self.app(app_name)  # type: ignore[attr-defined]
        assert app is not None, f"no app {app_name!r} in the fake"
        return app

    def set_app_stats(
        self,
        app_name: str,
        *,
        requests_ok: int = 0,
        requests_failed: int = 0,
        calls_ok: int = 0,
        calls_failed: int = 0,
        containers: int = 0,
        container_errors: int = 0,
    ) -> None:
        """What `app stats` answers for the app, for any window: web requests (servers), function calls (the
        class's service function, which is what a `@modal.web_server` on an `@app.cls` is), containers."""
        app = self._ops_app(app_name)
        resp = api_pb2.AppGetTimeRangeStatsResponse(deployment_count=max(app.version, 1))
        total = resp.servers.total
        total.requests.ok, total.requests.failed = requests_ok, requests_failed
        total.requests.total = requests_ok + requests_failed
        fn = resp.functions.total
        fn.calls.succeeded, fn.calls.failed = calls_ok, calls_failed
        fn.calls.total = calls_ok + calls_failed
        fn.containers.container_active_count = containers
        fn.containers.container_errors = container_errors
        self.app_stats[app.app_id] = resp

    def add_log(
        self, app_name: str, data: str, *, container: str = "ta-0", at: float | None = None, source: str = "stderr"
    ) -> None:
        app = self._ops_app(app_name)
        self._log_seq += 1
        line = data if data.endswith("\n") else data + "\n"
        stamp = time.time() if at is None else at
        entry = FakeLogEntry(self._log_seq, app.app_id, stamp, line, container, _SOURCES[source])
        self.logs.setdefault(app.app_id, []).append(entry)

    def add_cold_start(self, app_name: str, kind: str, *, container: str, at: float) -> None:
        """The lines of one cold start: `boot` (no snapshot in use), `snapshot` (a boot that creates the
        snapshot), `restore`, or `crash` (a restore that segfaults, exit code 139)."""
        lines: list[tuple[str, str]] = []
        if kind in ("boot", "snapshot"):
            lines.append(("stdout", RUNTIME_BOOT))
            lines.append(("stdout", "[fleet] vLLM ready in 212.4s"))
            lines.append(("stdout", "[fleet] warm-up done in 31.0s"))
            if kind == "snapshot":
                lines.append(("stdout", "[fleet] vLLM asleep (level 1)"))
                lines.insert(0, ("system", SNAPSHOT_CREATING))
                lines.append(("system", SNAPSHOT_CREATED))
                lines.append(("stdout", "[fleet] vLLM awake in 0.41s"))
        elif kind == "restore":
            lines = [("system", RESTORING), ("stdout", "[fleet] vLLM awake in 0.52s")]
        elif kind == "crash":
            lines = [("system", RESTORING), ("system", SEGFAULT)]
        else:
            raise ValueError(f"unknown cold start kind {kind!r}")
        for i, (source, text) in enumerate(lines):
            self.add_log(app_name, text, container=container, at=at + i * 0.5, source=source)

    def add_billing(
        self,
        app_name: str,
        day: datetime,
        cost_by_resource: dict[str, str],
        *,
        tags: dict[str, str] | None = None,
        environment: str = "main",
    ) -> None:
        """One row of the workspace's billing report: an app's cost on one day (UTC midnight), by resource.
        Tags default to the app's tags now (Modal reports the tags in use during the interval)."""
        app = self.app(app_name)  # type: ignore[attr-defined]
        item = api_pb2.WorkspaceBillingReportItem(
            object_id=app.app_id if app else "ap-gone000000000000000000",
            description=app_name,
            environment_name=environment,
            cost=str(sum((Decimal(v) for v in cost_by_resource.values()), Decimal())),
        )
        item.interval.FromDatetime(day.replace(tzinfo=None) if day.tzinfo else day)
        item.cost_by_resource.update(cost_by_resource)
        item.tags.update(tags if tags is not None else (dict(app.tags) if app else {}))
        self.billing_items.append(item)

    # ------------------------------------------------------------------ stats

    def _rpc_AppGetTimeRangeStats(self, req: api_pb2.AppGetTimeRangeStatsRequest):
        if self.stats_unavailable:
            raise GRPCError(Status.UNIMPLEMENTED, "AppGetTimeRangeStats is not available")
        app = self._app_by_id(req.app_id)  # type: ignore[attr-defined]
        resp = api_pb2.AppGetTimeRangeStatsResponse()
        if req.app_id in self.app_stats:
            resp.CopyFrom(self.app_stats[req.app_id])
        resp.since.CopyFrom(req.since)
        resp.until.CopyFrom(req.until)
        resp.lifecycle.CopyFrom(self._lifecycle(app))  # type: ignore[attr-defined]
        return resp

    # ------------------------------------------------------------------ logs

    def _matching_logs(self, app_id: str, req: Any, since: float | None, until: float | None) -> list[FakeLogEntry]:
        found = []
        for entry in self.logs.get(app_id, ()):
            if since is not None and entry.timestamp < since:
                continue
            if until is not None and entry.timestamp >= until:
                continue
            if getattr(req, "task_id", "") and entry.task_id != req.task_id:
                continue
            source = getattr(req, "source", 0) or getattr(req, "file_descriptor", 0)
            if source and entry.source != source:
                continue
            if getattr(req, "search_text", "") and req.search_text not in entry.data:
                continue
            found.append(entry)
        return sorted(found, key=lambda e: (e.timestamp, e.seq))

    @staticmethod
    def _batches(entries: list[FakeLogEntry]) -> list[api_pb2.TaskLogsBatch]:
        """Consecutive lines of one container in one batch, as the server sends them."""
        batches: list[api_pb2.TaskLogsBatch] = []
        for entry in entries:
            if not batches or batches[-1].task_id != entry.task_id:
                batches.append(api_pb2.TaskLogsBatch(task_id=entry.task_id, function_id=""))
            batch = batches[-1]
            batch.entry_id = f"{entry.seq}-0"
            batch.items.add(
                data=entry.data,
                timestamp=entry.timestamp,
                file_descriptor=entry.source,  # type: ignore[arg-type]
                container_id=entry.task_id,
            )
        return batches

    def _rpc_AppCountLogs(self, req: api_pb2.AppCountLogsRequest):
        self._app_by_id(req.app_id)  # type: ignore[attr-defined]
        since, until = _seconds(req.since), _seconds(req.until)
        size = req.bucket_secs or 60
        resp = api_pb2.AppCountLogsResponse(app_id=req.app_id)
        counts: dict[int, list[int]] = {}
        for entry in self._matching_logs(req.app_id, req, since, until):
            start = int(entry.timestamp // size * size)
            bucket = counts.setdefault(start, [0, 0, 0])
            bucket[{api_pb2.FILE_DESCRIPTOR_STDOUT: 0, api_pb2.FILE_DESCRIPTOR_STDERR: 1}.get(entry.source, 2)] += 1
        first = int(since // size * size)
        for start in range(first, int(until) + 1, size):
            out, err, system = counts.get(start, [0, 0, 0])
            resp.buckets.add(bucket_start_at=_ts(start), stdout_logs=out, stderr_logs=err, system_logs=system)
        return resp

    def _rpc_AppFetchLogs(self, req: api_pb2.AppFetchLogsRequest):
        self._app_by_id(req.app_id)  # type: ignore[attr-defined]
        entries = self._matching_logs(req.app_id, req, _seconds(req.since), _seconds(req.until))
        if req.limit and len(entries) > req.limit:
            entries = entries[-req.limit :]  # the most recent ones, still in order
        return api_pb2.AppFetchLogsResponse(batches=self._batches(entries))

    async def _rpc_AppGetLogs(self, req: api_pb2.AppGetLogsRequest):
        """One stream: every line after `last_entry_id`; ends with `app_done` once the app is stopped, else
        after a short wait (the client opens the next stream from the last entry id)."""
        app = self._app_by_id(req.app_id)  # type: ignore[attr-defined]
        after = int(req.last_entry_id.split("-")[0]) if req.last_entry_id else 0
        entries = [e for e in self._matching_logs(req.app_id, req, None, None) if e.seq > after]
        batches = self._batches(entries)
        if app.state == api_pb2.APP_STATE_STOPPED:
            batches.append(api_pb2.TaskLogsBatch(app_done=True, entry_id=batches[-1].entry_id if batches else ""))
        elif not batches:
            await asyncio.sleep(min(req.timeout or 0.2, 0.2))
        return batches

    # ------------------------------------------------------------------ history and rollback

    def _history(self, app: Any) -> list[api_pb2.AppDeploymentHistory]:
        """Versions recorded so far, caught up with the deploys the base fake has published since."""
        history = self.histories.setdefault(app.app_id, [])
        recorded = history[-1].version if history else 0
        for version in range(recorded + 1, app.version + 1):
            history.append(
                api_pb2.AppDeploymentHistory(
                    app_id=app.app_id,
                    version=version,
                    client_version="1.6.4",
                    deployed_at=app.deployed_at,
                    deployed_by="fleet-test",
                    deployment_type=api_pb2.DEPLOYMENT_TYPE_STANDARD,
                )
            )
        for entry in history:
            entry.rollback_allowed = entry.version != app.version
        return history

    def _rpc_AppDeploymentHistory(self, req: api_pb2.AppDeploymentHistoryRequest):
        app = self._app_by_id(req.app_id)  # type: ignore[attr-defined]
        newest_first = list(reversed(self._history(app)))
        return api_pb2.AppDeploymentHistoryResponse(
            app_deployment_histories=newest_first, production_app_version=app.version
        )

    def _rpc_AppRollback(self, req: api_pb2.AppRollbackRequest):
        app = self._app_by_id(req.app_id)  # type: ignore[attr-defined]
        if app.state != api_pb2.APP_STATE_DEPLOYED:
            raise GRPCError(Status.FAILED_PRECONDITION, f"App '{app.name}' is not deployed")
        history = self._history(app)
        target = app.version - 1 if req.version == -1 else req.version
        if target < 1 or target >= app.version or not any(h.version == target for h in history):
            raise GRPCError(Status.NOT_FOUND, f"No version v{target} to roll back to for App '{app.name}'")
        app.version += 1
        app.deployed_at = time.time()
        history.append(
            api_pb2.AppDeploymentHistory(
                app_id=app.app_id,
                version=app.version,
                client_version="1.6.4",
                deployed_at=app.deployed_at,
                deployed_by="fleet-test",
                rollback_version=target,
                deployment_type=api_pb2.DEPLOYMENT_TYPE_ROLLBACK,
            )
        )
        env = app.environment
        return api_pb2.AppRollbackResponse(
            url=f"https://modal.com/apps/{self.workspace}/{env}/deployed/{app.name}",  # type: ignore[attr-defined]
            deployed_at=app.deployed_at,
        )

    # ------------------------------------------------------------------ billing

    def _rpc_WorkspaceNameLookup(self, req: Any):
        return api_pb2.WorkspaceNameLookupResponse(workspace_name=self.workspace, username=self.workspace)  # type: ignore[attr-defined]

    def _rpc_WorkspaceBillingReport(self, req: api_pb2.WorkspaceBillingReportRequest):
        start = req.start_timestamp.ToDatetime(tzinfo=timezone.utc)
        end = req.end_timestamp.ToDatetime(tzinfo=timezone.utc)
        wanted = set(req.tag_names)
        rows = []
        for item in self.billing_items:
            at = item.interval.ToDatetime(tzinfo=timezone.utc)
            if not start.replace(hour=0, minute=0, second=0, microsecond=0) <= at < end:
                continue
            row = api_pb2.WorkspaceBillingReportItem()
            row.CopyFrom(item)
            row.ClearField("tags")
            if "*" in wanted:
                row.tags.update(item.tags)
            else:
                row.tags.update({k: v for k, v in item.tags.items() if k in wanted})
            rows.append(row)
        return rows

    def _rpc_WorkspaceBillingRates(self, req: api_pb2.WorkspaceBillingRatesRequest):
        formatted = "\n".join(f"{k}: ${v}/s" for k, v in sorted(self.billing_rates.items()))
        return api_pb2.WorkspaceBillingRatesResponse(rates=self.billing_rates, formatted=formatted)
