"""How the demo's simulated partners publish: some through the SDK, some through the HTTP gateway.

Police, prosecutor, defender and case management publish with the partner SDK straight to their
inbound topics. The treatment and housing partners publish over HTTP with a partner API key,
the way a partner without a Kafka client would: the SUD program posts each event to
``POST /v1/events`` as an Avro single object (``application/vnd.leadhub.avro``), the others post
JSON arrays to ``POST /v1/events:batch``. Everything is paced to a target rate.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import httpx2

from producers.sdk import publish_by_source
from schemas.catalog import Catalog
from schemas.codec import encode
from schemas.errors import HubError
from schemas.event import Event, event_to_json
from schemas.kafka_connection import KafkaConnection
from schemas.topics import TopicNames

AVRO = "application/vnd.leadhub.avro"

#: Roles whose demo partner publishes over HTTP, and how: ``single`` (Avro, one per request) or
#: ``batch`` (JSON array).
HTTP_ROLES: Mapping[str, str] = {"sud_treatment": "single", "mental_health": "batch",
                                 "housing": "batch"}
BATCH_SIZE = 100
BATCH_MAX_AGE_S = 1.0


class DemoFeedError(HubError):
    """The gateway refused a demo event for a reason other than a repeat (a bug or a setup)."""


@dataclass
class FeedCounts:
    """What the feed did so far: events sent by way, and repeats the hub already had."""

    sdk: int = 0
    http: int = 0
    repeats: int = 0

    @property
    def total(self) -> int:
        """Every event handed to the hub."""
        return self.sdk + self.http


@dataclass
class GatewayPublisher:
    """Posts events to the HTTP gateway with each partner's API key."""

    api_url: str
    keys: Mapping[str, str]
    catalog: Catalog
    modes: Mapping[str, str]
    counts: FeedCounts
    pending: dict[str, list[Event]] = field(default_factory=dict)
    oldest: float = 0.0

    def __post_init__(self) -> None:
        self.http = httpx2.Client(base_url=self.api_url, timeout=30.0)

    def handles(self, partner: str) -> bool:
        """True if ``partner`` publishes over HTTP in the demo."""
        return partner in self.modes

    def submit(self, partner: str, event: Event) -> None:
        """Post ``event`` now (single mode) or queue it for the partner's next batch."""
        unstamped = dataclasses.replace(event, source_partner=None)
        if self.modes[partner] == "single":
            response = self._post(partner, "/v1/events", AVRO, encode(unstamped, self.catalog))
            self._count_single(response)
            return
        if not any(self.pending.values()):
            self.oldest = time.monotonic()
        self.pending.setdefault(partner, []).append(unstamped)
        if len(self.pending[partner]) >= BATCH_SIZE:
            self._post_batch(partner)

    def flush(self, force: bool = False) -> None:
        """Post the queued batches if the oldest waited ``BATCH_MAX_AGE_S`` (or ``force``)."""
        if force or time.monotonic() - self.oldest >= BATCH_MAX_AGE_S:
            for partner in list(self.pending):
                self._post_batch(partner)

    def close(self) -> None:
        """Release the HTTP client."""
        self.http.close()

    def _post_batch(self, partner: str) -> None:
        events = self.pending.pop(partner, [])
        if not events:
            return
        body = json.dumps([event_to_json(e) for e in events]).encode()
        response = self._post(partner, "/v1/events:batch", "application/json", body)
        for result in response.json()["results"]:
            self._count(int(result["status"]), result.get("error"))

    def _post(self, partner: str, path: str, content_type: str, body: bytes) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {self.keys[partner]}", "Content-Type": content_type}
        try:
            response = self.http.post(path, content=body, headers=headers)
        except httpx2.HTTPError as exc:
            raise DemoFeedError(f"the gateway at {self.api_url} did not answer "
                                f"({type(exc).__name__}); see the api log") from exc
        if response.status_code not in (200, 202, 409):
            raise DemoFeedError(f"the gateway answered {response.status_code} to {path} for "
                                f"{partner}: {response.text[:300]}")
        return response

    def _count_single(self, response: httpx2.Response) -> None:
        error = response.json().get("error") if response.status_code == 409 else None
        self._count(response.status_code, error)

    def _count(self, status: int, error: Mapping[str, str] | None) -> None:
        if status == 202:
            self.counts.http += 1
        elif status == 409:
            self.counts.repeats += 1  # the same history published by an earlier demo run
        else:
            code = (error or {}).get("code", "?")
            raise DemoFeedError(f"the gateway refused a simulated event ({status} {code})")


def feed_site(
    events: Iterable[Event],
    connection_for: Callable[[str], KafkaConnection],
    topics: TopicNames,
    gateway: GatewayPublisher,
    catalog: Catalog,
    rate: float,
    should_stop: Callable[[], bool],
    on_progress: Callable[[FeedCounts, float], None],
) -> FeedCounts:
    """Publish ``events`` (each as its ``source_partner``) at about ``rate`` events/s.

    Partners the gateway handles go over HTTP, the others through their SDK publisher
    (:func:`producers.sdk.publish_by_source`, connected as ``connection_for(partner)``). Calls
    ``on_progress`` about every 5 seconds and polls ``should_stop`` before each event.
    Everything sent is acknowledged by Kafka (SDK) or the gateway before it returns.
    """
    counts = gateway.counts

    def over_http(event: Event) -> bool:
        gateway.flush()
        assert event.source_partner is not None  # publish_by_source checked it
        if gateway.handles(event.source_partner):
            gateway.submit(event.source_partner, event)
            return True
        counts.sdk += 1
        return False

    publish_by_source(events, connection_for, catalog=catalog, topics=topics,
                      rate=rate if rate > 0 else None, should_stop=should_stop,
                      on_progress=lambda _sent, elapsed: on_progress(counts, elapsed),
                      divert=over_http)
    gateway.flush(force=True)
    return counts
