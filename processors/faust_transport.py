"""faust's aiokafka transport with a cheaper hand-off of each fetched message to its stream.

faust's consumer hands every fetched message to the stream's queue through
``Service.wait_first(callback(message), suspend_flow.wait())``: four futures and an
``asyncio.wait`` per message, so that a rebalance (which sets ``suspend_flow``) can abandon a
hand-off that is blocked on a full or suspended queue. That machinery is about a third of a
no-op faust agent's CPU per message (see ``bench/faust_floor.py``).

:class:`DirectDeliveryConsumer` awaits the hand-off directly while flow is active, and keeps
faust's own path otherwise, with the same outcome in every case:

- flow active and the queue has room: the hand-off completes without waiting, as before;
- flow suspended (a rebalance under way) before the hand-off: faust's ``wait_first``, as before;
- a hand-off blocked on a full queue when a rebalance starts: faust suspends flow and clears
  the queues, which cancels the blocked put; the cancellation is taken as "abandoned by the
  rebalance" (what ``wait_first`` reports), never as the fetcher's own cancellation, which
  still propagates. The abandoned message is fetched again from the committed offset.

``consumer.wait_first`` is called by faust's consumer at that one place only (faust-streaming
0.15); the test in ``tests/test_faust_transport.py`` holds it to these cases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults


class DirectDeliveryConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, minus the per-message ``wait_first`` while flow is active."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Await a message hand-off directly when nothing can suspend it; else faust's way."""
        if not self._is_hand_off(coros, timeout) or not self._flow_active():
            return await super().wait_first(*coros, timeout=timeout)
        hand_off, suspended = coros
        suspended.close()  # the never-started ``suspend_flow.wait()`` coroutine
        try:
            result = await hand_off
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0 and self.suspend_flow.is_set():
                return WaitResults([], [], False)  # a rebalance cleared the queue under it
            raise
        return WaitResults([hand_off], [result], False)

    def _is_hand_off(self, coros: tuple[Any, ...], timeout: Any) -> bool:
        """True for the shape of the per-message call: a hand-off and ``suspend_flow.wait()``."""
        return (timeout is None and len(coros) == 2
                and all(isinstance(coro, Awaitable) for coro in coros)
                and getattr(coros[1], "__qualname__", "") == "Event.wait")

    def _flow_active(self) -> bool:
        return not self.suspend_flow.is_set() and bool(self.app.flow_control.is_active())


class DirectDeliveryTransport(faust_aiokafka.Transport):
    """The aiokafka transport whose consumer is :class:`DirectDeliveryConsumer`."""

    Consumer: ClassVar[Any] = DirectDeliveryConsumer
