"""The broker's admin API for principals: SCRAM credentials and ACLs (needs ``leadhub-admin``).

Applies the grants that :mod:`leadhub.kafka_access` describes. Every call is idempotent:
creating an ACL that exists, or setting a password again, changes nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError

from leadhub.kafka_access import Grant, partner_grants
from leadhub.kafka_credentials import new_password
from leadhub.services import ServiceError
from schemas.kafka_connection import SASL_MECHANISM, KafkaConnection
from schemas.topics import TopicNames

T = TypeVar("T")
_MECHANISM = ScramMechanism[SASL_MECHANISM.replace("-", "_")]


def admin_client(connection: KafkaConnection, client_id: str) -> KafkaAdminClient:
    """An admin client; ServiceError if the broker cannot be reached or refuses the login."""
    try:
        return KafkaAdminClient(**connection.client_options(), client_id=client_id,
                                bootstrap_timeout_ms=10000)
    except (KafkaError, OSError) as exc:
        raise ServiceError(
            f"cannot reach Kafka at {connection.describe()}: {type(exc).__name__}") from exc


def _call(connection: KafkaConnection, client_id: str, what: str,
          call: Callable[[KafkaAdminClient], T]) -> T:
    """Run ``call`` with an admin client; a library error becomes ServiceError naming ``what``."""
    admin = admin_client(connection, client_id)
    try:
        return call(admin)
    except KafkaError as exc:
        raise ServiceError(f"{what} failed: {type(exc).__name__}") from exc
    finally:
        admin.close()


def _acl(grant: Grant, operation: str) -> ACL:
    pattern = ACLResourcePatternType.PREFIXED if grant.prefixed else ACLResourcePatternType.LITERAL
    return ACL(principal=f"User:{grant.user}", host="*", operation=ACLOperation[operation],
               permission_type=ACLPermissionType.ALLOW,
               resource_pattern=ResourcePattern(ResourceType[grant.resource], grant.name,
                                                pattern))


def apply_grants(connection: KafkaConnection, grants: Iterable[Grant]) -> int:
    """Create the ACLs of ``grants``; return how many ACL entries were sent."""
    acls = [_acl(grant, op) for grant in grants for op in grant.operations]
    if not acls:
        return 0
    result = _call(connection, "leadhub-acls", "creating ACLs",
                   lambda admin: admin.create_acls(acls))
    if result["failed"]:
        raise ServiceError(f"the broker refused {len(result['failed'])} ACLs: "
                           f"{type(result['failed'][0]).__name__}")
    _wait_until_enforced(connection, acls)
    return len(acls)


def _wait_until_enforced(connection: KafkaConnection, acls: list[ACL],
                         timeout_s: float = 20.0) -> None:
    """Return once the broker's authorizer lists every ACL of ``acls``.

    The controller commits an ACL before the broker's authorizer applies it; a process started
    right after ``topics create`` would otherwise be refused its first requests.
    """
    wanted = {_acl_key(acl) for acl in acls}
    deadline = time.monotonic() + timeout_s
    while True:
        listed, _ = _call(connection, "leadhub-acls", "listing ACLs",  # errors are raised
                          lambda admin: admin.describe_acls(_any_filter(None)))
        if wanted <= {_acl_key(acl) for acl in listed}:
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"the broker did not apply {len(wanted)} new ACLs within "
                               f"{timeout_s:.0f}s")
        time.sleep(0.2)


def _acl_key(acl: ACL) -> tuple[object, ...]:
    pattern = acl.resource_pattern
    return (acl.principal, acl.operation, acl.permission_type, pattern.resource_type,
            pattern.resource_name, pattern.pattern_type)


def _any_filter(user: str | None) -> ACLFilter:
    return ACLFilter(principal=None if user is None else f"User:{user}", host=None,
                     operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
                     resource_pattern=ResourcePatternFilter(ResourceType.ANY, None,
                                                            ACLResourcePatternType.ANY))


def _delete(connection: KafkaConnection, filters: list[ACLFilter]) -> None:
    if filters:
        _call(connection, "leadhub-acls", "deleting ACLs",
              lambda admin: admin.delete_acls(filters))


def revoke_all(connection: KafkaConnection, user: str) -> None:
    """Delete every ACL whose principal is ``User:<user>``."""
    _delete(connection, [_any_filter(user)])


def revoke_prefix(connection: KafkaConnection, prefix: str) -> None:
    """Delete every ACL on a resource whose name starts with ``prefix`` (a test's topics)."""
    if not prefix:
        raise ServiceError("refusing to delete every ACL: the prefix is empty")
    acls, _ = _call(connection, "leadhub-acls", "listing ACLs",  # errors are raised
                    lambda admin: admin.describe_acls(_any_filter(None)))
    doomed = [ACLFilter(acl.principal, acl.host, acl.operation, acl.permission_type,
                        ResourcePatternFilter(acl.resource_pattern.resource_type,
                                              acl.resource_pattern.resource_name,
                                              acl.resource_pattern.pattern_type))
              for acl in acls if acl.resource_pattern.resource_name.startswith(prefix)]
    _delete(connection, doomed)


def set_password(connection: KafkaConnection, user: str, password: str) -> None:
    """Create or replace ``user``'s SCRAM-SHA-512 credential."""
    _alter(connection, [UserScramCredentialUpsertion(user, _MECHANISM, password)])


def delete_credential(connection: KafkaConnection, user: str) -> None:
    """Remove ``user``'s SCRAM credential (its open connections stay until they reconnect)."""
    _alter(connection, [UserScramCredentialDeletion(user, _MECHANISM)])


def _alter(connection: KafkaConnection, alterations: list[object]) -> None:
    errors = _call(connection, "leadhub-credentials", "changing a SCRAM credential",
                   lambda admin: admin.alter_user_scram_credentials(alterations))
    failed = {user: message for user, message in errors.items() if message}
    if failed:
        raise ServiceError(f"the broker refused the credential change: {failed}")


def has_credential(connection: KafkaConnection, user: str) -> bool:
    """True if the broker holds a SCRAM credential for ``user``."""
    described = _call(connection, "leadhub-credentials", "reading SCRAM credentials",
                      lambda admin: admin.describe_user_scram_credentials([user]))
    entry = described.get(user) or {}
    return not entry.get("error") and bool(entry.get("credential_infos"))


def provision_partner(admin: KafkaConnection, topics: TopicNames,
                      partner_id: str) -> KafkaConnection:
    """Give ``partner_id`` a new random SCRAM password and its ACLs; return its connection.

    On an unsecured broker (``admin`` has no principal) nothing is provisioned and the partner
    connects plaintext.
    """
    if not admin.secured:
        return KafkaConnection(admin.bootstrap)
    password = new_password()
    set_password(admin, partner_id, password)
    apply_grants(admin, partner_grants(topics, partner_id))
    return KafkaConnection(admin.bootstrap, partner_id, password)


class SimulatedPartners:
    """Connections of simulated partners (demo, ``simulate --publish``), provisioned on first
    use with fresh passwords: local development tooling publishing as every partner."""

    def __init__(self, admin: KafkaConnection, topics: TopicNames) -> None:
        self.admin = admin
        self.topics = topics
        self._connections: dict[str, KafkaConnection] = {}

    def __call__(self, partner_id: str) -> KafkaConnection:
        if partner_id not in self._connections:
            self._connections[partner_id] = provision_partner(self.admin, self.topics,
                                                              partner_id)
        return self._connections[partner_id]
