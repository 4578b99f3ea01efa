"""End to end over the real broker: SDK -> validate -> lead.events -> project -> SQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from producers.sdk import PartnerPublisher
from schemas.catalog import load_catalog
from schemas.event import Event
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames
from tests.factories import new_participant_id

pytestmark = pytest.mark.integration


def test_one_referral_flows_from_sdk_to_sql(hub: Any, topics: TopicNames, kafka: KafkaConnection,
                                            live_view: Any) -> None:
    hub.start("validator")
    hub.start("projector")
    participant = new_participant_id()
    referral = Event(
        event_id=str(uuid.uuid4()), type="ReferralMade", participant_id=participant,
        occurred_at=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        payload={"door": "SOCIAL_CONTACT", "offense_category": None, "charges_held": False,
                 "referring_officer": "Officer 4411", "area": "Downtown"},
    )
    with PartnerPublisher("evergreen-pd", kafka, catalog=load_catalog(),
                          topics=topics) as publisher:
        assert publisher.publish(referral) == referral.event_id

    live_view.wait_for(lambda: live_view.rows("evergreen-pd", participant)
                       and live_view.rows("harbor-cm", participant))
    police_rows = live_view.rows("evergreen-pd", participant)
    assert [r["event_id"] for r in police_rows] == [referral.event_id]
    assert police_rows[0]["source_partner"] == "evergreen-pd"
    assert police_rows[0]["fields"]["door"] == "SOCIAL_CONTACT"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the codec is Kafka's part
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_kafka_compression_codec_is_read(hub: Any, topics: TopicNames,
                                               kafka: KafkaConnection, codec: str,
                                               live_view: Any) -> None:
    """A partner may compress its batches with any codec Kafka has (docs/wire-format.md)."""
    hub.start("validator")
    hub.start("projector")
    participant = new_participant_id()
    contact = Event(
        event_id=str(uuid.uuid4()), type="ContactLogged", participant_id=participant,
        occurred_at=datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
        payload={"contact_method": "OUTREACH", "successful": True, "duration_minutes": 15})
    with PartnerPublisher("harbor-cm", kafka, catalog=load_catalog(), topics=topics,
                          compression=codec) as publisher:
        publisher.publish(contact)
    live_view.wait_for(lambda: live_view.rows("harbor-cm", participant), what=codec)
