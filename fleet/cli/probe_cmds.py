"""`fleet smoke`, `fleet prime`, `fleet bench`: the commands that observe deployed endpoints (fleet/probe.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import FleetError
from .common import CATALOG_OPTION, ENV_OPTION, JSON_OPTION, _client, echo_table, finish, selection, with_names

# --- observing endpoints: smoke, prime, bench (fleet/probe.py) ---------------------------------------------

API_KEY_OPTION = click.option(
    "--api-key",
    envvar="FLEET_API_KEY",
    default=None,
    help="The endpoints' API key (env FLEET_API_KEY; the VLLM_API_KEY of the Modal secret). Never printed.",
)
TIMEOUT_OPTION = click.option(
    "--timeout",
    default=900.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds one request may take (a cold start included).",
)
URL_OPTION = click.option(
    "--url", default=None, help="Any OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1) instead of Modal's."
)
MODEL_OPTION = click.option("--model", default=None, help="Served model name at --url (default: the NAME given).")


def _progress(name: str) -> Callable[[str], None]:
    """Progress goes to stderr, so `--json` output on stdout stays clean."""
    return lambda message: click.echo(f"[{name}] {message}", err=True)


def _require_key(api_key: str | None) -> str:
    if not api_key:
        raise FleetError("no API key: pass --api-key or set FLEET_API_KEY (the VLLM_API_KEY in the Modal secret)")
    return api_key


def _url_endpoint(url: str, names: tuple[str, ...], model: str | None, api_key: str) -> Any:
    from ..probe import Endpoint

    if len(names) > 1:
        raise click.UsageError("--url probes one endpoint: give at most one NAME")
    served = model or (names[0] if names else None)
    if not served:
        raise click.UsageError("--url needs the served model name: --model NAME (or a NAME argument)")
    return Endpoint(names[0] if names else served, url, served, api_key)


def _modal_endpoints(
    specs: list[Any], client: Any, api_key: str, url: str | None = None
) -> tuple[list[tuple[Any, Any]], list[tuple[str, str]]]:
    """(spec, Endpoint) for each deployed model, and (name, reason) for those that cannot be probed."""
    from ..deploy import endpoint_urls
    from ..probe import Endpoint

    found, missing = [], []
    for spec, row in zip(specs, endpoint_urls(client, specs)):
        base_url = (url or row.base_url) if row.deployed else None  # --url stands in for Modal's endpoint
        if base_url is None:
            missing.append((spec.name, row.problem or "no endpoint"))
            continue
        found.append((spec, Endpoint(spec.name, base_url, spec.name, api_key)))
    return found, missing


def _run_parallel(function: Callable[[Any], Any], items: list[Any], parallel: int) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(function, items))


def _container_stopper(client: Any, app_name: str) -> Callable[[], int]:
    from ..probe import stop_all

    return lambda: stop_all(lambda: client.containers(app_name), client.stop_container)


def _restore_seen(client: Any, spec: Any) -> Callable[[float], bool | None]:
    """For `prime`: whether the cold start begun at an epoch time restored from the snapshot, from the logs."""
    from datetime import datetime, timezone

    from ..observe import last_restore_seen

    return lambda began: last_restore_seen(client, spec, datetime.fromtimestamp(began - 5, timezone.utc))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


@click.command()
@with_names
@URL_OPTION
@MODEL_OPTION
@API_KEY_OPTION
@TIMEOUT_OPTION
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 32), help="Endpoints at once.")
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def smoke(
    names: tuple[str, ...],
    all_models: bool,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout: float,
    parallel: int,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Check that each endpoint answers: /v1/models lists the model, a chat completion has content, a request
    without the key gets 401. Each check timed; exit 1 on any failure.

    \b
    Example:
      export FLEET_API_KEY=...
      fleet smoke --all
      fleet smoke qwen3-4b --json
      fleet smoke --url http://127.0.0.1:8000/v1 --model tiny
    """
    from ..probe import http_client
    from ..probe import smoke as run_smoke

    key = _require_key(api_key)
    missing: list[tuple[str, str]] = []
    if url:
        if all_models:
            raise click.UsageError("--url probes one endpoint: not with --all")
        endpoints = [_url_endpoint(url, names, model, key)]
    else:
        from ..catalog import load_catalog, select

        selection(names, all_models, required=True)
        catalog = load_catalog(catalog_dir)
        specs = select(catalog, names)
        found, missing = _modal_endpoints(specs, _client(catalog, environment), key)
        endpoints = [endpoint for _, endpoint in found]

    with http_client(timeout, connections=2 * parallel) as http:
        reports = _run_parallel(lambda e: run_smoke(e, http, _progress(e.name)), endpoints, parallel)

    failed = [r for r in reports if not r.ok]
    if as_json:
        rows = [r.as_dict() for r in reports]
        rows += [{"name": name, "ok": False, "error": reason} for name, reason in missing]
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [
            [r.endpoint.name, c.name, "ok" if c.ok else "FAILED", f"{c.seconds:.2f}s", c.detail]
            for r in reports
            for c in r.checks
        ]
        table += [[name, "-", "FAILED", "-", reason] for name, reason in missing]
        echo_table(["NAME", "CHECK", "RESULT", "TIME", "DETAIL"], table)
        total = len(reports) + len(missing)
        click.echo(f"\n{total - len(failed) - len(missing)} of {total} endpoint(s) passed")
    finish([(r.endpoint.name, f"smoke test failed ({r.endpoint.base_url})") for r in failed] + missing)


@click.command()
@with_names
@click.option(
    "--max-cold-starts", default=8, show_default=True, type=click.IntRange(1, 50), help="Give up after this many."
)
@click.option("--target", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds: a cold start this fast counts as a restore (for a snapshot already in use).")
@URL_OPTION
@API_KEY_OPTION
@TIMEOUT_OPTION
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 32), help="Models at once.")
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def prime(
    names: tuple[str, ...],
    all_models: bool,
    max_cold_starts: int,
    target: float | None,
    url: str | None,
    api_key: str | None,
    timeout: float,
    parallel: int,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Drive cold starts until Modal restores each model from its GPU snapshot.

    Each attempt stops every container of the model, sends one request and times its first token. Done when
    two cold starts in a row took at most half the slowest one (or --target); stops early, and says so, when
    cold starts keep failing (restores crashing). The first 3 to 5 cold starts after a deploy are slow.

    \b
    Example:
      export FLEET_API_KEY=...
      fleet prime --all
      fleet prime qwen3.6-27b --max-cold-starts 10
      fleet prime qwen3-4b --target 60     # already primed? accept 60 s cold starts
    """
    from ..catalog import load_catalog, select
    from ..probe import http_client
    from ..probe import prime as run_prime

    selection(names, all_models, required=True)
    if url and len(names) != 1:
        raise click.UsageError("--url sends the requests of one model elsewhere: give exactly one NAME")
    key = _require_key(api_key)
    catalog = load_catalog(catalog_dir)
    specs = select(catalog, names)
    skipped = [(s.name, "snapshot off in the catalog: nothing to prime") for s in specs if not s.snapshot]
    skipped += [
        (s.name, f"min_containers is {s.scaling.min_containers}: a container always runs, no cold start to time")
        for s in specs
        if s.snapshot and s.scaling.min_containers > 0
    ]
    wanted = [s for s in specs if s.snapshot and s.scaling.min_containers == 0]
    client = _client(catalog, environment)
    found, missing = _modal_endpoints(wanted, client, key, url) if wanted else ([], [])

    def run(pair: tuple[Any, Any]) -> Any:
        spec, endpoint = pair
        say = _progress(spec.name)
        say(f"priming {spec.app_name}: up to {max_cold_starts} cold start(s)")
        return run_prime(
            endpoint,
            http,
            _container_stopper(client, spec.app_name),
            max_attempts=max_cold_starts,
            target=target,
            progress=say,
            restored=_restore_seen(client, spec),
        )

    with http_client(timeout, connections=2 * parallel) as http:
        reports = _run_parallel(run, found, parallel)

    failed = [r for r in reports if not r.ok]
    if as_json:
        rows = [r.as_dict() for r in reports]
        rows += [{"name": n, "verdict": "skipped", "ok": True, "message": why} for n, why in skipped]
        rows += [{"name": n, "verdict": "missing", "ok": False, "message": why} for n, why in missing]
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [
            [
                r.endpoint.name,
                str(a.number),
                str(a.stopped),
                _seconds(a.timing.ttft if a.timing.ok else a.timing.total),
                ("fast" if a.fast else "slow") if a.timing.ok else f"FAILED: {a.timing.error}",
            ]
            for r in reports
            for a in r.attempts
        ]
        echo_table(["NAME", "COLD START", "STOPPED", "FIRST TOKEN", "RESULT"], table)
        click.echo()
        for report in reports:
            click.echo(f"{report.endpoint.name}: {report.verdict}: {report.message}")
        for name, why in skipped:
            click.echo(f"{name}: skipped: {why}")
    finish([(r.endpoint.name, r.verdict) for r in failed] + missing)


@click.command()
@click.argument("name")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256), help="Requests at once.")
@click.option("--requests", "requests_", default=32, show_default=True, type=click.IntRange(1, 10_000),
              help="Warm requests to send.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1, 8192), help="Tokens per answer.")
@click.option("--time-limit", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Seconds after which no new warm request starts.")
@click.option("--no-cold", is_flag=True, help="Do not stop the running containers first (no cold start).")
@URL_OPTION
@MODEL_OPTION
@API_KEY_OPTION
@TIMEOUT_OPTION
@ENV_OPTION
@CATALOG_OPTION
@JSON_OPTION
def bench(
    name: str,
    concurrency: int,
    requests_: int,
    max_tokens: int,
    time_limit: float,
    no_cold: bool,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout: float,
    environment: str | None,
    catalog_dir: Path,
    as_json: bool,
) -> None:
    """Measure one model: cold start time to first token, then warm latency (p50, p95) and tokens per second
    at a given concurrency. On Modal the running containers are stopped first, so the first request is a
    cold start (--no-cold to keep them); with --url nothing is stopped.

    \b
    Example:
      fleet bench qwen3-4b --concurrency 8 --requests 64
      fleet bench qwen3-4b --json >> bench-history.jsonl
      fleet bench tiny --url http://127.0.0.1:8000/v1 --requests 4
    """
    from ..probe import bench as run_bench
    from ..probe import http_client

    key = _require_key(api_key)
    make_cold = None
    if url:
        endpoint = _url_endpoint(url, (name,), model, key)
    else:
        from ..catalog import load_catalog, select

        catalog = load_catalog(catalog_dir)
        spec = select(catalog, (name,))[0]
        client = _client(catalog, environment)
        found, missing = _modal_endpoints([spec], client, key)
        if missing:
            raise FleetError(f"{name}: {missing[0][1]}")
        endpoint = found[0][1]
        if not no_cold:
            make_cold = _container_stopper(client, spec.app_name)

    with http_client(timeout, connections=concurrency + 1) as http:
        report = run_bench(
            endpoint, http, concurrency=concurrency, requests=requests_, max_tokens=max_tokens,
            time_limit=time_limit, make_cold=make_cold, progress=_progress(endpoint.name),
        )
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data))
    else:
        first, warm = data["first_request"], data["warm"]
        label = "cold start" if report.cold else "first request"
        click.echo(f"{endpoint.name} at {endpoint.base_url}")
        if report.first.ok:
            click.echo(
                f"{label}: first token in {_seconds(first['ttft_s'])}, "
                f"{first['tokens']} token(s) in {_seconds(first['total_s'])}"
            )
        else:
            click.echo(f"{label}: FAILED: {report.first.error}")
        if report.first.ok:
            click.echo(
                f"warm: {warm['completed']}/{warm['requested']} ok, {warm['failed']} failed, concurrency "
                f"{warm['concurrency']}, in {_seconds(warm['seconds'])}"
            )
            click.echo(
                f"latency p50 {_seconds(warm['latency_p50_s'])}, p95 {_seconds(warm['latency_p95_s'])}; "
                f"first token p50 {_seconds(warm['ttft_p50_s'])}, p95 {_seconds(warm['ttft_p95_s'])}"
            )
            rate = warm["tokens_per_second"]
            click.echo(f"throughput: {warm['tokens']} token(s), " + (f"{rate} tokens/s" if rate else "-"))
    if not report.ok:
        reasons = ([report.first.error] if not report.first.ok else []) + data["warm"]["errors"]
        if report.first.ok and len(report.warm) < report.requested:
            reasons.append(f"time limit reached after {len(report.warm)} of {report.requested} requests")
        click.echo(f"error: {endpoint.name}: bench failed: {'; '.join(r for r in reasons if r)}", err=True)
    sys.exit(0 if report.ok else 1)

COMMANDS = [smoke, prime, bench]
