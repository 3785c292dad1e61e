"""`cairn edge fleets | devices | package | packages | deploy | deployments | agent`."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from cairn_sdk import edge
from rich.console import Console

from cairn_cli.sdk_common import (
    EXIT_SERVICE_ERROR,
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    key_value_table,
    print_json,
    service_errors,
    table,
)

edge_app = typer.Typer(name="edge", help="Edge fleets: packages, staged rollouts, the agent.")
fleets_app = typer.Typer(name="fleets", help="Fleets of devices.", no_args_is_help=True)
devices_app = typer.Typer(name="devices", help="Devices of a fleet.", no_args_is_help=True)
deployments_app = typer.Typer(name="deployments", help="Deployment plans.", no_args_is_help=True)
packages_app = typer.Typer(name="packages", help="Edge packages.", no_args_is_help=True)
edge_app.add_typer(fleets_app)
edge_app.add_typer(devices_app)
edge_app.add_typer(deployments_app)
edge_app.add_typer(packages_app)
FleetOption = Annotated[str, typer.Option("--fleet", "-f", help="The fleet.")]


def _show(document: Any, as_json: bool, title: str) -> None:
    if as_json:
        print_json(document)
    else:
        Console().print(key_value_table(title, document))


@fleets_app.command("create")
def fleets_create(
    name: str,
    description: Annotated[str, typer.Option("--description")] = "",
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Create a fleet (and its ed25519 signing key)."""
    with service_errors(), client_for(target, home) as client:
        _show(edge.create_fleet(client, name, description), as_json, f"Fleet {name}")


@fleets_app.command("list")
def fleets_list(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        found = edge.list_fleets(client)
    if as_json:
        print_json(found)
        return
    rows = [(f["fleet_name"], f["description"], f["created_at"][:19]) for f in found]
    Console().print(table("Fleets", ("fleet", "description", "created"), rows))


@fleets_app.command("describe")
def fleets_describe(
    name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        fleet = edge.describe_fleet(client, name)
    if as_json:
        print_json(fleet)
        return
    Console().print(
        key_value_table(f"Fleet {name}", {k: v for k, v in fleet.items() if k != "devices"})
    )
    _devices_table(fleet["devices"])


def _devices_table(devices: list[dict[str, Any]]) -> None:
    rows = [
        (
            d["device_name"],
            d.get("package_name"),
            d["desired"].get("package_name"),
            d.get("health"),
            d.get("p99_ms") and f"{d['p99_ms']:.2f}",
            d.get("error_count"),
            (d.get("last_heartbeat") or "")[:19],
            (d.get("refusal") or {}).get("reason"),
        )
        for d in devices
    ]
    columns = ("device", "running", "desired", "health", "p99 ms", "errors", "seen", "refusal")
    Console().print(table("Devices", columns, rows))


@devices_app.command("register")
def devices_register(
    device: str,
    fleet: FleetOption,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the agent's credential file.")
    ] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Register a device; its credential (shown once) goes to --out (mode 0600) for the agent."""
    with service_errors(), client_for(target, home) as client:
        registered = edge.register_device(client, fleet, device)
    credential = {k: registered[k] for k in ("fleet_name", "device_name", "token", "public_key")}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(credential, handle)
    if as_json:
        print_json(registered)
    else:
        where = f" -> {out}" if out else f"\ntoken (shown once): {registered['token']}"
        Console().print(f"device [bold]{device}[/] registered in {fleet}{where}")


@devices_app.command("list")
def devices_list(
    fleet: FleetOption,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    with service_errors(), client_for(target, home) as client:
        found = edge.list_devices(client, fleet)
    if as_json:
        print_json(found)
    else:
        _devices_table(found)


@devices_app.command("describe")
def devices_describe(
    device: str,
    fleet: FleetOption,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    with service_errors(), client_for(target, home) as client:
        _show(edge.describe_device(client, fleet, device), as_json, f"Device {fleet}/{device}")


@devices_app.command("deregister")
def devices_deregister(
    device: str,
    fleet: FleetOption,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Remove a device and revoke its credential."""
    with service_errors(), client_for(target, home) as client:
        _show(edge.deregister_device(client, fleet, device), as_json, f"Device {device}")


@edge_app.command("package")
def package(
    model: Annotated[str, typer.Argument(help="GROUP:VERSION of a registered model.")],
    target_arch: Annotated[str, typer.Option("--target", help="linux-x86_64|linux-aarch64")] = (
        "linux-x86_64"
    ),
    package_format: Annotated[
        str | None, typer.Option("--format", help="treelite|onnx|native (default by framework)")
    ] = None,
    tolerance: Annotated[float | None, typer.Option("--tolerance")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    as_json: JsonOption = False,
    url: Annotated[str | None, typer.Option("--url", help="Base URL of every service.")] = None,
    home: HomeOption = None,
) -> None:
    """Compile / export a model for a device target; report size, latency and accuracy."""
    group, sep, version = model.rpartition(":")
    if not sep or not version.isdigit():
        raise typer.BadParameter("GROUP:VERSION, e.g. credit-risk:3", param_hint="MODEL")
    with service_errors(), client_for(url, home) as client:
        created = edge.create_package(
            client, group, int(version), target=target_arch, package_format=package_format,
            tolerance=tolerance,
        )  # fmt: skip
        done = (
            client.wait_for_edge_package(created["package_name"], poll_s=0.5) if wait else created
        )
    if as_json:
        print_json(done)
    elif done["status"] == "Completed":
        Console().print(
            f"[green]{done['package_name']}[/]: {done['format']} for {done['target']}, "
            f"{done['size_bytes']:,} bytes; single-row latency {done['latency_us']:.1f} us "
            f"(original {done['original_latency_us']:.1f} us); max |error| "
            f"{done['max_abs_error']:.2g} <= {done['tolerance']:g}"
        )
    else:
        Console(stderr=True).print(
            f"[red]{done['status']}[/] {done['package_name']}: {done.get('reason')}"
        )
    if done["status"] == "Failed":
        raise typer.Exit(EXIT_SERVICE_ERROR)


@packages_app.command("list")
def packages_list(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        found = edge.list_packages(client)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            p["package_name"],
            p["status"],
            p["format"],
            p["target"],
            p["size_bytes"],
            p.get("latency_us"),
        )
        for p in found
    ]
    Console().print(
        table("Packages", ("package", "status", "format", "target", "bytes", "us"), rows)
    )


@packages_app.command("describe")
def packages_describe(
    name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        _show(edge.describe_package(client, name), as_json, f"Package {name}")


@edge_app.command("deploy")
def deploy(
    plan: str,
    fleet: FleetOption,
    package_name: Annotated[str, typer.Option("--package", "-p")],
    stage: Annotated[
        list[str],
        typer.Option(
            "--stage", help="NAME=devices:d1,d2 | NAME=percent:25, then :bake=SECONDS if its own"
        ),
    ],
    success_threshold: Annotated[str, typer.Option("--success-threshold")] = "100%",
    max_failures: Annotated[str, typer.Option("--max-failures", help="1 or 5%")] = "0",
    bake: Annotated[float, typer.Option("--bake", help="Seconds the gates must hold.")] = 60.0,
    deadline: Annotated[float, typer.Option("--stage-deadline")] = 900.0,
    gate: Annotated[
        list[str] | None,
        typer.Option(
            "--gate", help="error-rate[:0.05] | latency[:ms] | drift[:P_VALUE[:MIN_ROWS]]"
        ),
    ] = None,
    pause_on_failure: Annotated[bool, typer.Option("--pause-on-failure")] = False,
    wait: Annotated[bool, typer.Option("--wait")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Roll a package out to a fleet in stages, with gates and rollback of a failed stage."""
    try:
        threshold = float(success_threshold.rstrip("%"))
    except ValueError:
        raise typer.BadParameter(
            "a percentage, e.g. 95%", param_hint="--success-threshold"
        ) from None
    with service_errors(), client_for(target, home) as client:
        created = edge.create_deployment(
            client, plan, fleet, package_name, stage, success_threshold_pct=threshold,
            max_failures=max_failures, bake_s=bake, stage_deadline_s=deadline, gates=gate or [],
            on_failure="PAUSE" if pause_on_failure else "ROLLBACK_ON_FAILURE",
        )  # fmt: skip
        result = client.wait_for_edge_deployment(plan) if wait else created
    _plan_report(result, as_json)
    if wait and result["status"] != "Completed":
        raise typer.Exit(EXIT_SERVICE_ERROR)


def _plan_report(plan: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(plan)
        return
    Console().print(
        f"plan [bold]{plan['plan_name']}[/]: {plan['status']} {plan.get('reason') or ''}"
    )
    rows = [
        (s["name"], s["status"], ",".join(s["assigned"]), _drift(s.get("drift")), s.get("reason"))
        for s in plan.get("stages", [])
    ]
    Console().print(table("Stages", ("stage", "status", "devices", "drift", "reason"), rows))


def _drift(check: dict[str, Any] | None) -> str:
    """The stage's last drift measurement: its rows, and what drifted."""
    if not check or check.get("problem"):
        return str((check or {}).get("problem") or "")
    drifted = [f["feature"] for f in check["features"] if f["drifted"]]
    verdict = "held" if check["features"] else "too few"
    return f"{check['samples']} rows: " + (", ".join(drifted) + " drifted" if drifted else verdict)


@deployments_app.command("describe")
def deployments_describe(
    plan: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        _plan_report(edge.describe_deployment(client, plan), as_json)


@deployments_app.command("list")
def deployments_list(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    with service_errors(), client_for(target, home) as client:
        found = edge.list_deployments(client)
    if as_json:
        print_json(found)
        return
    rows = [(p["plan_name"], p["fleet_name"], p["package_name"], p["status"]) for p in found]
    Console().print(table("Deployments", ("plan", "fleet", "package", "status"), rows))


def _change(verb: str) -> Any:
    def command(
        plan: str,
        reason: Annotated[str, typer.Option("--reason")] = "",
        as_json: JsonOption = False,
        target: TargetOption = None,
        home: HomeOption = None,
    ) -> None:
        with service_errors(), client_for(target, home) as client:
            _plan_report(edge.change_deployment(client, plan, verb, reason), as_json)

    command.__doc__ = f"{verb.capitalize()} a deployment plan."
    return command


for _verb in ("pause", "resume", "rollback"):
    deployments_app.command(_verb)(_change(_verb))


@edge_app.command("agent")
def agent(
    fleet: FleetOption,
    device: Annotated[str, typer.Option("--device", "-d")],
    server: Annotated[str, typer.Option("--server", help="The edge service's base URL.")],
    credential: Annotated[
        Path, typer.Option("--credential", help="From `devices register --out`.")
    ],
    folder: Annotated[Path, typer.Option("--dir", help="The agent's own folder.")],
    port: Annotated[int, typer.Option("--port", help="Loopback port to serve on (0: any).")] = 8090,
    capture_rate: Annotated[float, typer.Option("--capture-rate", min=0, max=1)] = 0.1,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between beats.")] = 5.0,
    upload: Annotated[
        float, typer.Option("--upload-every", help="Seconds between uploads.")
    ] = 10.0,
    poll_wait: Annotated[float, typer.Option("--poll-wait", help="Long-poll seconds.")] = 20.0,
    max_backoff: Annotated[float, typer.Option("--max-backoff", help="Longest retry wait.")] = 30.0,
) -> None:
    """Run the device agent: follow the fleet, verify and swap packages, serve on loopback."""
    from cairn_edge.agent import Agent, AgentOptions, Credential

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    loaded = Credential.model_validate_json(credential.read_bytes())
    if (loaded.fleet_name, loaded.device_name) != (fleet, device):
        raise typer.BadParameter(
            f"the credential is for {loaded.fleet_name}/{loaded.device_name}",
            param_hint="--credential",
        )
    options = AgentOptions(
        server=server, folder=folder, port=port, capture_rate=capture_rate, heartbeat_s=heartbeat,
        upload_s=upload, poll_wait_s=poll_wait, max_backoff_s=max_backoff,
    )  # fmt: skip
    runner = Agent(loaded, options)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop.set())
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.stop.set()


def register(app: typer.Typer) -> None:
    """Add `edge` to the `cairn` app."""
    app.add_typer(edge_app)
