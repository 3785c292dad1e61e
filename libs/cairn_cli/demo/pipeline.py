"""The demo's pipeline step: an event starts a user pipeline; the same event again hits the cache.

`cairn demo --pipeline` defines process -> train -> evaluate -> condition -> register, adds a
trigger on `DatasetIngested` for the demo's training set, publishes that event on the bus, and
follows the execution's DAG live; then publishes it again, and the second execution is served from
the step cache (only the registration, which is idempotent, is asked for again).
"""

from __future__ import annotations

import time
from typing import Any

from cairn.bus import EventProducer
from cairn.contracts.events import DatasetIngested
from cairn.errors import Conflict, InvalidInput, Unavailable
from cairn.settings import CairnSettings
from cairn.store import open_store
from cairn_sdk import Client
from cairn_sdk.pipelines import Pipeline
from rich.console import Console

from cairn_cli.demo.data import LABEL

PIPELINE = "credit-risk-pipeline"
GROUP = "credit-risk-pipeline"
SCRIPT_KEY = "code/demo/evaluate.py"
WAIT_S = 600.0

EVALUATE_SCRIPT = b'''"""Evaluate a model package on held-out rows: its AUC, into metrics.json."""
import csv, json, os, sys
from pathlib import Path

import numpy as np
from cairn.artifacts import load_model
from cairn.settings import CairnSettings
from cairn.store import open_store

model = load_model(open_store(settings=CairnSettings()), sys.argv[sys.argv.index("--model") + 1])
folder = Path(os.environ["SM_PROCESSING_INPUT_VALIDATION"])
rows = [row for path in sorted(folder.rglob("*.csv")) for row in csv.DictReader(path.open())]
label = sys.argv[sys.argv.index("--label") + 1]
features = [column for column in rows[0] if column != label]
scores = np.asarray(model.predict(model.encode_rows([[row[f] for f in features] for row in rows])))
positive = np.array([int(row[label]) == 1 for row in rows])
ranks = np.empty(len(scores))
ranks[scores.argsort()] = np.arange(1, len(scores) + 1)
n1, n0 = int(positive.sum()), int((~positive).sum())
auc = (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)  # Mann-Whitney U
root = Path(os.environ["CAIRN_PROCESSING_ROOT"])
(root / "metrics.json").write_text(json.dumps({"auc": float(auc), "rows": len(rows)}))
'''


def credit_pipeline(name: str, script_key: str, group: str, *, num_round: int = 10) -> Pipeline:
    """process (split) -> train (XGBoost) -> evaluate (AUC script) -> AUC >= min_auc -> register."""
    pipeline = Pipeline(name, parameters={"dataset": "dataset://credit-risk-train@latest"})
    min_auc = pipeline.parameter("min_auc", 0.6)
    process = pipeline.processing(
        "process",
        builtin="train-validation-split",
        inputs=[{"input_name": "data", "source": pipeline.param("dataset")}],
        outputs=[{"output_name": "train"}, {"output_name": "validation"}],
        arguments=["--validation-fraction", "0.25"],
        cache=True,
    )
    train = pipeline.training(
        "train",
        algorithm="xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": num_round, "max_depth": 3},
        input_channels=[
            {"name": "train", "uri": process.outputs["train"], "label_column": LABEL},
            {"name": "validation", "uri": process.outputs["validation"], "label_column": LABEL},
        ],
        retry={"exception_types": ["internal"], "max_attempts": 2, "interval_s": 2},
        cache="P30D",
    )
    evaluate = pipeline.processing(
        "evaluate",
        entry_point=script_key,
        inputs=[{"input_name": "validation", "source": process.outputs["validation"]}],
        arguments=["--model", train.model_artifact, "--label", LABEL],
        cache=True,
    )
    register = pipeline.register_model(
        "register",
        model_package_group=group,
        artifact_uri=train.model_artifact,
        training_job=train.job_name,
        metrics={"auc": evaluate.metrics["auc"]},
        description="registered by the demo pipeline",
    )
    fail = pipeline.fail("too-weak", error_message="the model's AUC is below min_auc")
    pipeline.condition(
        "good-enough",
        evaluate.metrics["auc"] >= min_auc,
        if_steps=[register],
        else_steps=[fail],
    )
    return pipeline


async def publish_ingested(settings: CairnSettings, dataset: dict[str, Any]) -> str:
    """`DatasetIngested` for the demo's training set, as any Kafka client may publish it."""
    name, version = dataset["name"], dataset["version"]
    event = DatasetIngested(
        dataset_name=name,
        version=version,
        uri=f"dataset://{name}@{version}",
        location=f"datasets/{name}/{version}/data/",
        sha256=dataset["sha256"],
        row_count=dataset["row_count"],
        columns=dataset["columns"],
        created=False,
    )
    async with EventProducer(settings, source="cairn-demo") as producer:
        envelope = await producer.publish(event)
    return str(envelope.event_id)


def _next_execution(client: Client, seen: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        for execution in client.list_pipeline_executions(PIPELINE):
            if execution["execution_id"] not in seen:
                return execution
        if time.monotonic() > deadline:
            raise Unavailable("the trigger started no execution")
        time.sleep(0.3)


def run_pipeline_step(
    client: Client,
    console: Console,
    summary: dict[str, Any],
    trail_settings: CairnSettings | None,
    store_url: str | None,
) -> dict[str, Any]:
    """Define, trigger by event, follow; trigger again and show the cache hits."""
    import asyncio

    from cairn_cli.pipelines_cmd import dag_view, watch

    if trail_settings is None or store_url is None:
        raise Unavailable("--pipeline runs on the embedded platform (it needs Kafka and the store)")
    open_store(store_url).put_bytes(SCRIPT_KEY, EVALUATE_SCRIPT, content_type="text/x-python")
    definition = credit_pipeline(PIPELINE, SCRIPT_KEY, GROUP).to_dict()
    try:
        client.create_pipeline(definition)
        console.print(f"   pipeline {PIPELINE} created")
    except Conflict:
        version = client.update_pipeline(PIPELINE, definition)["version"]
        console.print(f"   pipeline {PIPELINE} updated to version {version}")
    triggers = [t for t in client.list_pipeline_triggers() if t["pipeline_name"] == PIPELINE]
    if not triggers:
        client.add_pipeline_trigger(
            PIPELINE,
            on="DatasetIngested",
            where='data.dataset_name == "credit-risk-train"',
            parameters={"dataset": "{data.uri}"},
            trigger_name="credit-risk-on-ingest",
        )
    console.print('   trigger: DatasetIngested where data.dataset_name == "credit-risk-train"')
    name, _, version = summary["datasets"]["train"].removeprefix("dataset://").partition("@")
    dataset = client._json("GET", "ingest", f"/datasets/{name}/{version}")
    runs: list[dict[str, Any]] = []
    seen = {e["execution_id"] for e in client.list_pipeline_executions(PIPELINE)}
    for attempt in ("first run", "same event again: served from the cache"):
        asyncio.run(publish_ingested(trail_settings, dataset))
        console.print(f"   published DatasetIngested ({attempt})")
        execution = _next_execution(client, seen)
        seen.add(execution["execution_id"])
        done = watch(client, execution["execution_id"], as_json=False)
        console.line()  # the live view draws on its own console: start ours on a fresh line
        if done["status"] != "Succeeded":
            console.print(dag_view(done))
            raise InvalidInput(f"pipeline execution {done['status']}: {done.get('failure_reason')}")
        runs.append(done)
    hits = [step["name"] for step in runs[1]["steps"] if step["cache_hit"]]
    console.print(f"   second run: cache hits for {', '.join(hits)}")
    return {
        "pipeline": PIPELINE,
        "executions": [run["execution_id"] for run in runs],
        "cache_hits": hits,
    }
