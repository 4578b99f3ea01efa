"""End to end over the real broker: SDK -> validate -> lead.events -> project -> SQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from producers.sdk import PartnerPublisher
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.topics import TopicNames

pytestmark = pytest.mark.integration


def test_one_referral_flows_from_sdk_to_sql(hub: Any, topics: TopicNames, kafka_bootstrap: str,
                                            live_view: Any) -> None:
    hub.start("validator")
    hub.start("projector")
    participant = f"P-{uuid.uuid4().hex[:8]}"
    referral = Event(
        event_id=str(uuid.uuid4()), type="ReferralMade", participant_id=participant,
        occurred_at=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        payload={"door": "SOCIAL_CONTACT", "offense_category": None, "charges_held": False,
                 "referring_officer": "Officer 4411", "area": "Downtown"},
    )
    with PartnerPublisher("evergreen-pd", kafka_bootstrap, catalog=load_catalog(),
                          topics=topics) as publisher:
        assert publisher.publish(referral) == referral.event_id

    live_view.wait_for(lambda: live_view.rows("evergreen-pd", participant)
                       and live_view.rows("harbor-cm", participant))
    police_rows = live_view.rows("evergreen-pd", participant)
    assert [r["event_id"] for r in police_rows] == [referral.event_id]
    assert police_rows[0]["source_partner"] == "evergreen-pd"
    assert police_rows[0]["fields"]["door"] == "SOCIAL_CONTACT"
