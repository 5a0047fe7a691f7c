"""A walk (`find`) through the namespace, without a mount, against the moto server: when
the walk outlives the stat cache, the directories it comes to are known again from the
listings it fetched ahead, with no request of their own (with s3fs's markers, and
without: implicit directories), unless a listing shows that a marker changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from engine_support import make_engine, make_namespace, put_marker
from faultproxy import FaultProxy

from run_s3fs.fs.core.namespace import Namespace

STAT_TTL = 0.5  # outlived by the walk below
LISTING_TTL = 5.0  # a listing fetched ahead serves this long


@contextmanager
def walk_started(
    server_url: str, s3, bucket: str, markers: bool
) -> Iterator[tuple[Namespace, FaultProxy]]:
    """A tree of six directories (with s3fs's markers, or only keys below them), listed,
    and its first two directories looked up: the others' markers are fetched ahead."""
    if markers:
        put_marker(s3, bucket, "tree/")
    for d in range(6):
        if markers:
            put_marker(s3, bucket, f"tree/d{d}/")
        s3.put_object(Bucket=bucket, Key=f"tree/d{d}/f", Body=b"x")
    proxy = FaultProxy(server_url).start()
    engine = make_engine(proxy.url, bucket)
    ns = make_namespace(engine, stat_ttl=STAT_TTL, negative_ttl=LISTING_TTL, max_in_flight=8)
    try:
        ns.lookup("/tree")
        ns.read_dir("/tree")
        for d in range(2):
            ns.lookup(f"/tree/d{d}")
        yield ns, proxy
    finally:
        engine.close()
        proxy.stop()


@pytest.mark.parametrize("markers", [True, False], ids=["markers", "implicit"])
def test_a_walk_past_the_stat_cache_knows_its_directories_from_their_listings(
    s3_server, s3, bucket, markers
):
    with walk_started(s3_server.url, s3, bucket, markers) as (ns, proxy):
        known = ns.lookup("/tree/d2")  # from the HEAD fetched ahead (none: implicit)
        assert known.is_dir and known.mode == (0o40755 if markers else 0o40750)
        ns.forget("/tree/d2")
        for d in range(2):
            ns.read_dir(f"/tree/d{d}")  # the second: the next listings are fetched ahead
        for d in range(2, 6):
            assert ns.listings_ahead.peek(f"/tree/d{d}") is not None
        time.sleep(STAT_TTL + 0.2)  # every directory's attributes have expired
        before = proxy.stats.requests
        proxy.seen.clear()
        for d in range(2, 6):
            attr = ns.lookup(f"/tree/d{d}")
            assert attr == known, attr
            assert "f" in ns.read_dir(f"/tree/d{d}")
        # Before, each lookup asked three questions (an object? its marker? keys below?).
        # Now: nothing for the lookups, and no more than a listing or two for the readdirs
        # that the lead had not reached yet.
        assert not [r for r in proxy.seen if r.startswith("HEAD")], list(proxy.seen)
        assert proxy.stats.requests - before <= 2, list(proxy.seen)


def test_a_marker_a_listing_shows_changed_is_asked_for_again(s3_server, s3, bucket):
    with walk_started(s3_server.url, s3, bucket, markers=True) as (ns, proxy):
        time.sleep(1.1)  # the next second: a new Last-Modified
        put_marker(s3, bucket, "tree/d5/", mtime="1800000000")
        for d in range(2):
            ns.read_dir(f"/tree/d{d}")  # d5's listing is fetched ahead, after the change
        listing = ns.listings_ahead.peek("/tree/d5")
        assert listing is not None and listing.files[0].key == "tree/d5/"
        time.sleep(STAT_TTL + 0.2)
        proxy.seen.clear()
        attr = ns.lookup("/tree/d5")
        assert attr.mtime_ns == 1800000000 * 10**9  # asked, not taken from what it was
        assert [r for r in proxy.seen if r.startswith("HEAD")], list(proxy.seen)
