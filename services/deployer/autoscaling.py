"""The deployer's scaling loop: target-tracking policies move variants' instance counts.

It lives in the deployer, not the autoscaler: the instance count is part of the endpoint's
desired state, which only the deployer writes (a new revision, announced with EndpointUpdated,
that the gateway applies like any other), and the deployer already reads the gateway's public
traffic report (`EndpointMetricsReported`) for its rollout alarms. The autoscaler sizes worker
pools on Kafka lag; it reads no endpoint and would have to ask the deployer to change one.

Readings are kept in memory: a restarted deployer scales out at once on new reports but scales
in only after a whole window of readings (`scaling.decide`). Cooldowns run from the activities
stored in the endpoint document, so they survive restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import EndpointMetricsReported
from cairn.contracts.scaling_events import EndpointVariantScaled
from cairn.errors import InvalidInput

from services.deployer import domain
from services.deployer.documents import EndpointDoc, readable
from services.deployer.scaling import (
    Decision,
    ScalingActivity,
    ScalingPolicy,
    TrafficWindow,
    decide,
    recorded,
)

if TYPE_CHECKING:
    from services.deployer.handlers import Deployer

log = logging.getLogger("cairn.deployer")


class UnknownVariant(InvalidInput):
    code = "unknown_variant"


class VariantScaler:
    """Policies in, instance counts out; one per deployer process."""

    def __init__(
        self,
        deployer: Deployer,
        *,
        window_s: float,
        tick_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deployer = deployer
        self.window_s = window_s
        self.tick_s = tick_s
        self.monotonic = monotonic
        self.started_at = monotonic()
        self._windows: dict[tuple[str, str], TrafficWindow] = {}

    # Policies ------------------------------------------------------------------------------

    async def put_policy(self, name: str, variant: str, policy: ScalingPolicy) -> EndpointDoc:
        """Store a variant's policy (no new revision: the next tick applies its bounds)."""

        def put(current: EndpointDoc | None) -> EndpointDoc:
            doc = domain.require_live(current, name)
            _require_variant(doc, variant)
            policies = {**doc.scaling_policies, variant: policy}
            return doc.model_copy(update={"scaling_policies": policies})

        doc, _ = await asyncio.to_thread(self.deployer._change, name, put)
        return doc

    async def delete_policy(self, name: str, variant: str) -> EndpointDoc:
        """Stop scaling a variant; its instance count stays where the policy left it."""

        def drop(current: EndpointDoc | None) -> EndpointDoc:
            doc = domain.require_live(current, name)
            if variant not in doc.scaling_policies:
                raise UnknownVariant(
                    f"variant {variant!r} of {name!r} has no scaling policy",
                    field="variant_name",
                )
            policies = {k: v for k, v in doc.scaling_policies.items() if k != variant}
            return doc.model_copy(update={"scaling_policies": policies})

        doc, _ = await asyncio.to_thread(self.deployer._change, name, drop)
        return doc

    # Readings ------------------------------------------------------------------------------

    def observe(self, envelope: Envelope[EndpointMetricsReported]) -> None:
        """Count a gateway process's window of invocations, per variant."""
        report = envelope.data
        now = self.monotonic()
        for traffic in report.variants:
            key = (report.endpoint_name, traffic.variant_name)
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = TrafficWindow(self.window_s, self.started_at)
            window.add(now, traffic.requests)

    def _reading_window(self, name: str, variant: str) -> TrafficWindow:
        return self._windows.get((name, variant)) or TrafficWindow(self.window_s, self.started_at)

    # Decisions -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """Evaluate every policy once; apply and announce what changes."""
        for found in await asyncio.to_thread(readable, self.deployer.endpoints):
            doc = found.doc
            if not doc.scaling_policies or not domain.is_live(doc) or doc.rollout is not None:
                continue  # during a rollout the rollout owns the variants
            for variant, policy in doc.scaling_policies.items():
                await self._evaluate(doc, variant, policy)

    async def _evaluate(self, doc: EndpointDoc, variant: str, policy: ScalingPolicy) -> None:
        state = next((v for v in doc.production_variants if v.variant_name == variant), None)
        if state is None:
            return  # the variant left the endpoint; its policy waits for it (or a delete)
        decision = decide(
            policy,
            current=state.instance_count,
            reading=self._reading_window(doc.endpoint_name, variant).reading(self.monotonic()),
            window_s=self.window_s,
            since_scale_out_s=self._since(doc, variant, scale_out=True),
            since_activity_s=self._since(doc, variant, scale_out=False),
        )
        if decision.changes:
            await self._apply(doc.endpoint_name, variant, decision)

    def _since(self, doc: EndpointDoc, variant: str, *, scale_out: bool) -> float | None:
        """Seconds since the variant's last scale-out (or last activity); None when none."""
        for activity in reversed(doc.scaling_activities):
            if activity.variant_name != variant:
                continue
            if scale_out and activity.to_instances <= activity.from_instances:
                continue
            return (self.deployer.clock() - activity.at).total_seconds()
        return None

    async def _apply(self, name: str, variant: str, decision: Decision) -> None:
        """A new revision with the variant's new count and the activity, then the events."""
        now = self.deployer.clock()

        def scale(current: EndpointDoc | None) -> EndpointDoc:
            doc = domain.require_live(current, name)
            return _scaled(doc, variant, decision, now)

        doc, changed = await asyncio.to_thread(self.deployer._change, name, scale)
        if not changed:
            return
        log.info(
            "endpoint %s variant %s: %d -> %d instances: %s",
            name,
            variant,
            decision.current,
            decision.target,
            decision.reason,
        )
        await self.deployer._announce(doc, None)
        await self.deployer.publish(
            EndpointVariantScaled(
                endpoint_name=name,
                variant_name=variant,
                from_instances=decision.current,
                to_instances=decision.target,
                invocations_per_instance=round(decision.invocations_per_instance, 3),
                reason=decision.reason,
                revision=doc.revision,
            ),
            None,
        )

    async def run(self) -> None:
        """Evaluate the policies every `tick_s` until cancelled; survives errors."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scaling pass failed; trying again")
            await asyncio.sleep(self.tick_s)


def _require_variant(doc: EndpointDoc, variant: str) -> None:
    names = [v.variant_name for v in doc.production_variants]
    if variant not in names:
        raise UnknownVariant(
            f"endpoint {doc.endpoint_name!r} has no production variant {variant!r} "
            f"(it has {names})",
            field="variant_name",
            variants=names,
        )


def _scaled(doc: EndpointDoc, variant: str, decision: Decision, now: datetime) -> EndpointDoc:
    """`doc` with the variant at `decision.target` instances, unless it moved meanwhile."""
    state = next((v for v in doc.production_variants if v.variant_name == variant), None)
    if state is None or state.instance_count != decision.current or doc.rollout is not None:
        return doc  # changed since the decision: the next tick decides again
    production = [
        v.model_copy(update={"instance_count": decision.target}) if v is state else v
        for v in doc.production_variants
    ]
    revision = doc.revision + 1
    activity = ScalingActivity(
        variant_name=variant,
        from_instances=decision.current,
        to_instances=decision.target,
        invocations_per_instance=round(decision.invocations_per_instance, 3),
        reason=decision.reason,
        at=now,
        revision=revision,
    )
    return doc.model_copy(
        update={
            "revision": revision,
            "production_variants": production,
            "scaling_activities": recorded(doc.scaling_activities, activity),
            "updated_at": now,
        }
    )
