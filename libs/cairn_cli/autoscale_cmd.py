"""`cairn endpoints autoscale`: a variant's target-tracking scaling policy and its activities."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from cairn_cli.endpoints_cmd import endpoints_app
from cairn_cli.sdk_common import (
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    print_json,
    service_errors,
    table,
)


@endpoints_app.command("autoscale")
def autoscale(
    endpoint_name: str,
    variant: Annotated[
        str | None, typer.Option("--variant", "-v", help="The production variant to scale.")
    ] = None,
    target_invocations: Annotated[
        float | None,
        typer.Option(
            "--target-value",
            help="Invocations a minute per instance to hold (AAS's TargetValue; --target is the "
            "platform's URL, as on every command).",
        ),
    ] = None,
    min_capacity: Annotated[
        int, typer.Option("--min", help="Fewest instances; 0 makes the variant serverless.")
    ] = 1,
    max_capacity: Annotated[int, typer.Option("--max", help="Most instances.")] = 1,
    scale_in_cooldown: Annotated[
        float, typer.Option("--scale-in-cooldown", help="Seconds between scale-ins.")
    ] = 300.0,
    scale_out_cooldown: Annotated[
        float, typer.Option("--scale-out-cooldown", help="Seconds between scale-outs.")
    ] = 60.0,
    remove: Annotated[bool, typer.Option("--remove", help="Delete the variant's policy.")] = False,
    show: Annotated[
        bool, typer.Option("--show", help="Show the policies and recent scaling activities.")
    ] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Scale a variant on InvocationsPerInstance (target tracking), or --show what it does."""
    with service_errors(), client_for(target, home) as client:
        if show:
            view = client.describe_scaling(endpoint_name)
        elif variant is None:
            raise typer.BadParameter("name the variant to scale", param_hint="--variant")
        elif remove:
            view = client.delete_scaling_policy(endpoint_name, variant)
        elif target_invocations is None:
            raise typer.BadParameter("give the invocations to hold", param_hint="--target-value")
        else:
            view = client.put_scaling_policy(
                endpoint_name,
                variant,
                target_invocations_per_instance=target_invocations,
                min_capacity=min_capacity,
                max_capacity=max_capacity,
                scale_in_cooldown_s=scale_in_cooldown,
                scale_out_cooldown_s=scale_out_cooldown,
            )
    if as_json:
        print_json(view)
        return
    _print(view)


def _print(view: dict[str, Any]) -> None:
    rows = []
    for v in view["variants"]:
        policy = v["policy"]
        bounds = (
            f"{policy['min_capacity']}..{policy['max_capacity']} @ "
            f"{policy['target_invocations_per_instance']:g}/min "
            f"(in {policy['scale_in_cooldown_s']:g}s, out {policy['scale_out_cooldown_s']:g}s)"
            if policy
            else "-"
        )
        rows.append((v["variant_name"], v["instance_count"], bounds))
    console = Console()
    title = f"Scaling of {view['endpoint_name']} (revision {view['revision']})"
    console.print(table(title, ("variant", "instances", "policy"), rows))
    activities = [
        (
            a["at"][:19],
            a["variant_name"],
            f"{a['from_instances']} -> {a['to_instances']}",
            a["reason"],
        )
        for a in view["activities"]
    ]
    if activities:
        columns = ("at", "variant", "instances", "reason")
        console.print(table("Recent scaling activities", columns, activities))
