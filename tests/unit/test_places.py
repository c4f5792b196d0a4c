"""In-flight places, the actor's side (actors/limits/places.py), on a plain event loop (no Ray)."""

from __future__ import annotations

import asyncio

from actors.limits.places import Places


def test_places_cap_holders_hand_a_freed_place_to_a_waiter_and_expire():
    async def scenario():
        places = Places()
        first = await places.acquire("host", 2, "a", want=5)
        assert len(first) == 2  # never more than the limit, however many are wanted
        assert await places.acquire("host", 2, "b", wait=0.05) == []  # none free: gives up after wait
        waiting = asyncio.create_task(places.acquire("host", 2, "c", wait=5))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        places.release("host", first[:1])
        assert len(await waiting) == 1  # the freed place went to the waiter
        assert await places.acquire("other", 1, "d") != []  # names are independent
        expiring = Places()
        await expiring.acquire("host", 1, "e", ttl=0.01)
        await asyncio.sleep(0.02)
        assert len(await expiring.acquire("host", 1, "f", wait=0)) == 1  # a dead holder's place expires

    asyncio.run(scenario())
