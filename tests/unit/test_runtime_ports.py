"""A service keeps its port across `cairn down` / `cairn up` of one home, when the port is free."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cairn.runtime.broker import free_port
from cairn.runtime.ports import pick_port, ports_path, read_ports, remember_ports

HOST = "127.0.0.1"


@contextmanager
def listening() -> Iterator[int]:
    """A port something listens on, for as long as the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((HOST, 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_remembered_ports_round_trip_and_merge(tmp_path: Path) -> None:
    remember_ports(tmp_path, {"gateway": 8080, "trainer": 41001})
    remember_ports(tmp_path, {"trainer": 41002, "_broker": 39092})

    assert read_ports(tmp_path) == {"gateway": 8080, "trainer": 41002, "_broker": 39092}
    assert [p.name for p in tmp_path.iterdir()] == ["ports.json"]  # no temporary file left


def test_missing_or_corrupt_ports_file_remembers_nothing(tmp_path: Path) -> None:
    assert read_ports(tmp_path) == {}
    ports_path(tmp_path).write_text("{not json")
    assert read_ports(tmp_path) == {}
    ports_path(tmp_path).write_text('{"trainer": "x", "gateway": 70000, "registry": 41000}')
    assert read_ports(tmp_path) == {"registry": 41000}


def test_a_free_remembered_port_is_taken_again() -> None:
    remembered = free_port(HOST)
    assert pick_port(HOST, remembered, None) == remembered


def test_a_busy_remembered_port_falls_back_to_the_declared_one_then_any() -> None:
    declared = free_port(HOST)
    with listening() as busy:
        assert pick_port(HOST, busy, declared) == declared
        with listening() as also_busy:
            chosen = pick_port(HOST, busy, also_busy)
    assert chosen not in (busy, also_busy)
