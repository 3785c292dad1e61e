"""Processing jobs' pure parts: the request contract, the claim rules a redelivery or a killed
worker meets, the argument rewrite into the job's tree, and the built-in processors."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from cairn.contracts.envelope import utc_now
from cairn.contracts.processing_events import ProcessingJobRequested
from cairn.errors import InvalidInput
from cairn_sdk.processing import parse_input, parse_output
from pydantic import ValidationError

from services.trainer.processing_builtins import run_builtin
from services.trainer.processing_domain import ProcessingJob, decide, request_fingerprint
from services.trainer.processing_exec import rewrite_argument


def request(**fields: object) -> ProcessingJobRequested:
    base: dict[str, object] = {"job_name": "prep", "builtin": "data-quality"}
    return ProcessingJobRequested.model_validate(base | fields)


def test_the_contract_defaults_local_paths_and_refuses_escapes() -> None:
    job = request(
        inputs=[{"input_name": "raw", "source": "data/x"}], outputs=[{"output_name": "o"}]
    )
    assert job.inputs[0].destination == "/opt/ml/processing/input/raw"
    assert job.outputs[0].source == "/opt/ml/processing/output/o"
    for bad in ("/opt/ml/processing/../../etc", "/tmp/x", "/opt/ml/processing"):
        with pytest.raises(ValidationError, match="destination"):
            request(inputs=[{"input_name": "raw", "source": "data/x", "destination": bad}])
    with pytest.raises(ValidationError, match="entry_point"):
        request(entry_point="code/x.py")
    with pytest.raises(ValidationError, match="unique"):
        request(outputs=[{"output_name": "o"}, {"output_name": "o"}])


def test_a_delivery_claims_waits_takes_over_or_republishes() -> None:
    job = request()
    fingerprint = request_fingerprint(job)
    now = utc_now()
    doc = ProcessingJob(job_name="prep", request=job, request_sha256=fingerprint)
    common = {"fingerprint": fingerprint, "worker_id": "me", "now": now, "lease_s": 30.0}
    assert decide(None, event_id="e1", **common) == "create"  # type: ignore[arg-type]
    running = doc.model_copy(
        update={"status": "InProgress", "worker_id": "other", "heartbeat_at": now}
    )
    assert decide(running, event_id="e1", **common) == "wait"  # type: ignore[arg-type]
    killed = running.model_copy(update={"heartbeat_at": now - timedelta(seconds=31)})
    assert decide(killed, event_id="e1", **common) == "claim"  # type: ignore[arg-type]
    done = running.model_copy(update={"status": "Completed", "request_event_id": "e1"})
    assert decide(done, event_id="e1", **common) == "republish"  # type: ignore[arg-type]
    assert decide(done, event_id="e2", **common) == "done"  # type: ignore[arg-type]
    other = dict(common, fingerprint="different")
    assert decide(done, event_id="e3", **other) == "reject"  # type: ignore[arg-type]


def test_arguments_naming_the_processing_tree_point_into_the_jobs_own() -> None:
    root = Path("/tmp/job/opt/ml/processing")
    assert rewrite_argument("/opt/ml/processing/input/raw", root) == f"{root}/input/raw"
    assert rewrite_argument("--out=/opt/ml/processing/o", root) == f"--out={root}/o"
    assert rewrite_argument("--factor", root) == "--factor"


def test_the_cli_forms_of_inputs_and_outputs() -> None:
    assert parse_input("raw=dataset://credit@2:/opt/ml/processing/data") == {
        "input_name": "raw",
        "source": "dataset://credit@2",
        "destination": "/opt/ml/processing/data",
    }
    assert parse_output("train=outputs/p/train@credit-train") == {
        "output_name": "train",
        "destination": "outputs/p/train",
        "dataset": {"dataset_name": "credit-train"},
    }
    with pytest.raises(InvalidInput):
        parse_input("raw")


def _tree(tmp_path: Path, outputs: list[str]) -> Path:
    root = tmp_path / "opt" / "ml" / "processing"
    (root / "input" / "raw").mkdir(parents=True)
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, None], "c": list("abcab")}).to_csv(
        root / "input" / "raw" / "t.csv", index=False
    )
    for name in outputs:
        (root / "output" / name).mkdir(parents=True)
    return root


def test_the_builtins_write_their_outputs(tmp_path: Path) -> None:
    inputs = [{"input_name": "raw", "source": "data/x"}]
    root = _tree(tmp_path, ["train", "validation", "report"])
    split = request(
        builtin="train-validation-split",
        inputs=inputs,
        outputs=[{"output_name": "train"}, {"output_name": "validation"}],
        arguments=["--validation-fraction", "0.4"],
    )
    run_builtin("train-validation-split", split, root, lambda line: None)
    assert len(pd.read_csv(root / "output" / "train" / "train.csv")) == 3
    assert len(pd.read_csv(root / "output" / "validation" / "validation.csv")) == 2
    quality = request(inputs=inputs, outputs=[{"output_name": "report"}])
    run_builtin("data-quality", quality, root, lambda line: None)
    report = json.loads((root / "output" / "report" / "data_quality.json").read_text())
    assert report["row_count"] == 5 and report["columns"]["x"]["missing"] == 1
    scaling = request(
        builtin="feature-scaling",
        inputs=inputs,
        outputs=[{"output_name": "report"}],
        arguments=["--method", "minmax"],
    )
    run_builtin("feature-scaling", scaling, root, lambda line: None)
    scaled = pd.read_csv(root / "output" / "report" / "scaled.csv")
    assert scaled["x"].min() == 0.0 and scaled["x"].max() == 1.0
    with pytest.raises(InvalidInput, match="arguments"):
        bad = scaling.model_copy(update={"arguments": ["--method", "log"]})
        run_builtin("feature-scaling", bad, root, lambda line: None)
