"""Subscribes to the replicas' vLLM KV-event publishers (ZMQ) from a router process.

One background thread polls every replica's sockets, decodes vLLM's ``KVEventBatch`` and
hands kaon's own event objects (``routing.kv_events``) to ``on_batch`` in that thread, in
sequence order; the receiver takes its own lock. Nothing here runs on the request path.

A router that subscribes late (it started after the replica, or routed nothing to it yet)
first asks the replica's replay socket for every batch vLLM still buffers, so it learns
the cache as it is, not only what changes from now on; the same happens whenever the live
feed skips a sequence number. Batches that arrive live during a replay are held and
delivered after it, each exactly once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch

from kaon.engine.stats import KVEventSource
from kaon.routing.kv_events import BlocksRemoved, BlocksStored, CacheCleared, KVEvent

logger = logging.getLogger("ray.serve")

BatchReceiver = Callable[[str, int, Sequence[KVEvent]], None]
_POLL_MS = 100
REPLAY_TIMEOUT_S = 5.0
_END_SEQ = (-1).to_bytes(8, "big", signed=True)


def to_kaon_events(events: Sequence[Any]) -> list[KVEvent]:
    """vLLM's events → kaon's; stores of blocks with multimodal or LoRA keys are left out
    (the router's keys cover text prompts of the base model)."""
    converted: list[KVEvent] = []
    for event in events:
        if isinstance(event, BlockStored):
            if event.lora_name is None and event.lora_id is None and _text_only(event):
                converted.append(BlocksStored(event.block_hashes, event.parent_block_hash, event.token_ids, event.block_size, _salt(event)))
        elif isinstance(event, BlockRemoved):
            converted.append(BlocksRemoved(event.block_hashes))
        elif isinstance(event, AllBlocksCleared):
            converted.append(CacheCleared())
    return converted


def _text_only(event: BlockStored) -> bool:
    return all(not isinstance(key, tuple) for keys in event.extra_keys or () for key in keys or ())


def _salt(event: BlockStored) -> str | None:
    """The first block's extra keys hold the request's ``cache_salt`` (as a plain string)."""
    first = event.extra_keys[0] if event.extra_keys else None
    return next((key for key in first or () if isinstance(key, str)), None)


@dataclass(slots=True)
class Sequencer:
    """Puts one replica's batches in order across the live feed and replays.

    ``live``/``replayed``/``replay_done`` return the (seq, payload) pairs now due, in
    order; ``replay_from`` is set when a replay should be asked for (from that sequence
    number) and cleared by whoever sends the request. A replay that brings nothing new
    gives up on the gap: the batches after it are delivered, and the gap shows downstream.
    """

    expected: int = 0
    replaying: bool = False
    replay_from: int | None = None
    held: dict[int, bytes] = field(default_factory=dict)
    _progress_at_request: int = -1

    def start_replay(self, from_seq: int) -> None:
        self.replaying, self.replay_from, self._progress_at_request = True, from_seq, self.expected

    def live(self, seq: int, payload: bytes) -> list[tuple[int, bytes]]:
        if seq < self.expected:
            return []
        self.held[seq] = payload
        if self.replaying:
            return []
        return self._release()

    def replayed(self, seq: int, payload: bytes) -> list[tuple[int, bytes]]:
        if seq < self.expected:
            return []
        self.expected = seq + 1
        return [(seq, payload)]

    def replay_done(self) -> list[tuple[int, bytes]]:
        stalled = self.expected == self._progress_at_request
        self.replaying = False
        return self._release(accept_gap=stalled)

    def _release(self, accept_gap: bool = False) -> list[tuple[int, bytes]]:
        due = []
        for seq in sorted(self.held):
            if seq < self.expected:
                del self.held[seq]
            elif seq == self.expected or accept_gap:
                due.append((seq, self.held.pop(seq)))
                self.expected = seq + 1
                accept_gap = False
            else:
                self.start_replay(self.expected)
                break
        return due


@dataclass(slots=True)
class _Subscription:
    replica_id: str
    source: KVEventSource
    live: zmq.Socket
    sequencer: Sequencer
    replay: zmq.Socket | None = None
    replay_deadline_s: float = 0.0


class KVEventListener:
    def __init__(self, on_batch: BatchReceiver):
        self._on_batch = on_batch
        self._commands: queue.SimpleQueue[tuple[str, KVEventSource | None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        self._thread = threading.Thread(target=self._run, name="kaon-kv-events", daemon=True)
        self._thread.start()

    def watch(self, replica_id: str, source: KVEventSource) -> None:
        self._commands.put((replica_id, source))
        self._wake.set()

    def unwatch(self, replica_id: str) -> None:
        self._commands.put((replica_id, None))
        self._wake.set()

    def _run(self) -> None:
        context = zmq.Context.instance()
        poller = zmq.Poller()
        subscriptions: dict[str, _Subscription] = {}
        owners: dict[zmq.Socket, _Subscription] = {}
        while True:
            if not owners:  # zmq's poll returns at once with no sockets: wait for a watch instead
                self._wake.wait(_POLL_MS / 1000)
            self._wake.clear()
            self._apply_commands(context, poller, subscriptions, owners)
            for sub in subscriptions.values():
                self._request_replay(context, poller, owners, sub)
            for sock, _ in poller.poll(_POLL_MS):
                sub = owners.get(sock)
                if sub is not None:
                    self._drain(sub, sock, poller, owners)
            for sub in subscriptions.values():
                if sub.replay is not None and time.monotonic() > sub.replay_deadline_s:
                    logger.warning("KV event replay from replica %s timed out", sub.replica_id)
                    self._end_replay(sub, poller, owners)

    def _apply_commands(self, context: zmq.Context, poller: zmq.Poller, subscriptions: dict, owners: dict) -> None:
        while not self._commands.empty():
            replica_id, source = self._commands.get()
            old = subscriptions.pop(replica_id, None)
            if old is not None:
                for sock in (old.live, old.replay):
                    if sock is not None:
                        poller.unregister(sock)
                        owners.pop(sock, None)
                        sock.close(linger=0)
            if source is not None:
                live = context.socket(zmq.SUB)
                live.setsockopt(zmq.SUBSCRIBE, b"")
                live.connect(source.endpoint)
                poller.register(live, zmq.POLLIN)
                sub = _Subscription(replica_id, source, live, Sequencer())
                if source.replay_endpoint:
                    sub.sequencer.start_replay(0)
                subscriptions[replica_id], owners[live] = sub, sub

    def _request_replay(self, context: zmq.Context, poller: zmq.Poller, owners: dict, sub: _Subscription) -> None:
        start = sub.sequencer.replay_from
        if start is None:
            return
        sub.sequencer.replay_from = None
        if not sub.source.replay_endpoint:  # nothing to ask: the gap stands
            self._deliver(sub, sub.sequencer.replay_done())
            return
        sub.replay = context.socket(zmq.DEALER)
        sub.replay.connect(sub.source.replay_endpoint)
        sub.replay.send_multipart((b"", start.to_bytes(8, "big")))
        sub.replay_deadline_s = time.monotonic() + REPLAY_TIMEOUT_S
        poller.register(sub.replay, zmq.POLLIN)
        owners[sub.replay] = sub

    def _drain(self, sub: _Subscription, sock: zmq.Socket, poller: zmq.Poller, owners: dict) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if sock is sub.live:
                _topic, seq, payload = frames
                self._deliver(sub, sub.sequencer.live(int.from_bytes(seq, "big"), payload))
            else:
                _empty, _topic, seq, payload = frames
                if seq == _END_SEQ:
                    self._end_replay(sub, poller, owners)
                    return
                self._deliver(sub, sub.sequencer.replayed(int.from_bytes(seq, "big"), payload))

    def _end_replay(self, sub: _Subscription, poller: zmq.Poller, owners: dict) -> None:
        poller.unregister(sub.replay)
        owners.pop(sub.replay, None)
        sub.replay.close(linger=0)
        sub.replay = None
        self._deliver(sub, sub.sequencer.replay_done())

    def _deliver(self, sub: _Subscription, batches: list[tuple[int, bytes]]) -> None:
        for seq, payload in batches:
            try:
                batch = self._decoder.decode(payload)
                self._on_batch(sub.replica_id, seq, to_kaon_events(batch.events))
            except Exception:  # noqa: BLE001 - one bad batch must not stop every replica's feed
                logger.exception("KV event batch %d from replica %s could not be applied", seq, sub.replica_id)
