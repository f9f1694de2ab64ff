"""Subscribes to the replicas' vLLM KV-event publishers (ZMQ) from a router process.

One background thread polls every replica's socket, decodes vLLM's ``KVEventBatch`` and
hands kaon's own event objects (``routing.kv_events``) to ``on_batch`` in that thread; the
receiver takes its own lock. Nothing here runs on the request path.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import zmq
from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch

from kaon.routing.kv_events import BlocksRemoved, BlocksStored, CacheCleared, KVEvent

logger = logging.getLogger("ray.serve")

BatchReceiver = Callable[[str, int, Sequence[KVEvent]], None]
_POLL_MS = 100


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


class KVEventListener:
    def __init__(self, on_batch: BatchReceiver):
        self._on_batch = on_batch
        self._commands: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kaon-kv-events", daemon=True)
        self._thread.start()

    def watch(self, replica_id: str, endpoint: str) -> None:
        self._commands.put((replica_id, endpoint))

    def unwatch(self, replica_id: str) -> None:
        self._commands.put((replica_id, None))

    def _run(self) -> None:
        context = zmq.Context.instance()
        poller = zmq.Poller()
        sockets: dict[str, zmq.Socket] = {}
        owners: dict[zmq.Socket, str] = {}
        decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        while True:
            self._apply_commands(context, poller, sockets, owners)
            for sock, _ in poller.poll(_POLL_MS):
                self._drain(owners[sock], sock, decoder)

    def _apply_commands(self, context: zmq.Context, poller: zmq.Poller, sockets: dict, owners: dict) -> None:
        while not self._commands.empty():
            replica_id, endpoint = self._commands.get()
            old = sockets.pop(replica_id, None)
            if old is not None:
                poller.unregister(old)
                del owners[old]
                old.close(linger=0)
            if endpoint is not None:
                sock = context.socket(zmq.SUB)
                sock.setsockopt(zmq.SUBSCRIBE, b"")
                sock.connect(endpoint)
                poller.register(sock, zmq.POLLIN)
                sockets[replica_id], owners[sock] = sock, replica_id

    def _drain(self, replica_id: str, sock: zmq.Socket, decoder: msgspec.msgpack.Decoder) -> None:
        while True:
            try:
                _topic, seq, payload = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                batch = decoder.decode(payload)
                self._on_batch(replica_id, int.from_bytes(seq, "big"), to_kaon_events(batch.events))
            except Exception:  # noqa: BLE001 - one bad batch must not stop every replica's feed
                logger.exception("KV event batch from replica %s could not be applied", replica_id)
