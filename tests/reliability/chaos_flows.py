"""The pieces of the demo flow a chaos round runs through the CLI, and what each must prove.

A piece knows its CLI command (always `--wait --json`), the events that say it is under way (the
kill's sentinels), whether it is still mid-way, and its checks: the CLI's exit code and answer
match the true final state read from the services, and each effect happened exactly once.
`check_effects` only reads events and documents, so the suite runs it again after the last round,
when a late duplicate would have had every chance to show up.
"""

from __future__ import annotations

import functools
import json
import subprocess
from typing import Any, ClassVar

import pandas as pd

from tests.reliability.chaos_platform import (
    HANG_GUARD_S,
    ChaosPlatform,
    EventLog,
    distinct,
    wait_for,
)
from tests.support.trainer_data import credit_frame

TRAIN_DATA = "data/chaos/train.csv"
VALIDATION_DATA = "data/chaos/validation.csv"
SCORE_PREFIX = "data/chaos-score/"
SCORE_ROWS = 20_000
SERVING_GROUP = "chaos-serving"
ENDPOINT = "chaos-endpoint"
OUTCOMES = ("TrainingJobCompleted", "TrainingJobFailed", "TrainingJobStopped")


def put_data(platform: ChaosPlatform) -> None:
    """Training, validation and scoring data in the store (scoring: no label, no header)."""
    frame = credit_frame(rows=20_000, seed=7)
    platform.put_csv(TRAIN_DATA, frame)
    platform.put_csv(VALIDATION_DATA, credit_frame(rows=2_000, seed=8))
    scoring = credit_frame(rows=SCORE_ROWS, seed=9).drop(columns=["default"])
    platform.put_csv(SCORE_PREFIX + "score.csv", scoring, header=False)


def serve_two_versions(platform: ChaosPlatform) -> None:
    """Versions 1 and 2 of the serving group, 1 approved and served by the endpoint."""
    for version in (1, 2):
        job = f"{SERVING_GROUP}-{version}"
        platform.send(
            "POST",
            "trainer",
            "/training-jobs",
            {
                "job_name": job,
                "algorithm": "xgboost",
                "hyperparameters": {"num_round": 15 * version},
                "input_channels": [{"name": "train", "uri": TRAIN_DATA, "label_column": "default"}],
                "registration": {"model_package_group": SERVING_GROUP},
            },
        )
        registered = functools.partial(
            events_of(platform).of, "ModelPackageRegistered", training_job=job
        )
        wait_for(f"the registration of {job}", registered, HANG_GUARD_S, platform.log)
    approval = {"status": "Approved", "reason": "chaos suite setup"}
    platform.send(
        "POST", "registry", f"/model-package-groups/{SERVING_GROUP}/versions/1/approval", approval
    )
    variant = {"variant_name": "AllTraffic", "model_package_group": SERVING_GROUP}
    endpoint = {"endpoint_name": ENDPOINT, "production_variants": [variant | {"model_version": 1}]}
    platform.send("POST", "deployer", "/endpoints", endpoint)
    wait_for("the endpoint served", lambda: served_revision(platform), HANG_GUARD_S, platform.log)


def events_of(platform: ChaosPlatform) -> EventLog:
    assert platform.events is not None, "the platform is not started"
    return platform.events


def served_revision(platform: ChaosPlatform, wait: bool = True) -> int | None:
    """The endpoint's revision the gateway serves now (None while it serves none, or without
    `wait` when the gateway cannot answer now)."""
    read = platform.get if wait else platform.get_now
    for endpoint in read("gateway", "/endpoints") or []:
        if endpoint["endpoint_name"] == ENDPOINT:
            return int(endpoint["revision"])
    return None


def cli_answer(result: subprocess.CompletedProcess[str]) -> dict[str, Any] | None:
    """The document a `--json` command printed last, None when it printed none."""
    text = result.stdout.strip()
    return json.loads(text) if text.startswith("{") else None


class Piece:
    """One piece of the flow in one round; subclasses fill in the command and the checks."""

    flow: ClassVar[str]
    sentinels: ClassVar[tuple[str, ...]]
    window_s: ClassVar[float]  # a kill up to this long after the sentinel still lands mid-way

    def __init__(self, platform: ChaosPlatform, index: int, victim: str) -> None:
        self.platform = platform
        self.index = index
        self.victim = victim
        self.name = f"chaos-{index:02d}-{self.flow}"

    @property
    def events(self) -> EventLog:
        return events_of(self.platform)

    def prepare(self) -> None:
        """What the piece needs before its command starts (read counters, approve)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def sentinel_seen(self, sentinel: str) -> bool:
        raise NotImplementedError

    def mid_way(self) -> bool:
        """Whether the kill, just made, landed before the piece was done (read from the store:
        the victim may own the document)."""
        raise NotImplementedError

    def at_return(self) -> None:
        """Note what may change soon, right after the CLI returned (before the victim is back)."""

    def check(self, result: subprocess.CompletedProcess[str]) -> str:
        """Assert that the CLI told the truth and every effect happened once; the true status."""
        raise NotImplementedError

    def check_effects(self) -> None:
        raise NotImplementedError

    def cli_told_the_truth(
        self, result: subprocess.CompletedProcess[str], status: str, succeeded: bool
    ) -> None:
        """Exit 0 exactly when the piece succeeded, and the answer printed is the true one."""
        said = f"rc={result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr}"
        assert (result.returncode == 0) == succeeded, f"the CLI lied: truth {status}; {said}"
        answer = cli_answer(result)
        assert answer is not None and answer["status"] == status, f"truth {status}; {said}"


class Train(Piece):
    """`cairn train --register --wait`: one job, one outcome, one model version."""

    flow = "train"
    sentinels = ("TrainingJobStarted", "TrainingJobProgressed")
    window_s = 3.0

    def __init__(self, platform: ChaosPlatform, index: int, victim: str) -> None:
        super().__init__(platform, index, victim)
        self.group = f"chaos-train-{index:02d}"
        # Long enough (seconds on 2 cores) for a trainer to die in the middle of it.
        self.rounds = 400 if victim == "trainer" else 40
        self.killed_mid_job = False

    def command(self) -> list[str]:
        hyperparameters = [f"num_round={self.rounds}", "max_depth=6", "eta=0.1", "progress_every=5"]
        return [
            "train", self.name, "--channel", f"train={TRAIN_DATA}", "--label", "default",
            *(arg for value in hyperparameters for arg in ("-p", value)),
            "--register", self.group, "--wait", "--json",
        ]  # fmt: skip

    def sentinel_seen(self, sentinel: str) -> bool:
        return bool(self.events.of(sentinel, job_name=self.name))

    def mid_way(self) -> bool:
        job = self.platform.document(f"trainer/jobs/{self.name}.json")
        mid = job["status"] in ("Pending", "InProgress")
        self.killed_mid_job = mid and self.victim == "trainer"
        return bool(mid)

    def check(self, result: subprocess.CompletedProcess[str]) -> str:
        job = self.platform.get("trainer", f"/training-jobs/{self.name}")
        self.cli_told_the_truth(result, job["status"], job["status"] == "Completed")
        assert job["status"] == "Completed", f"the kill cost the job: {job.get('failure_reason')}"
        started = self.events.of("TrainingJobStarted", job_name=self.name)
        assert sorted({e["data"]["attempt"] for e in started}) == list(range(1, job["attempt"] + 1))
        if self.killed_mid_job:  # the killed worker's attempt, then its replacement's takeover
            assert job["attempt"] >= 2
            assert len({e["data"]["worker_id"] for e in started}) == job["attempt"]
        wait_for(
            f"the registration of {self.name}",
            lambda: self.events.of("ModelPackageRegistered", model_package_group=self.group),
            HANG_GUARD_S,
            self.platform.log,
        )
        self.check_effects()
        return str(job["status"])

    def check_effects(self) -> None:
        completed = distinct(self.events.of("TrainingJobCompleted", job_name=self.name))
        assert [c["artifact_uri"] for c in completed] == [f"models/{self.name}/"], completed
        for other in OUTCOMES[1:]:
            assert not self.events.of(other, job_name=self.name), other
        path = f"/model-package-groups/{self.group}/versions"
        versions = self.platform.get("registry", path)
        assert [v["lineage"]["training_job"] for v in versions] == [self.name], versions
        registered = distinct(
            self.events.of("ModelPackageRegistered", model_package_group=self.group)
        )
        assert [r["version"] for r in registered] == [1], registered
        manifests = list((self.platform.store / "models").glob(f"{self.name}*/manifest.json"))
        assert [m.parent.name for m in manifests] == [self.name]


class Deploy(Piece):
    """Approve -> `cairn endpoints update --wait`: each revision made and served once."""

    flow = "deploy"
    sentinels = ("EndpointUpdated",)
    window_s = 1.5
    # Rollouts by round, with the revisions each makes: at once; a canary's first step, then all
    # traffic after the bake time; two linear steps of 50%.
    ROLLOUTS: ClassVar[list[tuple[list[str], int]]] = [
        (["--rollout", "all_at_once"], 1),
        (["--rollout", "canary", "--canary-percent", "50", "--bake-time", "1"], 2),
        (["--rollout", "linear", "--linear-step-percent", "50", "--bake-time", "1"], 2),
    ]

    def __init__(self, platform: ChaosPlatform, index: int, victim: str) -> None:
        super().__init__(platform, index, victim)
        self.rollout, self.revisions = self.ROLLOUTS[index % len(self.ROLLOUTS)]

    def prepare(self) -> None:
        endpoint = self.platform.get("deployer", f"/endpoints/{ENDPOINT}")
        self.before = int(endpoint["revision"])
        self.rollbacks_before = endpoint.get("last_rollback")
        current = endpoint["production_variants"][0]["model_version"]
        self.target = 2 if current == 1 else 1
        path = f"/model-package-groups/{SERVING_GROUP}/versions/{self.target}"
        if self.platform.get("registry", path)["approval_status"] != "Approved":
            approved = self.platform.cli("models", "approve", SERVING_GROUP, str(self.target))
            assert approved.returncode == 0, approved.stderr

    def command(self) -> list[str]:
        return [
            "endpoints", "update", ENDPOINT,
            "--variant", f"AllTraffic={SERVING_GROUP}:{self.target}", *self.rollout,
            "--wait", "--json",
        ]  # fmt: skip

    def updates(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events.of("EndpointUpdated", endpoint_name=ENDPOINT)
            if e["data"]["revision"] > self.before
        ]

    def sentinel_seen(self, sentinel: str) -> bool:
        return bool(self.updates())

    def mid_way(self) -> bool:
        endpoint = self.platform.document(f"deployer/endpoints/{ENDPOINT}.json")
        return bool(endpoint["status"] == "Updating")

    def at_return(self) -> None:
        """The revision the gateway serves as the CLI returns (None when it cannot answer now,
        e.g. killed after the CLI's last look). Revisions only grow, so one older than the CLI
        reported now was older when it returned as well."""
        self.served_at_return = served_revision(self.platform, wait=False)

    def check(self, result: subprocess.CompletedProcess[str]) -> str:
        endpoint = self.platform.get("deployer", f"/endpoints/{ENDPOINT}")
        served = [v["model_version"] for v in endpoint["production_variants"]]
        succeeded = endpoint["status"] == "InService" and served == [self.target]
        self.cli_told_the_truth(result, endpoint["status"], succeeded)
        answer = cli_answer(result)
        assert answer is not None and answer["revision"] == endpoint["revision"], answer
        # "InService and served": the gateway served that revision, not an older one, already.
        if self.served_at_return is not None:
            assert self.served_at_return == endpoint["revision"], "--wait returned too early"
        assert served_revision(self.platform) == endpoint["revision"]
        assert endpoint.get("last_rollback") == self.rollbacks_before, endpoint["last_rollback"]
        self.after = int(endpoint["revision"])
        assert self.after == self.before + self.revisions, (self.before, self.after)
        wait_for(
            f"the baseline of version {self.target}",
            lambda: self.events.of(
                "BaselineComputed", model_package_group=SERVING_GROUP, model_version=self.target
            ),
            HANG_GUARD_S,
            self.platform.log,
        )
        self.check_effects()
        return str(endpoint["status"])

    def check_effects(self) -> None:
        made = [u for u in distinct(self.updates()) if self.before < u["revision"] <= self.after]
        # Each revision announced once (a re-announcement repeats the same state).
        assert sorted(u["revision"] for u in made) == list(range(self.before + 1, self.after + 1))
        baselines = distinct(
            self.events.of(
                "BaselineComputed", model_package_group=SERVING_GROUP, model_version=self.target
            )
        )
        assert len(baselines) == 1, baselines


class Transform(Piece):
    """`cairn transform create --wait`: every input row scored once, one outcome."""

    flow = "transform"
    sentinels = ("TransformJobStarted", "TransformShardCompleted")
    window_s = 1.5

    def command(self) -> list[str]:
        return [
            "transform", "create", self.name, "--model", f"{SERVING_GROUP}:1",
            "--input", SCORE_PREFIX, "--output", f"outputs/chaos/{self.name}/",
            "--shard-size-mb", "0.1", "--wait", "--json",
        ]  # fmt: skip

    def sentinel_seen(self, sentinel: str) -> bool:
        return bool(self.events.of(sentinel, job_name=self.name))

    def mid_way(self) -> bool:
        job = self.platform.document(f"batch/jobs/{self.name}.json")
        return bool(job["status"] not in ("Completed", "Failed", "Stopped"))

    def check(self, result: subprocess.CompletedProcess[str]) -> str:
        job = self.platform.get("batch", f"/transform-jobs/{self.name}")
        self.cli_told_the_truth(result, job["status"], job["status"] == "Completed")
        assert job["status"] == "Completed", f"the kill cost the job: {job.get('failure_reason')}"
        assert (job["records_out"], job["records_failed"]) == (SCORE_ROWS, 0), job
        self.check_effects()
        return str(job["status"])

    def check_effects(self) -> None:
        outputs = list((self.platform.store / "outputs" / "chaos" / self.name).glob("*.out"))
        rows = sum(len(pd.read_csv(path, header=None)) for path in outputs)
        assert rows == SCORE_ROWS, f"{rows} rows scored in {outputs}, not {SCORE_ROWS}"
        completed = distinct(self.events.of("TransformJobCompleted", job_name=self.name))
        assert len(completed) == 1, completed
        assert not self.events.of("TransformJobFailed", job_name=self.name)


class Tune(Piece):
    """`cairn tune create --wait` with 2 trials: 2 training jobs, one outcome, one version."""

    flow = "tune"
    sentinels = ("HyperParameterTuningJobStarted", "TrainingJobStarted", "TuningTrialCompleted")
    window_s = 1.5
    trials = 2

    def __init__(self, platform: ChaosPlatform, index: int, victim: str) -> None:
        super().__init__(platform, index, victim)
        self.group = f"chaos-tune-{index:02d}"

    def command(self) -> list[str]:
        return [
            "tune", "create", self.name,
            "--channel", f"train={TRAIN_DATA}", "--channel", f"validation={VALIDATION_DATA}",
            "--label", "default", "--range", "eta=0.05:0.5:log", "--range", "max_depth=2:6:int",
            "-p", "num_round=30", "--strategy", "random", "--max-jobs", str(self.trials),
            "--max-parallel", "1", "--seed", str(self.index), "--register", self.group,
            "--wait", "--json",
        ]  # fmt: skip

    def sentinel_seen(self, sentinel: str) -> bool:
        if sentinel == "TrainingJobStarted":
            return bool(self.events.of(sentinel, job_name=f"{self.name}-0"))
        return bool(self.events.of(sentinel, tuning_job_name=self.name))

    def mid_way(self) -> bool:
        job = self.platform.document(f"tuner/jobs/{self.name}.json")
        return bool(job["status"] not in ("Completed", "Failed", "Stopped"))

    def check(self, result: subprocess.CompletedProcess[str]) -> str:
        job = self.platform.get("tuner", f"/tuning-jobs/{self.name}")
        # `cairn tune --wait` exits 1 when the tuning job failed (a stopped one is no failure).
        self.cli_told_the_truth(result, job["status"], job["status"] != "Failed")
        assert job["status"] == "Completed", f"the kill cost the tuning job: {job.get('reason')}"
        trials = {t["training_job_name"]: t["status"] for t in job["trials"]}
        assert trials == {f"{self.name}-{n}": "Completed" for n in range(self.trials)}, trials
        wait_for(
            f"the registration of {self.name}'s best",
            lambda: self.events.of("ModelPackageRegistered", model_package_group=self.group),
            HANG_GUARD_S,
            self.platform.log,
        )
        self.check_effects()
        return str(job["status"])

    def check_effects(self) -> None:
        outcome = distinct(
            self.events.of("HyperParameterTuningJobCompleted", tuning_job_name=self.name)
        )
        assert len(outcome) == 1, outcome
        trials = distinct(self.events.of("TuningTrialCompleted", tuning_job_name=self.name))
        assert sorted(t["training_job_name"] for t in trials) == [
            f"{self.name}-{n}" for n in range(self.trials)
        ], trials
        jobs = self.platform.get("trainer", "/training-jobs")["training_jobs"]
        assert sorted(j["job_name"] for j in jobs if j["job_name"].startswith(self.name)) == [
            f"{self.name}-{n}" for n in range(self.trials)
        ]
        for n in range(self.trials):
            completed = distinct(
                self.events.of("TrainingJobCompleted", job_name=f"{self.name}-{n}")
            )
            assert len(completed) == 1, completed
        versions = self.platform.get("registry", f"/model-package-groups/{self.group}/versions")
        assert len(versions) == 1, versions


PIECES: dict[str, type[Piece]] = {piece.flow: piece for piece in (Train, Deploy, Transform, Tune)}
