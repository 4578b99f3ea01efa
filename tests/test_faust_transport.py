"""The direct message hand-off keeps faust's outcomes (processors/faust_transport.py).

Real faust objects throughout (app, flow control, queue, consumer); no broker is needed, the
consumer is never started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import pytest
from mode.utils.queues import ThrowableQueue

from processors.faust_transport import DirectDeliveryConsumer, DirectDeliveryTransport


async def _consumer() -> tuple[faust.App, DirectDeliveryConsumer]:
    loop = asyncio.get_running_loop()
    app = faust.App("leadhub-test-transport", broker="kafka://127.0.0.1:1", web_enabled=False,
                    loop=loop)
    transport = DirectDeliveryTransport(app.conf.broker_consumer, app, loop=loop)

    async def never_called(*args: Any) -> None:  # the consumer is never started
        raise AssertionError("unexpected call")

    consumer = transport.create_consumer(callback=never_called,
                                         on_partitions_revoked=never_called,
                                         on_partitions_assigned=never_called)
    assert isinstance(consumer, DirectDeliveryConsumer)
    app.flow_control.resume()  # as a started worker has it
    return app, consumer


def _stream_queue(app: faust.App) -> ThrowableQueue[Any]:
    """A full queue made as faust makes a stream's (``Channel.queue``)."""
    return app.FlowControlQueue(maxsize=1, clear_on_resume=True)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=10))


def test_active_flow_hands_off_in_the_fetchers_own_task() -> None:
    async def scenario() -> None:
        _, consumer = await _consumer()
        fetcher = asyncio.current_task()

        async def hand_off() -> str:
            assert asyncio.current_task() is fetcher  # no task per message
            return "delivered"

        coro = hand_off()
        done, results, stopped = await consumer.wait_first(coro, consumer.suspend_flow.wait())
        assert (done, results, stopped) == ([coro], ["delivered"], False)

    _run(scenario)


def test_suspended_flow_keeps_faust_behaviour() -> None:
    async def scenario() -> None:
        _, consumer = await _consumer()
        consumer.suspend_flow.set()
        never = asyncio.Event()
        suspended = consumer.suspend_flow.wait()
        done, _, stopped = await consumer.wait_first(never.wait(), suspended)
        assert done == [suspended] and not stopped

    _run(scenario)


def test_a_rebalance_abandons_a_hand_off_blocked_on_a_full_queue() -> None:
    async def scenario() -> None:
        app, consumer = await _consumer()
        queue = _stream_queue(app)
        await queue.put("first")

        async def rebalance() -> None:
            await asyncio.sleep(0.05)
            # What faust's App.on_partitions_revoked does, in its order.
            consumer.stop_flow()
            app.flow_control.suspend()
            app.flow_control.clear()

        started = asyncio.ensure_future(rebalance())
        done, results, stopped = await consumer.wait_first(
            queue.put("second"), consumer.suspend_flow.wait())
        await started
        assert (done, results, stopped) == ([], [], False)
        assert queue.empty()

    _run(scenario)


def test_cancelling_the_fetcher_still_cancels_it() -> None:
    async def scenario() -> None:
        app, consumer = await _consumer()
        queue = _stream_queue(app)
        await queue.put("first")
        fetcher = asyncio.ensure_future(
            consumer.wait_first(queue.put("second"), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.05)
        consumer.stop_flow()  # even with flow suspended, the fetcher's own cancel propagates
        fetcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetcher

    _run(scenario)
