"""Clip collection: crawl Twitch Helix "Get Clips" for many streamers into a SQLite database.

Layers, from the edge inwards:

- ``fake_helix``: a local Helix server (tests, demo, benchmark);
- ``limits``: the ``Limiter`` protocol every worker shares, and ``LocalLimiter``;
- ``helix``: the HTTP client (cursor, windows, rate-limit headers, retries);
- ``db``: the clip database (streamers, idempotent clip upserts, Parquet export);
- ``crawl``: ``crawl_streamer``, one streamer's work as a plain async function;
- ``jobs``: the dojo job types ``clips.crawl`` (parent) and ``clips.streamer`` (child);
- ``cli``: ``dojo crawl clips`` and ``dojo clips export`` (found through ``CLI`` below).
"""

CLI = "pipelines.clips.cli:add_commands"
