"""A render's inputs, checked and stored: what ``POST /v1/renders`` and a batch row share.

Every check (sizes, types by content, image headers, ZIP bombs, file names,
counts, text lengths, options) runs in ``validate_render`` before the first
byte is stored; ``store_inputs`` writes under fresh keys (never the user's file
names) and deletes what it wrote if a write fails. No web framework here: job
processes and the batch driver import this module too.
"""

from __future__ import annotations

import secrets

from .deck import Deck, Limits, load_deck, sniff
from .job import RenderOptions

_EXTENSIONS = {"pdf": "pdf", "png": "png", "jpeg": "jpg", "zip": "zip", "markdown": "md"}


def validate_render(files: list[tuple[str, bytes]], script: tuple[str, bytes] | None, options: dict,
                    limits: Limits = Limits()) -> tuple[Deck, RenderOptions]:
    """Every check of a render request; raises InvalidInput and touches no storage."""
    render_options = RenderOptions.from_dict(options)
    deck = load_deck(files, script, limits)
    return deck, render_options


def store_inputs(store, files: list[tuple[str, bytes]], script: tuple[str, bytes] | None,
                 options: RenderOptions) -> dict:
    """Store validated inputs under fresh keys (never the user's file names); return the job payload."""
    prefix = f"inputs/u_{secrets.token_hex(8)}"
    deck_keys = [f"{prefix}/deck-{i:03d}.{_EXTENSIONS.get(sniff(data), 'bin')}" for i, (_, data) in enumerate(files)]
    script_key = f"{prefix}/script.txt" if script else None
    written: list[str] = []
    try:
        for key, (_, data) in zip(deck_keys, files):
            store.put_bytes(key, data)
            written.append(key)
        if script:
            store.put_bytes(script_key, script[1])
            written.append(script_key)
    except BaseException:
        delete_inputs(store, written)
        raise
    payload = {"deck": deck_keys, "names": [name for name, _ in files], "options": options.to_dict()}
    if script:
        payload["script"] = script_key
        payload["script_name"] = script[0]
    return payload


def delete_inputs(store, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # best effort: the original error is what the caller needs
            pass
