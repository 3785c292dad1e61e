"""The agent's folder: captured samples survive a restart and are uploaded once, in batches."""

from __future__ import annotations

from pathlib import Path

from cairn_edge.store import AgentFolder, AgentState


def test_captures_survive_a_restart_and_close_into_one_batch(tmp_path: Path) -> None:
    first = AgentFolder(tmp_path)
    for index in range(3):
        first.capture({"captureData": {}, "eventMetadata": {"n": index}})
    restarted = AgentFolder(tmp_path)  # a new process on the same folder
    assert restarted.captured_lines() == 3
    restarted.close_batch()
    restarted.capture({"captureData": {}, "eventMetadata": {"n": 3}})
    [batch] = restarted.pending_batches()
    assert len(batch.read_text().splitlines()) == 3
    assert restarted.captured_lines() == 4


def test_state_is_replaced_whole(tmp_path: Path) -> None:
    folder = AgentFolder(tmp_path)
    assert folder.load_state() == AgentState()
    state = AgentState(revision=4, running="p-2", running_version=(2, 1), previous=["p-1"])
    folder.save_state(state)
    assert AgentFolder(tmp_path).load_state() == state
    assert not list(tmp_path.glob(".state.json.*"))
