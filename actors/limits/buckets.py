"""Named token buckets shared by every worker of a queue (plain Python).

A bucket refills ``rate`` tokens per second up to ``burst``; a remote API's
"slow down" (429, ``Ratelimit-Reset``) pauses it until a time. The queue actor
holds the buckets, persists them with its state, and grants tokens to workers
in batches; a worker spends a token right before its request.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..exceptions import InvalidInput, NotFound

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


@dataclass
class Bucket:
    name: str
    rate: float
    burst: float
    tokens: float
    updated: float
    paused_until: float = 0.0
    granted: int = 0

    @classmethod
    def create(cls, name: str, rate, burst, now: float) -> "Bucket":
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidInput(f"bucket name must match {NAME.pattern}, got {name!r}")
        for label, value in (("rate", rate), ("burst", burst)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidInput(f"bucket {label} must be a number > 0, got {value!r}")
        return cls(name, float(rate), float(burst), float(burst), now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, want: int, now: float) -> tuple[int, float]:
        """Grant up to ``want`` whole tokens now; returns (granted, seconds until the next one)."""
        if isinstance(want, bool) or not isinstance(want, int) or want < 1:
            raise InvalidInput(f"want must be a whole number >= 1, got {want!r}")
        self._refill(now)
        if now < self.paused_until:
            return 0, self.paused_until - now
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        self.granted += granted
        wait = 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate
        return granted, wait

    def pause(self, until: float, now: float) -> None:
        self._refill(now)
        self.paused_until = max(self.paused_until, until)

    def to_dict(self) -> dict:
        return asdict(self)


class Buckets:
    """The buckets of one queue, persisted through its store (staged with the commit that answers)."""

    def __init__(self, store):
        self.store = store
        self.buckets = {name: Bucket(**data) for name, data in store.buckets().items()}

    def define(self, name: str, rate, burst, now: float) -> dict:
        """Create or change a bucket; what was spent stays spent (redefining must not refill it)."""
        bucket = Bucket.create(name, rate, burst, now)
        old = self.buckets.get(name)
        if old is not None:
            old._refill(now)
            bucket.tokens = min(old.tokens, bucket.burst)
            bucket.paused_until, bucket.granted = old.paused_until, old.granted
        self.buckets[name] = bucket
        return self._save(bucket)

    def get(self, name: str) -> Bucket:
        try:
            return self.buckets[name]
        except KeyError:
            raise NotFound(f"no rate-limit bucket {name!r}; define it with PUT /v1/ratelimits/{name}") from None

    def take(self, name: str, want: int, now: float, rate=None, burst=None) -> dict:
        """Grant tokens of a bucket (created with ``rate``/``burst`` on first use when given)."""
        if name not in self.buckets and rate is not None:
            self.define(name, rate, burst if burst is not None else rate, now)
        bucket = self.get(name)
        granted, wait = bucket.take(want, now)
        self._save(bucket)
        return {"granted": granted, "retry_after": round(wait, 4)}

    def pause(self, name: str, until: float, now: float) -> dict:
        bucket = self.get(name)
        bucket.pause(until, now)
        return self._save(bucket)

    def _save(self, bucket: Bucket) -> dict:
        data = bucket.to_dict()
        self.store.put_bucket(bucket.name, data)
        return data
