"""The precise index: engine KV events re-hashed into the router's keys, and the fallback."""

from kaon.routing.hashing import block_hashes
from kaon.routing.kv_events import BlocksRemoved, BlocksStored, CacheCleared, EventTracker
from kaon.routing.prefix_index import PrefixIndex

BLOCK = 4
TOKENS = list(range(100, 112))  # three full blocks
KEYS = block_hashes(TOKENS, BLOCK)


def tracker(**options):
    index = PrefixIndex(capacity_blocks=1000, ttl_s=600)
    fallbacks = []
    events = EventTracker(index, BLOCK, gap_ttl_s=5, silence_timeout_s=10, on_fallback=lambda r, why: fallbacks.append((r, why)), **options)
    return index, events, fallbacks


def stored(engine_hashes, parent, tokens, salt=None, block=BLOCK):
    return BlocksStored(engine_hashes, parent, tokens, block, salt)


def test_stored_blocks_match_the_routers_keys_across_events():
    index, events, _ = tracker()
    events.on_batch("r0", 0, [stored([b"a", b"b"], None, TOKENS[:8])], now_s=0)
    events.on_batch("r0", 1, [stored([b"c"], b"b", TOKENS[8:])], now_s=1)
    assert events.is_live("r0")
    assert index.matched_blocks(KEYS, now_s=2) == {"r0": 3}


def test_salted_blocks_match_only_the_same_tenant():
    index, events, _ = tracker()
    events.on_batch("r0", 0, [stored([1, 2, 3], None, TOKENS, salt="tenant-a")], now_s=0)
    assert index.matched_blocks(block_hashes(TOKENS, BLOCK, "tenant-a"), now_s=1) == {"r0": 3}
    assert index.matched_blocks(KEYS, now_s=1) == {}


def test_removals_and_clears_follow_the_engine():
    index, events, _ = tracker()
    events.on_batch("r0", 0, [stored([1, 2, 3], None, TOKENS)], now_s=0)
    events.on_batch("r0", 1, [BlocksRemoved([3])], now_s=1)
    assert index.matched_blocks(KEYS, now_s=1) == {"r0": 2}
    events.on_batch("r0", 2, [CacheCleared()], now_s=2)
    assert index.matched_blocks(KEYS, now_s=2) == {}


def test_a_block_whose_parent_was_never_reported_is_skipped():
    index, events, _ = tracker()
    events.on_batch("r0", 0, [stored([9], b"unknown", TOKENS[4:8])], now_s=0)
    assert index.matched_blocks(KEYS, now_s=1) == {}


def test_live_replica_keeps_routed_entries_only_for_the_gap():
    index, events, _ = tracker()
    events.on_batch("r0", 0, [stored([1], None, TOKENS[:4])], now_s=0)
    index.insert("r0", KEYS, now_s=0)  # routed: the other blocks are not reported yet
    assert index.matched_blocks(KEYS, now_s=1) == {"r0": 3}
    assert index.matched_blocks(KEYS, now_s=6) == {"r0": 1}  # only the reported block remains


def test_sequence_gap_falls_back_and_keeps_what_was_known_as_approximate():
    index, events, fallbacks = tracker()
    events.on_batch("r0", 0, [stored([1, 2, 3], None, TOKENS)], now_s=0)
    events.on_batch("r0", 5, [], now_s=100)
    assert fallbacks == [("r0", "sequence_gap")]
    assert events.is_live("r0")  # the new batch itself is good
    assert index.matched_blocks(KEYS, now_s=100) == {"r0": 3}
    assert index.matched_blocks(KEYS, now_s=106) == {}  # demoted entries age out


def test_silence_after_a_request_that_must_store_blocks_falls_back():
    index, events, fallbacks = tracker()
    events.on_batch("r0", 0, [stored([1], None, TOKENS[:4])], now_s=0)
    events.on_routed("r0", KEYS[:1], now_s=1)  # already cached exactly: no event expected
    events.check(now_s=50)
    assert fallbacks == []
    events.on_routed("r0", KEYS, now_s=50)
    events.check(now_s=55)
    assert fallbacks == []
    events.check(now_s=61)
    assert fallbacks == [("r0", "silent")] and not events.is_live("r0")
    assert index.matched_blocks(KEYS, now_s=62) == {"r0": 1}


def test_a_different_block_size_disables_the_replicas_events():
    index, events, fallbacks = tracker()
    events.on_batch("r0", 0, [stored([1], None, TOKENS[:8], block=8)], now_s=0)
    events.on_batch("r0", 1, [stored([1], None, TOKENS[:8], block=8)], now_s=1)
    assert fallbacks == [("r0", "block_size_mismatch")]
    assert not events.is_live("r0") and index.matched_blocks(KEYS, now_s=2) == {}
