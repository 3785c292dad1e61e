"""Bring-your-own training: a user's script (subprocess) or image (Docker), SageMaker-style.

The job gets an `/opt/ml`-like tree under a temp root: `input/data/<channel>/` (files copied from
the store), `input/config/hyperparameters.json`, `model/` (packaged afterwards), `output/data/`
and `output/failure` (its text becomes the failure reason). Env vars `SM_MODEL_DIR`,
`SM_CHANNELS`, `SM_CHANNEL_<NAME>`, `SM_HPS`, `SM_HP_<NAME>`, `SM_OUTPUT_DATA_DIR`, ... and the
hyperparameters as `--name value` arguments follow SageMaker's script mode. Such packages have
framework `script`: the gateway serves them through their `inference.py` in a model-server process
of their own (`services/gateway/script_models.py`); in-process callers (`load_model`) refuse them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cairn.artifacts import Lineage, ModelManifest, Signature, write_model_package
from cairn.contracts.events import MetricDefinition, TrainingJobRequested
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

from services.trainer.algorithms import RuntimeExceeded, TrainingContext, TrainingStopped
from services.trainer.channels import ChannelFiles, download_channel, resolve_channel
from services.trainer.checkpoints import DirectorySync
from services.trainer.domain import JobFailure, JobResult
from services.trainer.gpu import gpu_count
from services.trainer.script_scale import PipeFeeder, host_env, host_names
from services.trainer.xgboost_jobs import ScaleOut

DEFAULT_SCRIPT = "train.py"
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_POLL_S = 0.1


def run_script_job(
    store: ObjectStore,
    request: TrainingJobRequested,
    package_prefix: str,
    ctx: TrainingContext,
    scratch_dir: Path | None,
    scale: ScaleOut | None = None,
) -> JobResult:
    """Run a script or image job and package its model dir."""
    scale = scale or ScaleOut(scratch_dir=scratch_dir)
    with (
        tempfile.TemporaryDirectory(prefix=f"cairn-{request.job_name}-", dir=scratch_dir) as tmp,
        contextlib.ExitStack() as stack,
    ):
        ml = Path(tmp) / "opt" / "ml"
        feeders: list[PipeFeeder] = []
        stack.callback(_close_all, feeders)
        channels = _prepare_tree(store, request, ml, scale, feeders)
        env = sagemaker_env(request, ml, channels, gpu=ctx.use_gpu)
        hosts = host_names(request.resources.instance_count)
        env.update(host_env(ml, hosts, hosts[0]))  # resourceconfig.json, containers included
        if scale.checkpoints is not None:
            found = scale.checkpoints.download(ml / "checkpoints")
            ctx.log(f"checkpoints: {found} file(s) from {scale.checkpoints.prefix}/")
            env["SM_CHECKPOINT_DIR"] = str(ml / "checkpoints")
            stack.enter_context(
                DirectorySync(scale.checkpoints, ml / "checkpoints", scale.checkpoint_sync_s)
            )
        args = hyperparameter_args(request.hyperparameters)
        log_metrics = LogMetrics(request.metric_definitions, ctx)
        started = time.monotonic()
        if request.image:
            from services.trainer.container import run_container

            code = run_container(request.image, ml, env, args, ctx, log_metrics.read)
        else:
            code = _run_subprocess(store, request, ml, env, args, ctx, log_metrics)
        stack.close()  # last checkpoint upload, pipes released
        training_time_s = time.monotonic() - started
        if ctx.should_stop():
            _stopped(ctx, ml)
        elif code != 0:
            raise JobFailure("algorithm_error", _failure_reason(ml, code))
        uri, manifest = _package(
            store, request, ml, channels, package_prefix, ctx, log_metrics.latest
        )
        return JobResult(uri, manifest.metrics, manifest.device, training_time_s)


def _close_all(feeders: list[PipeFeeder]) -> None:
    for feeder in feeders:
        feeder.close()


def _stopped(ctx: TrainingContext, ml: Path) -> None:
    """A killed script: package what it left only when a stop request asked to keep it."""
    if not ctx.stop_requested():
        raise RuntimeExceeded("max_runtime_s passed while the script ran")
    if not (ctx.keep_partial_model() and any((ml / "model").iterdir())):
        raise TrainingStopped("stopped on request")


def _package(
    store: ObjectStore,
    request: TrainingJobRequested,
    ml: Path,
    channels: list[ChannelFiles],
    package_prefix: str,
    ctx: TrainingContext,
    log_metrics: dict[str, float],
) -> tuple[str, ModelManifest]:
    """Write what the script left in SM_MODEL_DIR as a model package of framework `script`."""
    from services.trainer.execution import lineage

    files = {
        str(path.relative_to(ml / "model")): path
        for path in sorted((ml / "model").rglob("*"))
        if path.is_file()
    }
    if not files:
        raise JobFailure("algorithm_error", "the script wrote nothing to SM_MODEL_DIR")
    manifest = ModelManifest(
        framework="script",
        framework_version=f"python{sys.version_info.major}.{sys.version_info.minor}",
        algorithm=request.algorithm,
        task="custom",
        signature=Signature(),
        metrics={**log_metrics, **_metrics(ml)},
        lineage=Lineage.model_validate(lineage(request, channels).model_dump()),
        device="gpu" if ctx.use_gpu else "cpu",
        details={"entry_point": request.entry_point, "image": request.image},
    )
    uri = write_model_package(store, package_prefix, manifest, files)
    ctx.log(f"model package written to {uri} ({len(files)} files)")
    return uri, manifest


def sagemaker_env(
    request: TrainingJobRequested, ml: Path, channels: list[ChannelFiles], *, gpu: bool
) -> dict[str, str]:
    """The SM_* variables of SageMaker's script mode, pointing into `ml`."""
    hps = {name: value for name, value in request.hyperparameters.items()}
    env = {
        "SM_MODEL_DIR": str(ml / "model"),
        "SM_INPUT_DIR": str(ml / "input"),
        "SM_INPUT_DATA_DIR": str(ml / "input" / "data"),
        "SM_INPUT_CONFIG_DIR": str(ml / "input" / "config"),
        "SM_OUTPUT_DIR": str(ml / "output"),
        "SM_OUTPUT_DATA_DIR": str(ml / "output" / "data"),
        "SM_CHANNELS": json.dumps(sorted(c.name for c in channels)),
        "SM_HPS": json.dumps(hps),
        "SM_USER_ARGS": json.dumps(hyperparameter_args(request.hyperparameters)),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_GPUS": str(gpu_count()) if gpu else "0",
        "SM_TRAINING_JOB_NAME": request.job_name,
        "PYTHONUNBUFFERED": "1",
    }
    for c in channels:
        env[f"SM_CHANNEL_{c.name.upper()}"] = str(ml / "input" / "data" / c.name)
    for name, value in hps.items():
        env[f"SM_HP_{name.upper()}"] = _hp_text(value)
    return env


def hyperparameter_args(hyperparameters: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in hyperparameters.items():
        args += [f"--{name}", _hp_text(value)]
    return args


def _hp_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _prepare_tree(
    store: ObjectStore,
    request: TrainingJobRequested,
    ml: Path,
    scale: ScaleOut,
    feeders: list[PipeFeeder],
) -> list[ChannelFiles]:
    """The /opt/ml-like tree; Pipe mode gets a named pipe per channel instead of its files."""
    for folder in ("model", "output/data", "input/config", "code"):
        (ml / folder).mkdir(parents=True, exist_ok=True)
    config = ml / "input" / "config"
    hps = {name: _hp_text(value) for name, value in request.hyperparameters.items()}
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    mode = request.input_mode
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                c.name: {"ContentType": c.content_type, "TrainingInputMode": mode}
                for c in request.input_channels
            }
        )
    )
    channels = []
    for input_channel in request.input_channels:
        files = resolve_channel(store, input_channel)
        data_dir = ml / "input" / "data"
        (data_dir / input_channel.name).mkdir(parents=True, exist_ok=True)
        if mode == "Pipe":
            fifo = data_dir / f"{input_channel.name}_0"
            feeders.append(PipeFeeder(store, files, fifo, scale.pipe_chunk_bytes))
        else:
            download_channel(store, files, data_dir / input_channel.name)
        channels.append(files)
    return channels


def _fetch_code(store: ObjectStore, entry_point: str, code_dir: Path) -> Path:
    """Download the script (or unpack the source tar) and return the script to run."""
    key, _, script_name = entry_point.partition("#")
    target = code_dir / key.rsplit("/", 1)[-1]
    store.get_file(key, target)
    if not key.endswith(_TAR_SUFFIXES):
        return target
    with tarfile.open(target) as archive:
        archive.extractall(code_dir, filter="data")  # refuses absolute paths and `..`
    target.unlink()
    script = code_dir / (script_name or DEFAULT_SCRIPT)
    if not script.is_file():
        raise InvalidInput(f"{key} has no {script.name}; name the script as `{key}#script.py`")
    return script


def _run_subprocess(
    store: ObjectStore,
    request: TrainingJobRequested,
    ml: Path,
    env: dict[str, str],
    args: list[str],
    ctx: TrainingContext,
    metrics: LogMetrics,
) -> int:
    if not request.entry_point:
        raise InvalidInput("algorithm 'script' needs an entry_point (a store key of a .py or tar)")
    script = _fetch_code(store, request.entry_point, ml / "code")
    full_env = {**os.environ, **env, "PYTHONPATH": str(script.parent)}
    hosts = host_names(request.resources.instance_count)
    ctx.log(f"running {script.name} {' '.join(args)} on {len(hosts)} host(s) {hosts}")
    processes = []
    for host in hosts:
        process = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=script.parent,
            env={**full_env, **host_env(ml, hosts, host)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
        prefix = f"[{host}] " if len(hosts) > 1 else ""
        reader = threading.Thread(
            target=_pump, args=(process, ctx, metrics, prefix, host == hosts[0]), daemon=True
        )
        reader.start()
        processes.append((process, reader))
    while any(process.poll() is None for process, _ in processes):
        failed = any(process.poll() not in (None, 0) for process, _ in processes)
        if ctx.should_stop() or failed:  # one host failing ends the job, as on SageMaker
            for process, _ in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(_POLL_S)
    codes = [process.wait() for process, _ in processes]
    for _, reader in processes:
        reader.join(timeout=5)
    return next((code for code in codes if code != 0), 0)


class LogMetrics:
    """SageMaker's MetricDefinitions: a matching log line reports the latest values as progress."""

    def __init__(self, definitions: list[MetricDefinition], ctx: TrainingContext) -> None:
        self.patterns = [(d.name, re.compile(d.regex)) for d in definitions]
        self.ctx = ctx
        self.latest: dict[str, float] = {}
        self.reports = 0

    def read(self, line: str) -> None:
        found = False
        for name, pattern in self.patterns:
            match = pattern.search(line)
            if match is None:
                continue
            with contextlib.suppress(TypeError, ValueError):
                value = float(match.group(1))
                if math.isfinite(value):
                    self.latest[name] = value
                    found = True
        if found:
            self.reports += 1
            self.ctx.progress(self.reports, None, dict(self.latest))


def _pump(
    process: subprocess.Popen[str],
    ctx: TrainingContext,
    metrics: LogMetrics,
    prefix: str = "",
    report: bool = True,
) -> None:
    """Log a host's output; metrics come from the first host's only (one series per job)."""
    assert process.stdout is not None
    for line in process.stdout:
        ctx.log(prefix + line.rstrip("\n"))
        if report:
            metrics.read(line)


def _failure_reason(ml: Path, code: int) -> str:
    failure = ml / "output" / "failure"
    if failure.is_file() and failure.read_text().strip():
        return failure.read_text().strip()[:2000]
    return f"the training script exited with code {code} (see the job's logs)"


def _metrics(ml: Path) -> dict[str, float]:
    """Cairn extension: a script may write `output/metrics.json` ({name: number})."""
    path = ml / "output" / "metrics.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}
