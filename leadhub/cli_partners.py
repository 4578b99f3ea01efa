"""``leadhub partners credentials create|rotate|revoke PARTNER``: a partner's Kafka principal.

A partner system authenticates to the broker with SASL/SCRAM-SHA-512 as its partner id, and its
ACLs let it write (and describe) its own ``lead.in.<partner>`` and nothing else
(docs/architecture.md "Partner isolation on Kafka"). These commands need the admin principal.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from leadhub.settings import load_settings


def register(subparsers: Any) -> None:
    """Add the ``partners`` command group."""
    partners = subparsers.add_parser(
        "partners", help="manage partners' Kafka credentials",
        description="Manage the Kafka principal of each partner of the site file. A partner's "
                    "principal is its partner id; it may only write its own inbound topic. "
                    "Needs the broker's admin principal (the local launcher's, or "
                    "LEADHUB_KAFKA_USERNAME/LEADHUB_KAFKA_PASSWORD).")
    groups = partners.add_subparsers(dest="group", metavar="GROUP", required=True)
    credentials = groups.add_parser(
        "credentials", help="create, rotate or revoke a partner's SCRAM credential",
        description="create: a new SCRAM-SHA-512 credential and the partner's ACLs (refused if "
                    "one exists). rotate: a new password; the old one stops working for new "
                    "connections. revoke: the credential and every ACL of the partner are "
                    "deleted. create and rotate print the two lines LEADHUB_KAFKA_USERNAME=... "
                    "and LEADHUB_KAFKA_PASSWORD=... the partner's system sets (once: the hub "
                    "keeps only a salted hash), or write them to --out with mode 0600.")
    actions = credentials.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("create", "make the partner's credential and ACLs"),
                       ("rotate", "give the partner a new password"),
                       ("revoke", "delete the partner's credential and ACLs")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("partner", help="partner id from the site file")
        if name != "revoke":
            action.add_argument("--out", type=Path,
                                help="write the credential to this file (mode 0600) instead "
                                     "of standard output")
        action.set_defaults(handler=_credentials, action=name)


def _credentials(args: argparse.Namespace) -> int:
    from leadhub.errors import UsageError
    from leadhub.kafka_access import is_hub_principal
    from leadhub.kafka_admin import delete_credential, has_credential, provision_partner, revoke_all
    from leadhub.kafka_credentials import kafka_connection
    from processors.site import load_site
    from schemas.topics import TopicNames

    settings = load_settings()
    partner = args.partner
    if partner not in load_site(settings.site_file).partner_ids() or is_hub_principal(partner):
        raise UsageError(f"{partner!r} is not a partner of the site file "
                         f"({settings.site_file})")
    admin = kafka_connection(settings, "admin")
    exists = has_credential(admin, partner)
    if args.action == "revoke":
        if exists:
            delete_credential(admin, partner)
        revoke_all(admin, partner)
        print(f"revoked {partner}'s Kafka credential and ACLs", file=sys.stderr)
        return 0
    if args.action == "create" and exists:
        raise UsageError(f"{partner} already has a credential; use rotate")
    if args.action == "rotate" and not exists:
        raise UsageError(f"{partner} has no credential yet; use create")
    made = provision_partner(admin, TopicNames(settings.topic_prefix), partner)
    text = f"LEADHUB_KAFKA_USERNAME={partner}\nLEADHUB_KAFKA_PASSWORD={made.password}\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        print(f"wrote {partner}'s credential to {args.out}", file=sys.stderr)
    return 0
