"""The router's KV-event subscriber: ordering across live feed and replay, and a late
subscriber catching up from a real vLLM ZmqEventPublisher (no Ray)."""

import threading
import time

from vllm.distributed.kv_events import BlockStored, KVEventBatch, ZmqEventPublisher

from kaon.deployments.kv_event_listener import KVEventListener, Sequencer
from kaon.engine.stats import KVEventSource
from kaon.routing.kv_events import BlocksStored


def seqs(batches):
    return [seq for seq, _ in batches]


def test_live_batches_pass_in_order_and_duplicates_are_dropped():
    order = Sequencer()
    assert seqs(order.live(0, b"a")) == [0]
    assert seqs(order.live(1, b"b")) == [1]
    assert order.live(1, b"b") == []


def test_a_late_subscriber_holds_live_batches_until_the_replay_ends():
    order = Sequencer()
    order.start_replay(0)
    order.replay_from = None  # the listener sent the request
    assert order.live(5, b"live") == []
    assert [seqs(order.replayed(seq, b"r")) for seq in range(5)] == [[0], [1], [2], [3], [4]]
    assert order.live(6, b"live") == []
    assert seqs(order.replay_done()) == [5, 6]
    assert order.replay_from is None and not order.replaying


def test_a_gap_in_the_live_feed_asks_for_a_replay_from_the_first_missing_batch():
    order = Sequencer()
    order.live(0, b"a")
    assert order.live(3, b"d") == []
    assert order.replaying and order.replay_from == 1
    order.replay_from = None
    assert seqs(order.replayed(1, b"b") + order.replayed(2, b"c") + order.replay_done()) == [1, 2, 3]


def test_a_replay_that_brings_nothing_gives_up_on_the_gap():
    order = Sequencer()
    order.live(0, b"a")
    order.live(3, b"d")
    assert seqs(order.replay_done()) == [3]
    assert seqs(order.live(4, b"e")) == [4]


def _stored(block_hash: int) -> KVEventBatch:
    event = BlockStored(block_hashes=[block_hash], parent_block_hash=None, token_ids=list(range(4)), block_size=4, lora_id=None, medium="CPU", lora_name=None)
    return KVEventBatch(ts=time.time(), events=[event])


def test_a_late_subscriber_gets_what_vllm_buffered_then_the_live_feed_once_each():
    publisher = ZmqEventPublisher(data_parallel_rank=0, endpoint="tcp://*:0", replay_endpoint="tcp://*:0", topic="kv")
    config = publisher.get_publisher_config()
    received: list[tuple[int, list]] = []
    done = threading.Event()

    def on_batch(replica_id, seq, events):
        received.append((seq, events))
        if len(received) == 5:
            done.set()

    try:
        for block_hash in range(3):
            publisher.publish(_stored(block_hash))
        time.sleep(0.5)  # published before anyone listens
        listener = KVEventListener(on_batch)
        listener.watch("r0", KVEventSource(config.endpoint, config.replay_endpoint))
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        for block_hash in range(3, 5):
            publisher.publish(_stored(block_hash))
        assert done.wait(10), received
    finally:
        publisher.shutdown()
    assert [seq for seq, _ in received] == [0, 1, 2, 3, 4]
    assert all(isinstance(events[0], BlocksStored) for _, events in received)
    assert [events[0].engine_hashes for _, events in received] == [[0], [1], [2], [3], [4]]


def _cpu_s_over(seconds: float) -> float:
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start


def test_a_listener_with_nothing_to_watch_sleeps():
    """A router with no replica's events to read (before its first request, at zero replicas)
    once spun a whole core: zmq's poll returns at once when it has no sockets."""
    publisher = ZmqEventPublisher(data_parallel_rank=0, endpoint="tcp://*:0", replay_endpoint="tcp://*:0", topic="kv")
    config = publisher.get_publisher_config()
    try:
        listener = KVEventListener(lambda *batch: None)
        assert _cpu_s_over(1.0) < 0.25  # spinning costs ~1 s of CPU per second
        listener.watch("r0", KVEventSource(config.endpoint, config.replay_endpoint))
        listener.unwatch("r0")
        assert _cpu_s_over(1.0) < 0.25
    finally:
        publisher.shutdown()
