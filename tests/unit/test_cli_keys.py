"""`cairn keys create | list | revoke` and `cairn audit` against a real kernel app over HTTP.

The CLI finds its credential the way a user's does: CAIRN_API_KEY, else `<home>/credentials.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.auth.credentials import save_home_credential
from cairn.service import Service
from cairn.store.memory import InMemoryObjectStore
from cairn_cli import app
from typer.testing import CliRunner

from tests.support.auth import auth_settings, token_for
from tests.support.http_server import served_in_thread

runner = CliRunner()


def without_lifespan(service: Service) -> Any:
    """The service's HTTP app with start-up skipped: no broker is needed to answer routes."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await service.api(scope, receive, send)
            return
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    return asgi


class Platform:
    def __init__(self, service: Service, url: str, home: Path, admin: str) -> None:
        self.service = service
        self.url = url
        self.home = home
        self.admin = admin

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        wide = {"COLUMNS": "240", **(env or {})}  # rich tables unwrapped
        return runner.invoke(app, [*args, "--target", self.url, "--home", str(self.home)], env=wide)

    def status_with(self, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{self.url}/admin/keys", headers=headers, timeout=5).status_code


@pytest.fixture()
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A kernel service on a real port; the admin credential saved in the user's home."""
    for name in ("CAIRN_API_KEY", "CAIRN_ACCESS_KEY", "CAIRN_TARGET"):
        monkeypatch.delenv(name, raising=False)
    settings = auth_settings(home=tmp_path / "service")
    service = Service("gateway", settings=settings, store=InMemoryObjectStore())
    home = tmp_path / "home"
    admin = token_for(service.store, settings, ["admin"], name="root")
    save_home_credential(home, admin, name="root")
    with served_in_thread(without_lifespan(service), "kernel") as url:
        yield Platform(service, url, home, admin)


def test_a_narrow_key_is_made_shown_once_listed_without_secret_and_revoked(
    platform: Platform,
) -> None:
    made = platform.cli(
        "keys", "create", "--name", "scorer", "--scope", "invoke", "--endpoint", "credit-risk",
        "--expires-in", "30d", "--description", "batch scoring", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    key = json.loads(made.output)
    assert key["token"] == f"{key['key_id']}:{key['secret']}"
    assert (key["name"], key["scopes"], key["endpoints"]) == ("scorer", ["invoke"], ["credit-risk"])
    expires = datetime.fromisoformat(key["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    assert platform.status_with(key["token"]) == 403  # invoke only: no key listing

    listed = platform.cli("keys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert key["secret"] not in listed.output and "secret" not in listed.output
    mine = {k["key_id"]: k for k in json.loads(listed.output)}[key["key_id"]]
    assert mine["status"] == "Active"
    table = platform.cli("keys", "list")
    assert key["key_id"] in table.output and "credit-risk" in table.output

    revoked = platform.cli("keys", "revoke", key["key_id"])
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked {key['key_id']}" in revoked.output
    relisted = {k["key_id"]: k for k in json.loads(platform.cli("keys", "list", "--json").output)}
    assert relisted[key["key_id"]]["status"] == "Inactive"


def test_the_token_is_printed_once_with_how_to_use_it(platform: Platform) -> None:
    made = platform.cli("keys", "create", "--scope", "read", "--scope", "train")

    assert made.exit_code == 0, made.output
    token = made.output.split("token (shown only now):", 1)[1].split()[0]
    assert platform.status_with(token) == 403  # a real key, without admin
    assert f"export CAIRN_API_KEY='{token}'" in made.output


def test_audit_lists_who_made_and_revoked_keys_filtered_by_principal_and_time(
    platform: Platform,
) -> None:
    key = json.loads(platform.cli("keys", "create", "--scope", "read", "--json").output)
    assert platform.cli("keys", "revoke", key["key_id"]).exit_code == 0

    answer = platform.cli("audit", "--since", "1h", "--principal", "root", "--json")
    assert answer.exit_code == 0, answer.output
    records = json.loads(answer.output)
    actions = {record["action"]: record for record in records}
    assert {"key.create", "key.revoke"} <= set(actions)
    revoke = actions["key.revoke"]
    assert revoke["principal"] == "root" and revoke["outcome"] == "success"
    assert revoke["resource"] == f"/admin/keys/{key['key_id']}"
    assert revoke["key_id"] == platform.admin.split(":")[0]

    nobody = platform.cli("audit", "--principal", "nobody", "--json")
    assert json.loads(nobody.output) == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert json.loads(platform.cli("audit", "--since", future, "--json").output) == []
    shown = platform.cli("audit", "--action", "key.revoke")
    assert "key.revoke" in shown.output and "key.create" not in shown.output


def test_cairn_api_key_wins_over_the_homes_credential(platform: Platform) -> None:
    reader = token_for(platform.service.store, platform.service.settings, ["read"])

    answer = platform.cli("keys", "list", env={"CAIRN_API_KEY": reader})

    assert answer.exit_code == 1
    assert "403" in answer.output


def test_without_any_credential_the_service_says_401(platform: Platform, tmp_path: Path) -> None:
    answer = runner.invoke(
        app, ["keys", "list", "--target", platform.url, "--home", str(tmp_path / "empty")]
    )

    assert answer.exit_code == 1
    assert "401" in answer.output


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["--scope", "root"], "--scope", "unknown scope 'root'"),
        (["--expires-in", "soon"], "--expires-in", "not a duration"),
        (["--scope", "read", "--endpoint", "e"], "--endpoint", "add --scope invoke"),
    ],
)
def test_bad_key_options_exit_2_naming_the_flag(args: list[str], flag: str, words: str) -> None:
    answer = runner.invoke(app, ["keys", "create", *args, "--target", "http://127.0.0.1:9"])

    assert answer.exit_code == 2, answer.output
    flat = " ".join(answer.output.replace("│", " ").split())
    assert flag in flat and words in flat, flat


def test_audit_since_that_is_no_time_exits_2() -> None:
    answer = runner.invoke(app, ["audit", "--since", "yesterday", "--target", "http://127.0.0.1:9"])

    assert answer.exit_code == 2
    assert "--since" in answer.output


def test_a_key_for_one_endpoint_shows_the_invoke_command_that_uses_it(
    platform: Platform,
) -> None:
    made = platform.cli("keys", "create", "--scope", "invoke", "--endpoint", "credit-risk")

    assert made.exit_code == 0, made.output
    token = made.output.split("token (shown only now):", 1)[1].split()[0]
    assert f"cairn invoke credit-risk --access-key '{token}'" in made.output
