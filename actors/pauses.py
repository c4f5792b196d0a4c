"""Pausing a queue, or some job types in it, in plain Python.

A paused queue (or type) keeps accepting jobs and starts none of them; leases
already held run to their end. ``Pauses`` is the decision and its durable form
(one ``meta`` row of the queue's database, so a pause holds across an actor
restart); ``JobQueue.lease`` asks it before starting a job.

Pausing the whole queue while some types are paused keeps those types paused
after a whole-queue resume only if that resume names no types: ``resume()``
with no types resumes everything, ``resume(types)`` resumes just those types
(it is refused while the whole queue is paused, since "everything but these"
is not a state a pause can hold).
"""

from __future__ import annotations

from .exceptions import InvalidInput, InvalidTransition

META_KEY = "paused"
MAX_TYPES = 100


def check_types(types) -> list[str] | None:
    """``types`` of a pause, resume or purge: None (all) or a non-empty list of type names."""
    if types is None:
        return None
    if not isinstance(types, list) or not types or len(types) > MAX_TYPES or \
            not all(isinstance(t, str) and 0 < len(t) <= 200 for t in types):
        raise InvalidInput(f"types must be a non-empty list of at most {MAX_TYPES} job type names, got {types!r}",
                           field="types")
    return sorted(set(types))


class Pauses:
    """Which of a queue's job types may start now."""

    def __init__(self, stored: dict | None = None):
        stored = stored or {}
        self.queue = bool(stored.get("queue", False))
        self.types: set[str] = set(stored.get("types", ()))

    def paused(self, type_name: str) -> bool:
        return self.queue or type_name in self.types

    @property
    def any(self) -> bool:
        return self.queue or bool(self.types)

    def pause(self, types: list[str] | None = None) -> None:
        if types is None:
            self.queue = True
        else:
            self.types.update(types)

    def resume(self, types: list[str] | None = None) -> None:
        if types is None:
            self.queue, self.types = False, set()
            return
        if self.queue:
            raise InvalidTransition("the whole queue is paused; resume it (send no 'types'), then pause the types "
                                    "that should stay paused", field="types")
        self.types.difference_update(types)

    def to_dict(self) -> dict:
        return {"queue": self.queue, "types": sorted(self.types)}
