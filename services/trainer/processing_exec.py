"""Run one processing job (synchronous: called in a worker thread), SageMaker Processing-style.

The job gets a `/opt/ml/processing`-like tree under a temp root: each input copied into its
destination, each output's source directory created empty, the code in `code/`. A script runs as
a subprocess with the job's arguments and environment; arguments that name a path under
`/opt/ml/processing/` are rewritten into the job's tree, and `CAIRN_PROCESSING_ROOT`,
`SM_PROCESSING_INPUT_<NAME>` and `SM_PROCESSING_OUTPUT_<NAME>` say where things are. A script may
write `metrics.json` ({name: number}) at the root. Outputs are uploaded when the program exits 0.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cairn.contracts.processing_events import (
    PROCESSING_ROOT,
    DatasetOutputSpec,
    ProcessingJobRequested,
    ProcessingOutputResult,
)
from cairn.errors import CairnError, InvalidInput, ObjectNotFound
from cairn.store.base import ObjectStore

from services.trainer.channels import store_key_of
from services.trainer.processing_builtins import run_builtin
from services.trainer.processing_domain import ProcessingFailure, ProcessingResult, output_prefix
from services.trainer.script import _fetch_code

_POLL_S = 0.1
_FAILURE_TAIL_LINES = 20


@dataclass
class ProcessingContext:
    """What the running job may ask of its worker: log a line, and whether to stop now."""

    log: Callable[[str], None]
    should_stop: Callable[[], bool]


def run_processing(
    store: ObjectStore,
    request: ProcessingJobRequested,
    ctx: ProcessingContext,
    scratch_dir: Path | None = None,
) -> ProcessingResult:
    """Copy inputs, run the program, upload outputs; expected failures are ProcessingFailure."""
    with tempfile.TemporaryDirectory(
        prefix=f"cairn-proc-{request.job_name}-", dir=scratch_dir
    ) as t:
        root = Path(t) / "opt" / "ml" / "processing"
        try:
            return _run(store, request, ctx, root)
        except InvalidInput as error:
            raise ProcessingFailure("invalid_input", error.message) from error


def _run(
    store: ObjectStore, request: ProcessingJobRequested, ctx: ProcessingContext, root: Path
) -> ProcessingResult:
    started = time.monotonic()
    for item in request.inputs:
        copied = copy_input(store, item.source, local(root, item.destination))
        ctx.log(f"input {item.input_name}: {copied} file(s) from {item.source}")
    for output in request.outputs:
        local(root, output.source).mkdir(parents=True, exist_ok=True)
    if request.builtin is not None:
        ctx.log(f"running built-in {request.builtin} {' '.join(request.arguments)}")
        try:
            run_builtin(request.builtin, request, root, ctx.log)
        except InvalidInput:
            raise
        except CairnError as error:
            raise ProcessingFailure("invalid_input", error.message) from error
    else:
        code, tail = _run_script(store, request, root, ctx)
        if ctx.should_stop():
            raise ProcessingFailure("runtime_exceeded", "max_runtime_s passed while the job ran")
        if code != 0:
            raise ProcessingFailure(
                "script_error", f"the script exited with code {code}: " + " | ".join(tail)
            )
    outputs, registrations = _upload_outputs(store, request, root, ctx)
    return ProcessingResult(outputs, _metrics(root), time.monotonic() - started, registrations)


def local(root: Path, path: str) -> Path:
    """`/opt/ml/processing/x` inside this job's tree (the contract validated the path)."""
    return root / Path(path).relative_to(PROCESSING_ROOT)


def copy_input(store: ObjectStore, source: str, directory: Path) -> int:
    """Copy a key, or every file under a prefix (keeping sub-folders), into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = store_key_of(store, source)
    if store.exists(key):
        store.get_file(key, directory / key.rsplit("/", 1)[-1])
        return 1
    prefix = key.rstrip("/") + "/"
    copied = 0
    for info in store.list(prefix):
        relative = info.key[len(prefix) :]
        if not relative or any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(info.key, target)
        copied += 1
    if copied == 0:
        raise InvalidInput(f"input source {source!r} holds no files", field="inputs")
    return copied


def _environment(request: ProcessingJobRequested, root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        **request.environment,
        "CAIRN_PROCESSING_ROOT": str(root),
        "CAIRN_PROCESSING_JOB_NAME": request.job_name,
        "PYTHONUNBUFFERED": "1",
    }
    for item in request.inputs:
        env[f"SM_PROCESSING_INPUT_{item.input_name.upper()}"] = str(local(root, item.destination))
    for output in request.outputs:
        env[f"SM_PROCESSING_OUTPUT_{output.output_name.upper()}"] = str(local(root, output.source))
    return env


def rewrite_argument(argument: str, root: Path) -> str:
    """An argument naming `/opt/ml/processing/...` (alone or after `=`) points into the tree."""
    name, equals, value = argument.partition("=")
    if equals and value.startswith(PROCESSING_ROOT):
        return f"{name}={root}{value[len(PROCESSING_ROOT) :]}"
    if argument.startswith(PROCESSING_ROOT):
        return f"{root}{argument[len(PROCESSING_ROOT) :]}"
    return argument


def _run_script(
    store: ObjectStore, request: ProcessingJobRequested, root: Path, ctx: ProcessingContext
) -> tuple[int, list[str]]:
    """Run the user's script; its stdout and stderr go to the job's log line by line."""
    assert request.entry_point is not None, "the contract requires a script or a built-in"
    code_dir = root / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    try:
        script = _fetch_code(store, request.entry_point, code_dir)
    except ObjectNotFound as error:
        raise InvalidInput(f"entry_point: {error.message}", field="entry_point") from error
    args = [rewrite_argument(argument, root) for argument in request.arguments]
    ctx.log(f"running {script.name} {' '.join(request.arguments)}")
    env = {**_environment(request, root), "PYTHONPATH": str(script.parent)}
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=script.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a timeout kills its children too
    )
    tail: list[str] = []
    reader = threading.Thread(target=_pump, args=(process, ctx, tail), daemon=True)
    reader.start()
    while process.poll() is None:
        if ctx.should_stop():
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(_POLL_S)
    code = process.wait()
    reader.join(timeout=5)
    return code, tail


def _pump(process: subprocess.Popen[str], ctx: ProcessingContext, tail: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        text = line.rstrip("\n")
        ctx.log(text)
        tail.append(text)
        del tail[:-_FAILURE_TAIL_LINES]


def _upload_outputs(
    store: ObjectStore, request: ProcessingJobRequested, root: Path, ctx: ProcessingContext
) -> tuple[list[ProcessingOutputResult], list[tuple[str, DatasetOutputSpec]]]:
    """Upload each output's files; list the dataset registrations asked for."""
    results: list[ProcessingOutputResult] = []
    registrations: list[tuple[str, DatasetOutputSpec]] = []
    for output in request.outputs:
        prefix = output_prefix(request, output.output_name)
        source = local(root, output.source)
        files = sorted(path for path in source.rglob("*") if path.is_file())
        size = 0
        for path in files:
            store.put_file(prefix + path.relative_to(source).as_posix(), path)
            size += path.stat().st_size
        ctx.log(f"output {output.output_name}: {len(files)} file(s), {size} bytes -> {prefix}")
        if output.dataset is not None:
            if not files:
                raise ProcessingFailure(
                    "script_error",
                    f"output {output.output_name!r} is empty: nothing to register as dataset "
                    f"{output.dataset.dataset_name!r}",
                )
            registrations.append((prefix, output.dataset))
        results.append(
            ProcessingOutputResult(
                output_name=output.output_name,
                uri=prefix,
                files=len(files),
                bytes=size,
                dataset_name=output.dataset.dataset_name if output.dataset else None,
            )
        )
    return results, registrations


def _metrics(root: Path) -> dict[str, float]:
    path = root / "metrics.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
