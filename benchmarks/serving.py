"""Serving speed: a real `bentoml serve serving.service:PrepIQService` process under a
closed-loop load of concurrent clients, route by route, and the focus-area model served
by `mlflow models serve` side by side under the same load. Prints JSON (and saves it to
`benchmarks/results/serving.json` unless `--no-save`).

Setup, in a throw-away PREPIQ_HOME unless `--home` names one to keep and reuse: a
seeded source, a small training run (few trials, the small-data knobs of the tests),
and each model's new version imported into the BentoML store as `prepiq-<key>`, labelled
as promotion labels it. Then, per server: time from start to ready, resident memory with
every model loaded, and per route p50/p95/p99 latency, requests/s and errors.

Each route gets a closed loop (`--clients` clients, each sending its next request when
the last answered: capacity) and then an open loop at `--rate` arrivals per second
(latency from each request's scheduled arrival: the latency targets are judged there),
measured after `--open-warmup` seconds at that rate (see OPEN_LOOP_WARMUP).

The per-student routes are loaded twice: cycling through every student (a student
comes back only after `seconds_between_repeats`), and cycling through `--hot-students`.
With the service's defaults every seeded student's inputs are in the materialised store
(`serving.feature_store`): a request reads them, the first request for a student runs
the model and later ones reuse its output until the student's rows change (the counts
are under `materialised_inputs_after_load`). `--materialised-students 0` turns the store
off, so every request builds its inputs (the feature cache's few seconds rarely cover a
repeat) and runs the model: the cold path. The focus-area comparison sends both servers
the same student's precomputed inputs (the route's body-input mode, and the same rows as
a `dataframe_split` to mlflow's `/invocations`), so both do the same work: the model on
the given rows. Run it on an otherwise idle machine: the load generator (one aiohttp
process) shares the cores with the server, and `machine.load_average_*` shows how busy
the machine was.

Usage: python benchmarks/serving.py [--students 400] [--seconds 20] [--clients 16]
       [--rate 50] [--warmup 3] [--open-warmup 12] [--hot-students 8] [--materialised-students N]
       [--routes a,b] [--quick] [--home DIR] [--setup-only] [--no-save]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import psutil  # type: ignore[import-untyped]

from core.net import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
API_KEY = "benchmark-service-key"
SEED = 42
SOURCE_DAYS = 120
END_DATE = datetime(2026, 11, 20, 23, 59, tzinfo=UTC)
RANKED = 20
STARTUP_TIMEOUT = 300.0
TARGETS_P99_MS = {
    "progress": 50.0,
    "focus-areas": 50.0,
    "recommend": 50.0,
    "rank-20": 100.0,
    "models-status": 10.0,
}
RSS_TARGET_MB = 1536.0
SPEEDUP_TARGET = 2.0
# Open-loop arrivals per second per route: about 180,000 requests an hour on one 2-core
# replica, the design load the latency targets are judged at.
DEFAULT_RATE = 50.0
# The open loop follows the route's closed loop, which saturates the service. BentoML keeps
# every request's timeout timer, and the request state it holds, for its traffic timeout
# (`serving.service`: the request timeout + 1 s, 11 s by default), so for that long after a
# saturation each full garbage collection walks thousands of finished requests. The open
# loop measures the design load, not that aftermath: its warm-up outlasts the timeout.
OPEN_LOOP_WARMUP = 12.0


@dataclass(frozen=True)
class Call:
    """One kind of request: method, path and a body per request number."""

    method: str
    path: str
    body: Callable[[int], Any] | None = None


# -- setup --------------------------------------------------------------------------------


def configure(home: Path) -> None:
    """Point every tool at `home` (before anything reads the settings)."""
    os.environ["PREPIQ_HOME"] = str(home)
    os.environ["PREPIQ_DATA_DIR"] = str(home / "data")
    os.environ["PREPIQ_PARAMS_FILE"] = str(home / "params.yaml")
    for key in ("PREPIQ_SOURCE_URL", "MLFLOW_TRACKING_URI", "BENTOML_HOME", "PREFECT_HOME"):
        os.environ.pop(key, None)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from core.config import get_settings

    get_settings.cache_clear()
    get_settings().apply_environment()


def prepare(home: Path, students: int, trials: int) -> dict[str, Any]:
    """Seed, train and import into the BentoML store, unless `home` holds that already;
    returns what was set up (and how long each step took)."""
    done = home / "setup.json"
    if done.exists():
        return dict(json.loads(done.read_text()), reused=True)
    from synthetic.small_source import write_small_source_params

    write_small_source_params(home)
    configure(home)
    from mlflow import MlflowClient

    from core.config import get_settings
    from core.database import get_engine
    from features.migrate import upgrade
    from pipelines.train import train_flow
    from synthetic.generator import seed_source
    from training.models import MODELS

    settings = get_settings()
    started = time.perf_counter()
    engine = get_engine()
    upgrade(engine)
    seed_source(
        engine,
        students=students,
        seed=SEED,
        days=SOURCE_DAYS,
        end_date=END_DATE.date(),
        truth_dir=settings.ground_truth_dir,
    )
    seeded = time.perf_counter()
    train_flow(trials=trials, as_of=END_DATE)
    trained = time.perf_counter()
    client = MlflowClient()
    versions: dict[str, str] = {}
    for spec in MODELS.values():
        version = str(client.get_model_version_by_alias(spec.name, "challenger").version)
        client.set_registered_model_alias(spec.name, "champion", version)  # as promotion
        versions[spec.key] = version
    info = {
        "students": students,
        "trials": trials,
        "versions": versions,
        "setup_seconds": {
            "seed": round(seeded - started, 1),
            "train": round(trained - seeded, 1),
            "import": round(time.perf_counter() - trained, 1),
        },
    }
    done.write_text(json.dumps(info))
    return dict(info, reused=False)


def load_inputs(count: int) -> dict[str, Any]:
    """Students with answers (and one student's focus inputs), subjects with questions."""
    from core.config import get_settings
    from core.database import get_engine
    from features import focus
    from features.frames import from_source
    from training.focus_area.inference import INPUT_COLUMNS

    engine = get_engine(get_settings().resolved_source_url)
    with engine.connect() as conn:
        users = [
            str(r[0])
            for r in conn.exec_driver_sql(
                "SELECT DISTINCT user_id FROM tests ORDER BY user_id LIMIT ?", (count,)
            )
        ]
        subjects = [
            int(r[0])
            for r in conn.exec_driver_sql(
                "SELECT DISTINCT t.subject_id FROM questions q JOIN topics t ON t.id = q.topic_id"
            )
        ]
    frames = from_source(engine, users[0], ("users", *focus.TABLES))
    stats = focus.topic_test_stats(frames, datetime.now(UTC))[INPUT_COLUMNS]
    return {"users": users, "subjects": sorted(subjects), "focus_inputs": stats}


# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    ready_seconds: float
    log: Path

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the process tree (BentoML serves from a child process)."""
        root = psutil.Process(self.process.pid)
        tree = [root, *root.children(recursive=True)]
        per = {}
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                per[proc.pid] = proc.memory_info().rss / 2**20
        return {
            "total_mb": round(sum(per.values()), 1),
            "largest_process_mb": round(max(per.values()), 1),
            "processes": len(per),
        }

    def stop(self) -> None:
        """SIGINT to the server's own process group, then wait (BentoML flushes its log)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start(
    name: str, command: list[str], env: dict[str, str], ready_path: str, work: Path
) -> Server:
    """Start a server in its own process group; wait until `ready_path` answers 200."""
    port = int(command[command.index("--port") + 1]) if "--port" in command else 0
    log = work / f"{name}.log"
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = started + STARTUP_TIMEOUT
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url + ready_path).status_code == 200:
                    break
            if time.perf_counter() > deadline:
                os.killpg(process.pid, signal.SIGKILL)  # its workers too, not only the parent
                raise RuntimeError(f"{name} not ready after {STARTUP_TIMEOUT} s; see {log}")
            time.sleep(0.1)
    return Server(name, process, url, round(time.perf_counter() - started, 2), log)


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The venv's tools first (mlflow runs `uvicorn` by name).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def bin_path(tool: str) -> str:
    return str(Path(sys.executable).parent / tool)


# -- load ---------------------------------------------------------------------------------


def client_session(url: str, clients: int, headers: dict[str, str]) -> aiohttp.ClientSession:
    """The load's HTTP client: at most `clients` connections. aiohttp: about half httpx's
    client CPU per request, which here shares the server's two cores."""
    return aiohttp.ClientSession(
        base_url=url,
        headers=headers,
        connector=aiohttp.TCPConnector(limit=clients),
        timeout=aiohttp.ClientTimeout(total=30.0),
    )


async def closed_loop(
    url: str, call: Call, clients: int, seconds: float, warmup: float, headers: dict[str, str]
) -> dict[str, Any]:
    """`clients` clients, each sending its next request as soon as the last answered;
    statistics over the `seconds` after `warmup` seconds."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = 0
    async with client_session(url, clients, headers) as session:
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup
        stop_at = measure_from + seconds

        async def one_client() -> None:
            nonlocal counter
            while (now := loop.time()) < stop_at:
                counter += 1
                began = time.perf_counter()
                problem = await send(session, call, counter)
                elapsed = time.perf_counter() - began
                if now >= measure_from:
                    if problem is None:
                        latencies.append(elapsed)
                    else:
                        errors[problem] = errors.get(problem, 0) + 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return summary(latencies, errors, seconds)


def summary(latencies: list[float], errors: dict[str, int], seconds: float) -> dict[str, Any]:
    """Count, errors, requests/s and latency percentiles (ms) of one measured window."""
    done = np.array(latencies) * 1000
    stats: dict[str, Any] = {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "requests_per_second": round(len(latencies) / seconds, 1),
    }
    if len(done):
        for q in (50, 95, 99):
            stats[f"p{q}_ms"] = round(float(np.percentile(done, q)), 2)
        stats["max_ms"] = round(float(done.max()), 2)
    return stats


async def send(session: aiohttp.ClientSession, call: Call, number: int) -> str | None:
    """One request; None when it answered 200, else what went wrong."""
    body = call.body(number) if call.body is not None else None
    try:
        async with session.request(call.method, call.path, json=body) as response:
            await response.read()
            return None if response.status == 200 else str(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def open_loop(
    url: str,
    call: Call,
    clients: int,
    rate: float,
    seconds: float,
    warmup: float,
    headers: dict[str, str],
) -> dict[str, Any]:
    """Requests arriving at `rate` per second (Poisson, seeded), whether or not earlier
    ones have answered, sent over at most `clients` concurrent connections. A request's
    latency runs from its scheduled arrival, so time spent waiting for a free connection
    counts (no coordinated omission); statistics over arrivals in the `seconds` after
    `warmup` seconds."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rng = np.random.default_rng(SEED)
    async with client_session(url, clients, headers) as session:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(clients)
        measure_from = loop.time() + warmup
        stop_at = measure_from + seconds

        async def arrival(number: int, scheduled: float) -> None:
            async with slots:
                problem = await send(session, call, number)
            if scheduled < measure_from:
                return
            if problem is None:
                latencies.append(loop.time() - scheduled)
            else:
                errors[problem] = errors.get(problem, 0) + 1

        pending = []
        scheduled = loop.time()
        number = 0
        while scheduled < stop_at:
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            number += 1
            pending.append(asyncio.create_task(arrival(number, scheduled)))
            scheduled += float(rng.exponential(1.0 / rate))
        await asyncio.gather(*pending)
    stats = summary(latencies, errors, seconds)
    stats["offered_per_second"] = rate
    return stats


def run_load(
    url: str, call: Call, args: argparse.Namespace, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The route's closed-loop figures (capacity), with the open-loop figures at
    `args.rate` under "open_loop" (the latency targets are judged there)."""
    stats = asyncio.run(
        closed_loop(url, call, args.clients, args.seconds, args.warmup, headers or {})
    )
    if args.rate > 0:
        stats["open_loop"] = asyncio.run(
            open_loop(
                url, call, args.clients, args.rate, args.seconds, args.open_warmup, headers or {}
            )
        )
    return stats


def by_user(users: list[str], **extra: Any) -> Callable[[int], dict[str, Any]]:
    """Request bodies for the students in turn."""
    return lambda i: {"user_id": users[i % len(users)], **extra}


def prepiq_calls(inputs: dict[str, Any], hot: int) -> dict[str, Call]:
    """The routes under load. Per-student routes cycle through every student (so a
    student comes back only after `students / requests per second` seconds: the feature
    cache's few seconds rarely cover it), and again through `hot` students only (repeat
    requests, mostly answered from the cache)."""
    from serving.schemas import TopicTestStats

    users: list[str] = inputs["users"]
    subjects: list[int] = inputs["subjects"]
    # The route's body mode takes the fields its schema declares.
    fields = set(TopicTestStats.model_fields)
    topics = [
        {k: v for k, v in row.items() if k in fields}
        for row in inputs["focus_inputs"].to_dict("records")
    ]
    calls: dict[str, Call] = {}
    for label, cycled in (("", users), (f" ({hot} students, cached)", users[:hot])):
        calls["progress" + label] = Call("POST", "/api/v1/ml/predict/progress", by_user(cycled))
        calls["focus-areas" + label] = Call(
            "POST", "/api/v1/ml/predict/focus-areas", by_user(cycled)
        )
        calls["recommend" + label] = Call(
            "POST", "/api/v1/ml/recommend/topics", by_user(cycled, top_k=5)
        )
    return {
        **calls,
        "rank-20": Call(
            "POST",
            "/api/v1/ml/rank/questions",
            lambda i: {"subject_id": subjects[i % len(subjects)], "top_k": RANKED},
        ),
        "models-status": Call("GET", "/api/v1/ml/models/status"),
        "focus-areas-same-student-cached": Call(
            "POST", "/api/v1/ml/predict/focus-areas", by_user(users[:1])
        ),
        "focus-areas-given-inputs": Call(
            "POST", "/api/v1/ml/predict/focus-areas", lambda i: {"topics": topics}
        ),
    }


def mlflow_call(inputs: dict[str, Any]) -> Call:
    frame = inputs["focus_inputs"]
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    return Call("POST", "/invocations", lambda i: body)


# -- main ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "memory_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    routes = report["bentoml"]["routes"]
    checks: dict[str, Any] = {}
    rate = report["load"]["open_loop_per_second"]
    for route, limit in TARGETS_P99_MS.items():
        got = routes.get(route, {}).get("open_loop", {}).get("p99_ms")
        checks[f"{route} p99 <= {limit:g} ms at {rate:g} req/s"] = got is not None and got <= limit
    every = [*routes.values(), report["mlflow"]["focus_area"]]
    checks["zero errors"] = all(
        r["errors"] == 0 and r.get("open_loop", {}).get("errors", 0) == 0 for r in every
    )
    side = report["focus_area_side_by_side"]
    checks[f"focus-area >= {SPEEDUP_TARGET:g}x mlflow requests/s at <= p99"] = (
        side["speedup"] is not None
        and side["speedup"] >= SPEEDUP_TARGET
        and side["bentoml_p99_ms"] <= side["mlflow_p99_ms"]
    )
    checks[f"RSS <= {RSS_TARGET_MB:g} MB"] = (
        report["bentoml"]["rss_all_models_loaded"]["total_mb"] <= RSS_TARGET_MB
    )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=400, help="seeded students (200-2000)")
    parser.add_argument("--trials", type=int, default=1, help="tuning trials per model")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per route")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument(
        "--open-warmup",
        type=float,
        default=OPEN_LOOP_WARMUP,
        help="unmeasured seconds before the open loop's window (past the service's traffic "
        "timeout, so the closed loop's saturation is over)",
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help="open-loop arrivals per second per route (0: closed loop only)",
    )
    parser.add_argument(
        "--routes",
        type=lambda text: [r.strip() for r in text.split(",") if r.strip()],
        default=None,
        help="comma-separated routes to load (default: all; the verdict needs all)",
    )
    parser.add_argument(
        "--inference-threads",
        type=int,
        default=None,
        help="the service's PREPIQ_SERVING_INFERENCE_THREADS",
    )
    parser.add_argument(
        "--materialised-students",
        type=int,
        default=None,
        help="the service's PREPIQ_SERVING_MATERIALISED_STUDENTS (0 turns the store off)",
    )
    parser.add_argument(
        "--load-students", type=int, default=2000, help="most students the load cycles"
    )
    parser.add_argument("--hot-students", type=int, default=8, help="students of the repeat load")
    parser.add_argument("--quick", action="store_true", help="5 s per route, 1 s warm-up")
    parser.add_argument("--home", type=Path, default=None, help="keep and reuse this PREPIQ_HOME")
    parser.add_argument("--setup-only", action="store_true", help="prepare --home and stop")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.open_warmup = 5.0, 1.0, 1.0
    report: dict[str, Any] = {
        "benchmark": "serving",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load": {
            "kind": "closed loop (capacity), then open loop at a fixed rate (latency targets)",
            "open_loop_per_second": args.rate,
            "client": f"aiohttp {aiohttp.__version__}, one process",
            "clients": args.clients,
            "seconds_per_route": args.seconds,
            "warmup_seconds": args.warmup,
            "open_loop_warmup_seconds": args.open_warmup,
            "hot_students": args.hot_students,
            "feature_cache_seconds": float(
                os.environ.get("PREPIQ_SERVING_FEATURE_CACHE_SECONDS", "") or 5.0
            ),
            "materialised_students": args.materialised_students,
            "inference_threads": args.inference_threads,
        },
    }
    with contextlib.ExitStack() as stack:
        if args.home is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "home"
        else:
            home = args.home.resolve()
        report["setup"] = prepare(home, args.students, args.trials)
        if args.setup_only:
            print(json.dumps(report["setup"], indent=2))
            return
        configure(home)
        inputs = load_inputs(args.load_students)
        report["load"]["students_cycled"] = len(inputs["users"])
        report["load"]["subjects"] = len(inputs["subjects"])
        report["load"]["focus_input_topics"] = len(inputs["focus_inputs"])
        report["bentoml"] = bench_bentoml(args, inputs, home, stack)
        if not args.routes:
            versions = report["setup"]["versions"]
            report["mlflow"] = bench_mlflow(args, inputs, versions, home, stack)
    routes = report["bentoml"]["routes"]
    if args.routes:  # a partial run: no comparison, no verdict
        print(json.dumps(report, indent=2, default=str))
        return
    # The body mode is the like-for-like route; if it failed, the same student by user_id
    # with the inputs in the feature cache (the model plus one stamp query) stands in.
    body_mode_ok = routes["focus-areas-given-inputs"]["errors"] == 0
    bento_route = "focus-areas-given-inputs" if body_mode_ok else "focus-areas-same-student-cached"
    bento = routes[bento_route]
    theirs = report["mlflow"]["focus_area"]
    report["focus_area_side_by_side"] = {
        "work": "one student's precomputed focus-area inputs, model only",
        "bentoml_route": bento_route,
        "bentoml_requests_per_second": bento["requests_per_second"],
        "bentoml_p99_ms": bento.get("p99_ms"),
        "mlflow_requests_per_second": theirs["requests_per_second"],
        "mlflow_p99_ms": theirs.get("p99_ms"),
        "speedup": round(bento["requests_per_second"] / theirs["requests_per_second"], 2)
        if theirs["requests_per_second"]
        else None,
    }
    report["targets_met"] = verdict(report)
    load1, load5, load15 = os.getloadavg()
    report["machine"]["load_average_after"] = [round(load1, 2), round(load5, 2), round(load15, 2)]
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")


def bench_bentoml(
    args: argparse.Namespace, inputs: dict[str, Any], home: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    port = free_port()
    env = server_env(
        PREPIQ_SERVING_API_KEYS=API_KEY,
        PREPIQ_SERVING_RATE_LIMIT="100000000/minute",
        PREPIQ_LOG_LEVEL="WARNING",
    )
    if args.materialised_students is not None:
        env["PREPIQ_SERVING_MATERIALISED_STUDENTS"] = str(args.materialised_students)
    if args.inference_threads is not None:
        env["PREPIQ_SERVING_INFERENCE_THREADS"] = str(args.inference_threads)
    command = [
        bin_path("bentoml"),
        "serve",
        "serving.service:PrepIQService",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = start("bentoml", command, env, "/readyz", home)
    stack.callback(server.stop)
    result: dict[str, Any] = {
        "start_to_ready_seconds": server.ready_seconds,
        "rss_all_models_loaded": server.rss_mb(),
        "routes": {},
    }
    headers = {"X-API-Key": API_KEY}
    result["materialised_inputs"] = wait_for_store(server.url, headers)
    for route, call in prepiq_calls(inputs, args.hot_students).items():
        if args.routes and route not in args.routes:
            continue
        stats = run_load(server.url, call, args, headers)
        if route in ("progress", "focus-areas", "recommend") and stats["requests_per_second"]:
            stats["seconds_between_repeats"] = round(
                len(inputs["users"]) / stats["requests_per_second"], 1
            )
        result["routes"][route] = stats
    result["rss_after_load"] = server.rss_mb()
    # How the per-student routes were answered over the whole load: from the store (and
    # with a kept output) or built by the request.
    with httpx.Client(base_url=server.url, headers=headers, timeout=10.0) as client:
        status = client.get("/api/v1/ml/models/status").json()
    result["materialised_inputs_after_load"] = status.get("materialised_inputs")
    server.stop()
    return result


def wait_for_store(url: str, headers: dict[str, str]) -> dict[str, Any] | None:
    """The materialised store's status once its first refresh is done (None when the
    service runs without it), and the seconds from ready to that point."""
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=10.0) as client:
        while True:
            store = client.get("/api/v1/ml/models/status").json().get("materialised_inputs")
            if store is None or store["last_refresh_seconds"] is not None:
                break
            if time.perf_counter() - started > STARTUP_TIMEOUT:
                raise RuntimeError("the materialised store did not finish its first refresh")
            time.sleep(0.2)
    if store is not None:
        store["ready_to_first_refresh_seconds"] = round(time.perf_counter() - started, 2)
    return store


def bench_mlflow(
    args: argparse.Namespace,
    inputs: dict[str, Any],
    versions: dict[str, str],
    home: Path,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    port = free_port()
    model_uri = f"models:/prepiq-focus-area/{versions['focus-area']}"
    command = [
        bin_path("mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = server_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = start("mlflow", command, env, "/ping", home)
    stack.callback(server.stop)
    result: dict[str, Any] = {
        "model_uri": model_uri,
        "start_to_ready_seconds": server.ready_seconds,
        "rss": server.rss_mb(),
    }
    result["focus_area"] = run_load(server.url, mlflow_call(inputs), args)
    server.stop()
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
