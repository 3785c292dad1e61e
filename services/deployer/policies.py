"""Auto-deploy policies: `deployer/auto-deploy/<group>.json`, one per model package group."""

from __future__ import annotations

import contextlib
import logging

from cairn.documents import DocumentStore
from cairn.errors import CairnError, Conflict, NotFound
from cairn.store.base import ObjectStore

from services.deployer.documents import AutoDeployPolicy, invalid_fields

log = logging.getLogger("cairn.deployer")


class AutoDeployPolicyNotFound(NotFound):
    code = "auto_deploy_policy_not_found"


class AutoDeployPolicyUnreadable(Conflict):
    code = "auto_deploy_policy_unreadable"


class AutoDeployPolicies:
    """Read, replace and delete policies; an unreadable one is reported (409) and replaceable."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.documents = DocumentStore(store, AutoDeployPolicy, "deployer/auto-deploy")

    def get_or_none(self, group: str) -> AutoDeployPolicy | None:
        try:
            found = self.documents.get_or_none(f"{group}.json")
        except CairnError as exc:
            problems = invalid_fields(exc)
            if problems is None:
                raise
            log.error("stored auto-deploy policy %s is unreadable: %s", group, problems)
            raise AutoDeployPolicyUnreadable(
                f"the stored auto-deploy policy of {group!r} cannot be read ({problems}); "
                "put it again or delete it",
                model_package_group=group,
            ) from exc
        return found.doc if found else None

    def get(self, group: str) -> AutoDeployPolicy:
        policy = self.get_or_none(group)
        if policy is None:
            raise AutoDeployPolicyNotFound(
                f"model package group {group!r} has no auto-deploy policy",
                model_package_group=group,
            )
        return policy

    def put(self, group: str, policy: AutoDeployPolicy) -> AutoDeployPolicy:
        stored = policy.model_copy(update={"model_package_group": group})
        key = f"{group}.json"
        try:
            return self.documents.update(key, lambda _current: stored).doc
        except CairnError as exc:
            if invalid_fields(exc) is None:
                raise
            # The new policy replaces an unreadable one whole: nothing of the old is needed.
            _, info = self.store.get_with_info(self.documents.prefix + key)
            return self.documents.replace(key, stored, info.etag).doc

    def delete(self, group: str) -> None:
        with contextlib.suppress(AutoDeployPolicyUnreadable):
            self.get(group)
        self.documents.delete(f"{group}.json")
