"""`cairn endpoints ...` and `cairn invoke`: deploying and calling models."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from cairn_sdk.graphs import GraphFileError, load_inference_graph
from rich.console import Console

from cairn_cli.sdk_common import (
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    key_value_table,
    parse_pairs,
    print_json,
    service_errors,
    table,
)

endpoints_app = typer.Typer(
    name="endpoints", help="Create, update, inspect and delete endpoints.", no_args_is_help=True
)

_VARIANT = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9-]{0,62})=(?P<group>[A-Za-z0-9][A-Za-z0-9-]{0,62})"
    r":(?P<version>[1-9][0-9]*)(?::(?P<weight>[0-9]*\.?[0-9]+))?$"
)
ROLLOUT_MODES = ("all_at_once", "canary", "linear")

VariantOption = Annotated[
    list[str] | None,
    typer.Option(
        "--variant",
        "-v",
        help="NAME=GROUP:VERSION[:WEIGHT] (repeatable), e.g. AllTraffic=credit-risk:3:1.0.",
    ),
]
ShadowOption = Annotated[
    str | None, typer.Option("--shadow", help="Shadow variant NAME=GROUP:VERSION (gets a copy).")
]
RolloutOption = Annotated[
    str, typer.Option("--rollout", help=f"One of {', '.join(ROLLOUT_MODES)}.")
]
CanaryOption = Annotated[
    float | None, typer.Option("--canary-percent", min=0.001, max=100, help="Canary traffic %.")
]
StepOption = Annotated[
    float | None, typer.Option("--linear-step-percent", min=0.001, max=100, help="Linear step %.")
]
BakeOption = Annotated[
    float | None, typer.Option("--bake-time", min=0, help="Seconds each step bakes.")
]
ErrorRateOption = Annotated[
    float | None, typer.Option("--max-error-rate", min=0, max=1, help="Rollback above this rate.")
]
GraphOption = Annotated[
    str | None,
    typer.Option(
        "--graph",
        help="[NAME=]FILE: a variant (default AllTraffic) routed as the inference graph in FILE "
        "(YAML or JSON, Cairn's or KServe's InferenceGraph keys).",
    ),
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Wait until the endpoint is InService and served.")
]


def parse_variant(text: str, flag: str) -> dict[str, Any]:
    """`NAME=GROUP:VERSION[:WEIGHT]` as a VariantSpec dict; exit 2 naming the flag."""
    match = _VARIANT.match(text.strip())
    if match is None:
        raise typer.BadParameter(
            f"{text!r} is not NAME=GROUP:VERSION[:WEIGHT] (e.g. AllTraffic=credit-risk:1)",
            param_hint=flag,
        )
    variant: dict[str, Any] = {
        "variant_name": match["name"],
        "model_package_group": match["group"],
        "model_version": int(match["version"]),
    }
    if match["weight"] is not None:
        variant["initial_weight"] = float(match["weight"])
    return variant


def graph_variant(text: str) -> dict[str, Any]:
    """`[NAME=]FILE` as a VariantSpec dict with its graph; exit 2 naming --graph."""
    name, _, path = text.rpartition("=") if "=" in text else ("AllTraffic", "", text)
    if not Path(path).is_file():
        raise typer.BadParameter(f"{path!r} is not a file", param_hint="--graph")
    try:
        graph = load_inference_graph(path)
    except GraphFileError as error:
        raise typer.BadParameter(str(error), param_hint="--graph") from None
    return {"variant_name": name, "graph": graph}


def _config(
    variants: list[str] | None,
    shadow: str | None,
    rollout: str,
    canary_percent: float | None,
    linear_step_percent: float | None,
    bake_time: float | None,
    max_error_rate: float | None,
    graph: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]:
    production = [parse_variant(text, "--variant") for text in variants or []]
    if graph is not None:
        production.append(graph_variant(graph))
    if not production:
        raise typer.BadParameter("give at least one production variant", param_hint="--variant")
    names = [variant["variant_name"] for variant in production]
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"variant names repeat: {names}", param_hint="--variant")
    if rollout not in ROLLOUT_MODES:
        raise typer.BadParameter(
            f"{rollout!r} is not one of {', '.join(ROLLOUT_MODES)}", param_hint="--rollout"
        )
    policy: dict[str, Any] = {"mode": rollout}
    for field, value in (
        ("canary_percent", canary_percent),
        ("linear_step_percent", linear_step_percent),
        ("bake_time_s", bake_time),
        ("max_error_rate", max_error_rate),
    ):
        if value is not None:
            policy[field] = value
    shadow_variant = parse_variant(shadow, "--shadow") if shadow else None
    return production, shadow_variant, policy


def _model_of(variant: dict[str, Any]) -> str:
    graph = variant.get("graph")
    if graph:
        return f"graph of {len(graph.get('nodes') or {})} nodes"
    return f"{variant['model_package_group']}:{variant['model_version']}"


def _show(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(document)
        return
    console = Console()
    console.print(
        f"endpoint [bold]{document['endpoint_name']}[/] revision {document['revision']}: "
        f"[bold]{document['status']}[/]"
    )
    rows = [
        (
            v["variant_name"],
            _model_of(v),
            v["weight"],
            v["instance_count"],
            "production",
        )
        for v in document.get("production_variants") or []
    ]
    shadow = document.get("shadow_variant")
    if shadow:
        rows.append(
            (
                shadow["variant_name"],
                _model_of(shadow),
                shadow["weight"],
                shadow["instance_count"],
                "shadow",
            )
        )
    console.print(table("Variants", ("variant", "model", "weight", "instances", "kind"), rows))


@endpoints_app.command("create")
def create(
    endpoint_name: str,
    variant: VariantOption = None,
    shadow: ShadowOption = None,
    rollout: RolloutOption = "all_at_once",
    canary_percent: CanaryOption = None,
    linear_step_percent: StepOption = None,
    bake_time: BakeOption = None,
    max_error_rate: ErrorRateOption = None,
    graph: GraphOption = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Create an endpoint serving model versions (CreateEndpoint)."""
    production, shadow_variant, policy = _config(
        variant,
        shadow,
        rollout,
        canary_percent,
        linear_step_percent,
        bake_time,
        max_error_rate,
        graph,
    )
    with service_errors(), client_for(target, home) as client:
        document = client.create_endpoint(
            endpoint_name, production, shadow_variant=shadow_variant, rollout=policy
        )
        _show(client.wait_for_endpoint(endpoint_name) if wait else document, as_json)


@endpoints_app.command("update")
def update(
    endpoint_name: str,
    variant: VariantOption = None,
    shadow: ShadowOption = None,
    rollout: RolloutOption = "all_at_once",
    canary_percent: CanaryOption = None,
    linear_step_percent: StepOption = None,
    bake_time: BakeOption = None,
    max_error_rate: ErrorRateOption = None,
    graph: GraphOption = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Replace an endpoint's variants with a rollout (UpdateEndpoint)."""
    production, shadow_variant, policy = _config(
        variant,
        shadow,
        rollout,
        canary_percent,
        linear_step_percent,
        bake_time,
        max_error_rate,
        graph,
    )
    with service_errors(), client_for(target, home) as client:
        document = client.update_endpoint(
            endpoint_name, production, shadow_variant=shadow_variant, rollout=policy
        )
        _show(client.wait_for_endpoint(endpoint_name) if wait else document, as_json)


@endpoints_app.command("weights")
def weights(
    endpoint_name: str,
    weight: Annotated[
        list[str] | None, typer.Option("--weight", "-w", help="VARIANT=WEIGHT (repeatable).")
    ] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Change traffic weights without redeploying (UpdateEndpointWeightsAndCapacities)."""
    given = parse_pairs(weight, "--weight")
    if not given:
        raise typer.BadParameter("give at least one VARIANT=WEIGHT", param_hint="--weight")
    parsed: dict[str, float] = {}
    for name, value in given.items():
        try:
            parsed[name] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number", param_hint="--weight") from None
    with service_errors(), client_for(target, home) as client:
        _show(client.update_weights(endpoint_name, parsed), as_json)


@endpoints_app.command("list")
def list_endpoints(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every endpoint with its status and variants."""
    with service_errors(), client_for(target, home) as client:
        endpoints = client.list_endpoints()
    if as_json:
        print_json(endpoints)
        return
    rows = [
        (
            e["endpoint_name"],
            e["status"],
            e["revision"],
            ", ".join(
                f"{v['variant_name']}={v['model_package_group']}:{v['model_version']}"
                f"@{v['weight']:g}"
                for v in e.get("production_variants") or []
            ),
            e["updated_at"][:19],
        )
        for e in endpoints
    ]
    columns = ("endpoint", "status", "revision", "variants", "updated")
    Console().print(table("Endpoints", columns, rows))


@endpoints_app.command("describe")
def describe(
    endpoint_name: str,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """One endpoint: desired state, rollout state, last rollback."""
    with service_errors(), client_for(target, home) as client:
        document = client.describe_endpoint(endpoint_name)
    if as_json:
        print_json(document)
        return
    _show(document, False)
    extra = {k: document.get(k) for k in ("rollout", "last_rollback", "updated_at")}
    Console().print(key_value_table("Rollout", extra))


@endpoints_app.command("delete")
def delete(
    endpoint_name: str,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Delete an endpoint (the gateway stops serving it)."""
    with service_errors(), client_for(target, home) as client:
        document = client.delete_endpoint(endpoint_name)
    if as_json:
        print_json(document)
        return
    Console().print(f"endpoint [bold]{endpoint_name}[/]: {document['status']}")


@endpoints_app.command("models")
def models(
    endpoint_name: str,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """The models an endpoint serves (its --target-model choices) and their bytes in memory."""
    with service_errors(), client_for(target, home) as client:
        document = client.endpoint_models(endpoint_name)
    if as_json:
        print_json(document)
        return
    rows = [
        (
            m["target_model"],
            m["model_uri"],
            m["framework"],
            ", ".join(m["variants"]),
            m["size_bytes"],
        )
        for m in document["models"]
    ]
    columns = ("target model", "package", "framework", "variants", "bytes")
    console = Console()
    console.print(table(f"Models of {endpoint_name}", columns, rows))
    cache = document["cache"]
    console.print(
        f"[dim]this gateway replica: {cache['loaded_models']} models loaded, "
        f"{cache['pinned_bytes'] + cache['unpinned_bytes']} bytes "
        f"(multi-model cache budget {cache['budget_bytes']} bytes for undeployed ones)[/]"
    )


def invoke(
    endpoint_name: str,
    body: Annotated[str | None, typer.Option("--body", "-b", help="The request body.")] = None,
    body_file: Annotated[
        Path | None,
        typer.Option("--body-file", exists=True, dir_okay=False, help="Read the body here."),
    ] = None,
    content_type: Annotated[str, typer.Option("--content-type", help="Body type.")] = "text/csv",
    accept: Annotated[str | None, typer.Option("--accept", help="Answer type.")] = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="X-Amzn-SageMaker-Target-Variant.")
    ] = None,
    target_model: Annotated[
        str | None,
        typer.Option(
            "--target-model",
            help="X-Amzn-SageMaker-Target-Model: one of the endpoint's models "
            "(`cairn endpoints models NAME`).",
        ),
    ] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Per-feature contributions.")] = False,
    v2: Annotated[
        bool, typer.Option("--v2", help="Send as an Open Inference Protocol v2 infer (CSV rows).")
    ] = False,
    run_async: Annotated[
        bool,
        typer.Option("--async", help="InvokeEndpointAsync: queue it, print where the answer goes."),
    ] = False,
    input_location: Annotated[
        str | None,
        typer.Option("--input-location", help="With --async: the input, an object in the store."),
    ] = None,
    access_key: Annotated[
        str | None,
        typer.Option(
            "--access-key",
            help="Another KEY_ID:SECRET for this call (a narrow invoke key). Default: "
            "CAIRN_ACCESS_KEY, else your credential (CAIRN_API_KEY or the home's).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Call an endpoint through the gateway (SageMaker InvokeEndpoint[Async] or OIP v2)."""
    if input_location is not None and not run_async:
        raise typer.BadParameter("--input-location needs --async", param_hint="--input-location")
    if [body, body_file, input_location].count(None) != 2:
        raise typer.BadParameter(
            "give exactly one of --body, --body-file or --input-location", param_hint="--body"
        )
    if run_async and (v2 or variant or target_model or explain):
        raise typer.BadParameter("--async takes no --v2, --variant, --target-model or --explain")
    if run_async:
        with service_errors(), client_for(target, home, access_key=access_key) as client:
            text = body if body_file is None else body_file.read_text()
            queued = client.invoke_async(
                endpoint_name, text, content_type, input_location=input_location, accept=accept
            )
        print_json(dataclasses.asdict(queued))
        return
    payload = body if body is not None else body_file.read_text()  # type: ignore[union-attr]
    rows: list[list[Any]] = []
    if v2 and target_model:
        raise typer.BadParameter("--target-model is SageMaker's: drop --v2", param_hint="--v2")
    if v2:
        if content_type != "text/csv":
            raise typer.BadParameter("--v2 takes CSV rows in --body", param_hint="--content-type")
        rows = [_cells(line) for line in payload.splitlines() if line.strip()]
        if not rows or len({len(row) for row in rows}) != 1:
            raise typer.BadParameter(
                "rows must all have the same number of cells", param_hint="--body"
            )
    with service_errors(), client_for(target, home, access_key=access_key) as client:
        if v2:
            answer = client.invoke_v2(endpoint_name, rows, version=variant, explain=explain)
        else:
            answer = client.invoke(
                endpoint_name,
                payload,
                content_type,
                accept=accept,
                target_variant=variant,
                target_model=target_model,
                explain=explain,
            )
    if as_json:
        print_json({"variant": answer.variant, "body": answer.body})
        return
    Console(stderr=True).print(f"[dim]variant {answer.variant}, {answer.latency_ms:.1f} ms[/]")
    raw = answer.raw.decode(errors="replace")
    sys.stdout.write(raw if raw.endswith("\n") else raw + "\n")


def _cells(line: str) -> list[Any]:
    cells: list[Any] = []
    for cell in line.split(","):
        text = cell.strip()
        try:
            cells.append(float(text))
        except ValueError:
            cells.append(text)
    return cells


def register(app: typer.Typer) -> None:
    """Add `endpoints` (with `autoscale`) and `invoke` to the `cairn` app."""
    from cairn_cli import autoscale_cmd  # noqa: F401  (adds `endpoints autoscale`)

    app.add_typer(endpoints_app)
    app.command("invoke")(invoke)
