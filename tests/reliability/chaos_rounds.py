"""A seeded schedule of chaos rounds, how one round runs, and the run's summary.

A round starts one piece of the flow through the CLI with `--wait`, waits for one of the piece's
sentinel events, lets a random delay pass (bounded by how long the piece lasts), kill -9s the
round's victim, lets the CLI finish, waits for the supervisor to bring the victim back, and
checks what the CLI said against the truth and that every effect happened exactly once.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.reliability.chaos_flows import PIECES, Piece
from tests.reliability.chaos_platform import HANG_GUARD_S, SERVICES, ChaosPlatform, wait_for

# The piece of the flow each service's death matters to most (the CI variant's pairs).
FLOW_OF = {
    "trainer": "train",
    "registry": "train",
    "deployer": "deploy",
    "gateway": "deploy",
    "monitor": "deploy",
    "batch": "transform",
    "tuner": "tune",
}


@dataclass(frozen=True)
class Round:
    index: int
    flow: str
    victim: str
    sentinel: str
    delay_s: float

    @property
    def name(self) -> str:
        return f"r{self.index:02d}-{self.flow}-{self.victim}"


def schedule(seed: int, rounds: int | None = None) -> list[Round]:
    """`rounds` random (piece, victim) rounds; None: one round per service, on its own piece."""
    rng = random.Random(seed)
    if rounds is None:
        pairs = [(FLOW_OF[victim], victim) for victim in SERVICES]
        rng.shuffle(pairs)
    else:
        pairs = [(rng.choice(list(PIECES)), rng.choice(SERVICES)) for _ in range(rounds)]
    planned = []
    for index, (flow, victim) in enumerate(pairs):
        piece = PIECES[flow]
        sentinel, delay_s = rng.choice(piece.sentinels), round(rng.uniform(0, piece.window_s), 2)
        if rounds is None and victim == "trainer":
            # Right after the job's first progress: a worker dying mid-job, for sure, every run.
            sentinel, delay_s = "TrainingJobProgressed", 0.0
        planned.append(Round(index, flow, victim, sentinel, delay_s))
    return planned


@dataclass
class Outcome:
    round: str
    variant: str
    sentinel: str
    delay_s: float
    victim: str
    killed_pid: int
    mid_way: bool
    cli_rc: int
    status: str
    wall_s: float


@dataclass
class ChaosRun:
    """The platform, the seed, every round's piece (checked again at the end) and outcome."""

    platform: ChaosPlatform
    seed: int
    started: float = field(default_factory=time.monotonic)
    pieces: dict[str, Piece] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def play(self, planned: Round, variant: str) -> Outcome:
        """Run one round; the replay hint (seed, round) is in every failure."""
        try:
            outcome = self._play(planned, variant)
        except BaseException as error:
            self.failed.append(planned.name)
            raise AssertionError(
                f"round {planned.name} (CAIRN_CHAOS_SEED={self.seed}) failed: {error}"
            ) from error
        self.outcomes.append(outcome)
        return outcome

    def _play(self, planned: Round, variant: str) -> Outcome:
        platform = self.platform
        wait_for("every service healthy", platform.all_healthy, HANG_GUARD_S, platform.log)
        piece = PIECES[planned.flow](platform, planned.index, planned.victim)
        self.pieces[planned.name] = piece
        piece.prepare()
        began = time.monotonic()
        process = platform.spawn(*piece.command())
        try:

            def under_way() -> bool:
                # A CLI that already succeeded is no reason to stop: its sentinel is on its way.
                failed = process.poll() not in (None, 0)
                return piece.sentinel_seen(planned.sentinel) or failed

            sentinel = f"{planned.sentinel} of {piece.name}"
            wait_for(sentinel, under_way, HANG_GUARD_S, platform.log, interval_s=0.05)
            assert piece.sentinel_seen(planned.sentinel), (
                f"{piece.name} ended before {planned.sentinel}: {process.communicate()}"
            )
            time.sleep(planned.delay_s)  # the random moment of the kill, not a wait for an effect
            killed_pid = platform.kill(planned.victim)
            mid_way = piece.mid_way()
            stdout, stderr = process.communicate(timeout=HANG_GUARD_S)
            piece.at_return()
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        platform.back_after(planned.victim, killed_pid)
        status = piece.check(result)
        return Outcome(
            round=planned.name,
            variant=variant,
            sentinel=planned.sentinel,
            delay_s=planned.delay_s,
            victim=planned.victim,
            killed_pid=killed_pid,
            mid_way=mid_way,
            cli_rc=result.returncode,
            status=status,
            wall_s=round(time.monotonic() - began, 1),
        )

    def recheck(self) -> None:
        """Every round's effects once more, after the last round: nothing came twice late."""
        for name, piece in self.pieces.items():
            if name not in self.failed:
                piece.check_effects()

    def summary(self) -> dict[str, Any]:
        survived = Counter(o.victim for o in self.outcomes)
        mid_way = Counter(o.victim for o in self.outcomes if o.mid_way)
        return {
            "suite": "chaos",
            "seed": self.seed,
            "variants": sorted({o.variant for o in self.outcomes}),
            "rounds": len(self.outcomes) + len(self.failed),
            "rounds_passed": len(self.outcomes),
            "rounds_failed": self.failed,
            "kills": self.platform.kills,
            "kills_survived": {name: survived[name] for name in SERVICES},
            "kills_mid_way": {name: mid_way[name] for name in SERVICES},
            "wall_s": round(time.monotonic() - self.started, 1),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "outcomes": [asdict(o) for o in self.outcomes],
        }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as a few printable lines."""
    kills = ", ".join(
        f"{name} {summary['kills_survived'][name]}/{summary['kills'][name]}" for name in SERVICES
    )
    return [
        f"chaos: seed {summary['seed']} (CAIRN_CHAOS_SEED to replay), "
        f"{summary['rounds_passed']}/{summary['rounds']} rounds passed in {summary['wall_s']}s",
        f"chaos: kills survived/made: {kills}",
        "chaos: kills landing mid-way: "
        + ", ".join(f"{n} {c}" for n, c in summary["kills_mid_way"].items() if c),
    ]
