"""What the prediction spool costs and what it saves: a real `prepiq serve`, with the
spool off and on, in the same run. Prints JSON (and saves it to
`benchmarks/results/durability.json` unless `--no-save`).

- latency: a closed loop of `--clients` clients on the focus-area route (one student,
  so the model answer is cheap and the log's share of it shows), against two servers up
  side by side (spool off, on) in `--rounds` alternating phases: each round's
  requests/s and p50/p99 per mode, and the spool's paired cost per round (median, range);
- loss: the same load for `--seconds`, then `kill -9` of the whole process group (the
  server and its worker) mid-load, a restart on the same port, and a count of the answered
  predictions (200s) found in `model_predictions` (the writer is set to insert only at
  shutdown, so only the spool can save them), with the spool off and on.

Setup as benchmarks/serving.py (a seeded source and a small training run in a throw-away
PREPIQ_HOME, or `--home DIR` to reuse one).

Usage: python -m benchmarks.durability [--seconds 10] [--rounds 5] [--clients 16] [--home DIR] [--no-save]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from sqlalchemy import select

from benchmarks.serving import (
    API_KEY,
    ROOT,
    Server,
    bin_path,
    configure,
    load_inputs,
    machine,
    prepare,
    server_env,
    start,
    summary,
)
from core.net import free_port

RESULTS = ROOT / "benchmarks" / "results" / "durability.json"
ROUTE = "/api/v1/ml/predict/focus-areas"
REPLAY_WAIT_S = 120.0
MEASURES = ("requests_per_second", "p50_ms", "p95_ms", "p99_ms")


def serve(port: int, spool: bool, spool_dir: Path, home: Path) -> Server:
    env = server_env(
        PREPIQ_SERVING_API_KEYS=API_KEY,
        PREPIQ_SERVING_RATE_LIMIT="100000000/minute",
        PREPIQ_LOG_LEVEL="WARNING",
        PREPIQ_SERVING_SPOOL="true" if spool else "false",
        PREPIQ_SERVING_SPOOL_DIR=str(spool_dir),
        # Only a shutdown would insert: what survives a kill -9 is what the spool kept.
        PREPIQ_SERVING_LOG_BATCH_SIZE="1000000",
        PREPIQ_SERVING_LOG_FLUSH_SECONDS="3600",
    )
    command = [bin_path("prepiq"), "serve", "--port", str(port)]
    return start("prepiq", command, env, "/readyz", home)


async def load(
    url: str, student: str, clients: int, seconds: float, kill: Server | None = None
) -> tuple[list[str], list[float]]:
    """A closed loop for `seconds` (then `kill -9` of `kill`'s group, if given); returns
    the answered request ids and their latencies (s)."""
    answered: list[str] = []
    latencies: list[float] = []
    headers = {"X-API-Key": API_KEY}
    timeout = aiohttp.ClientTimeout(total=30.0)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        url, headers=headers, timeout=timeout, connector=connector
    ) as s:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds

        async def client() -> None:
            while loop.time() < stop_at or kill is not None:
                request_id = f"dur-{uuid.uuid4().hex[:16]}"
                began = time.perf_counter()
                try:
                    async with s.post(
                        ROUTE, json={"user_id": student}, headers={"X-Request-ID": request_id}
                    ) as answer:
                        await answer.read()
                        ok = answer.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    return  # the server is gone
                if ok:
                    answered.append(request_id)
                    latencies.append(time.perf_counter() - began)

        async def killer() -> None:
            if kill is not None:
                await asyncio.sleep(seconds)
                os.killpg(kill.process.pid, signal.SIGKILL)

        await asyncio.gather(killer(), *(client() for _ in range(clients)))
    return answered, latencies


def stored(request_ids: list[str]) -> dict[str, int]:
    from core.database import get_engine
    from features.schema import ModelPrediction

    table = ModelPrediction.__table__
    found: dict[str, int] = {}
    with get_engine().connect() as conn:
        for start_at in range(0, len(request_ids), 1000):
            chunk = request_ids[start_at : start_at + 1000]
            for (rid,) in conn.execute(
                select(table.c.request_id).where(table.c.request_id.in_(chunk))
            ):
                found[rid] = found.get(rid, 0) + 1
    return found


def kill_and_count(
    args: argparse.Namespace, student: str, spool: bool, home: Path
) -> dict[str, Any]:
    port = free_port()
    spool_dir = home / f"spool-{'on' if spool else 'off'}"
    server = serve(port, spool, spool_dir, home)
    try:
        answered, _ = asyncio.run(
            load(server.url, student, args.clients, args.seconds, kill=server)
        )
        server.process.wait(30)
    finally:
        server.stop()  # killed by then; stops it too when the load failed
    restarted_at = time.perf_counter()
    server = serve(port, spool, spool_dir, home)  # the same port, at once
    try:
        restart_seconds = round(time.perf_counter() - restarted_at, 2)
        deadline = time.monotonic() + REPLAY_WAIT_S
        found = stored(answered)
        while spool and len(found) < len(answered) and time.monotonic() < deadline:
            time.sleep(0.5)
            found = stored(answered)
    finally:
        server.stop()
    return {
        "spool": spool,
        "answered": len(answered),
        "stored": len(found),
        "lost": len(answered) - len(found),
        "lost_percent": round(100 * (len(answered) - len(found)) / max(1, len(answered)), 2),
        "stored_twice": sum(1 for n in found.values() if n > 1),
        "restart_same_port_to_ready_seconds": restart_seconds,
    }


def latency(args: argparse.Namespace, student: str, home: Path) -> dict[str, Any]:
    """Both servers up at once (spool off, on) and `--rounds` load phases alternating
    between them, so drift and the machine's noise fall on both alike; per mode every
    round's figures, and per round the paired cost of the spool."""
    servers = {}
    try:
        for spool in (False, True):
            servers[spool] = serve(free_port(), spool, home / f"spool-lat-{spool}", home)
        for server in servers.values():
            asyncio.run(load(server.url, student, args.clients, args.warmup))
        rounds: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for number in range(args.rounds):
            # Alternate which goes first, so neither always follows the other's load.
            for spool in (False, True) if number % 2 == 0 else (True, False):
                url = servers[spool].url
                _, latencies = asyncio.run(load(url, student, args.clients, args.seconds))
                rounds[spool].append(summary(latencies, {}, args.seconds))
    finally:
        for server in servers.values():
            server.stop()
    pairs = list(zip(rounds[False], rounds[True], strict=True))
    cost = {
        "throughput_percent": [
            round(100 * (1 - on["requests_per_second"] / off["requests_per_second"]), 1)
            for off, on in pairs
        ],
        **{
            key: [round(on[key] - off[key], 2) for off, on in pairs] for key in ("p50_ms", "p99_ms")
        },
    }
    return {
        "rounds": {"spool_off": rounds[False], "spool_on": rounds[True]},
        "median": {
            mode: {k: float(np.median([r[k] for r in rounds[spool]])) for k in MEASURES}
            for mode, spool in (("spool_off", False), ("spool_on", True))
        },
        "spool_cost_per_round": cost,
        "spool_cost_median": {k: float(np.median(v)) for k, v in cost.items()},
        "spool_cost_range": {k: [min(v), max(v)] for k, v in cost.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=400, help="seeded students")
    parser.add_argument("--seconds", type=float, default=10.0, help="load seconds per phase")
    parser.add_argument("--rounds", type=int, default=5, help="latency phases per mode")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--home", type=Path, default=None, help="keep and reuse this PREPIQ_HOME")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "durability",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load": {
            "route": ROUTE,
            "clients": args.clients,
            "seconds": args.seconds,
            "rounds": args.rounds,
        },
    }
    with contextlib.ExitStack() as stack:
        if args.home is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "home"
        else:
            home = args.home.resolve()
        report["setup"] = prepare(home, args.students, 1)
        configure(home)
        student = load_inputs(1)["users"][0]
        report["latency"] = latency(args, student, home)
        report["kill_9"] = [kill_and_count(args, student, spool, home) for spool in (False, True)]
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
