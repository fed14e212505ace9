"""Bounded responses, with a real server process: ListWatchlists answers a
page at a time, never more than watchlist.max_list_page_size lists, so a
client with a small receive limit lists any store; CreateWatchlist beyond
watchlist.max_watchlists is refused TOO_MANY_WATCHLISTS and nothing of it is
stored."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.processes import SERVING, cli, serving
from verifier.client import reason_of
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

pytestmark = pytest.mark.slow

LISTS = 30
LIMITS = {"VERIFIER_WATCHLIST__MAX_WATCHLISTS": str(LISTS), "VERIFIER_WATCHLIST__LIST_PAGE_SIZE": "7",
          "VERIFIER_WATCHLIST__MAX_LIST_PAGE_SIZE": "10"}
DESCRIPTION = "d" * 1024
# Room for one page of 10 lists with 1 KiB descriptions, not for all 30.
CLIENT_RECEIVE_LIMIT = 16 * 1024


def _all_pages(stub: wl_grpc.WatchlistStub, page_size: int) -> list[list[str]]:
    pages, token = [], ""
    while True:
        answer = stub.ListWatchlists(wl.ListWatchlistsRequest(page_size=page_size, page_token=token), timeout=10)
        pages.append([w.name for w in answer.watchlists])
        token = answer.next_page_token
        if not token:
            return pages


def test_listing_is_paged_and_the_number_of_lists_capped(tmp_path: Path) -> None:
    assert cli(tmp_path, "watchlist", "init").returncode == 0
    names = sorted(f"list-{n:03d}" for n in range(LISTS))
    with serving(tmp_path, LIMITS) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, "verifier.v1.Watchlist", SERVING)
        stub = wl_grpc.WatchlistStub(channel)
        for name in names:
            stub.CreateWatchlist(wl.CreateWatchlistRequest(name=name, description=DESCRIPTION), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateWatchlist(wl.CreateWatchlistRequest(name="one-too-many"), timeout=10)
        assert (refused.value.code(), reason_of(refused.value)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "TOO_MANY_WATCHLISTS")

        default_pages = _all_pages(stub, 0)
        assert [len(page) for page in default_pages] == [7, 7, 7, 7, 2]
        assert sum(default_pages, []) == names
        assert [len(page) for page in _all_pages(stub, 1000)] == [10, 10, 10]
        assert sum(_all_pages(stub, 4), []) == names

        with pytest.raises(grpc.RpcError) as bad:
            stub.ListWatchlists(wl.ListWatchlistsRequest(page_token="not a token!"), timeout=10)
        assert (bad.value.code(), reason_of(bad.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")

        options = [("grpc.max_receive_message_length", CLIENT_RECEIVE_LIMIT)]
        with grpc.insecure_channel(server.address, options=options) as small:
            assert sum(_all_pages(wl_grpc.WatchlistStub(small), 0), []) == names
    stats = cli(tmp_path, "watchlist", "stats")
    assert stats.returncode == 0 and "one-too-many" not in stats.stdout, stats.stderr
