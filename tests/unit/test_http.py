"""serve/http.py helpers, without a server."""

import asyncio

from serve.http import with_keepalive


async def test_keepalives_do_not_end_a_quiet_stream():
    async def slow():
        for i in range(2):
            await asyncio.sleep(0.25)
            yield i

    got = [item async for item in with_keepalive(slow(), every=0.05)]
    assert [g for g in got if g is not None] == [0, 1]  # both items arrive after the keep-alives
    assert got.count(None) >= 4


async def test_a_failing_source_raises_through():
    async def broken():
        yield 1
        raise RuntimeError("feed broke")

    seen = []
    try:
        async for item in with_keepalive(broken(), every=1):
            seen.append(item)
    except RuntimeError as exc:
        assert str(exc) == "feed broke"
    else:
        raise AssertionError("the error was swallowed")
    assert seen == [1]
