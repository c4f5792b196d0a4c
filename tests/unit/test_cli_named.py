"""``dojo trigger`` and ``dojo hook`` add|list|rm: what each asks the API and what it prints.

The CLI's ``Client`` is replaced by a stand-in that records the calls and answers like the API.
"""

from __future__ import annotations

import json

import pytest

from serve import cli


class RecordingClient:
    def __init__(self):
        self.calls: list[tuple] = []

    def _call(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        return {"called": name}

    def put_trigger(self, *args, **kwargs):
        return self._call("put_trigger", *args, **kwargs)

    def delete_trigger(self, *args, **kwargs):
        return self._call("delete_trigger", *args, **kwargs)

    def put_hook(self, *args, **kwargs):
        return self._call("put_hook", *args, **kwargs)

    def delete_hook(self, *args, **kwargs):
        return self._call("delete_hook", *args, **kwargs)

    def triggers(self, queue):
        self.calls.append(("triggers", (), {"queue": queue}))
        return [{"name": "t1", "channel": "c", "match": {"ok": True}, "job": {"type": "echo"}, "fired": 2,
                 "last_error": "boom"}]

    def hooks(self, queue):
        self.calls.append(("hooks", (), {"queue": queue}))
        return [{"name": "h1", "channel": "c", "received": 3}]


@pytest.fixture
def client(monkeypatch):
    fake = RecordingClient()
    monkeypatch.setattr(cli, "Client", lambda: fake)
    return fake


def test_add_sends_what_the_flags_say_and_prints_the_answer(client, capsys):
    cli.main(["trigger", "add", "t1", "--channel", "c", "--type", "echo", "--payload", '{"a": 1}',
              "--match", '{"ok": true}', "--queue", "q"])
    cli.main(["hook", "add", "h1", "--channel", "c", "--rotate"])
    assert client.calls == [
        ("put_trigger", ("t1", "c", {"type": "echo", "payload": {"a": 1}}, {"ok": True}), {"queue": "q"}),
        ("put_hook", ("h1", "c"), {"rotate": True, "queue": "default"}),
    ]
    assert capsys.readouterr().out == (json.dumps({"called": "put_trigger"}, indent=2) + "\n"
                                       + json.dumps({"called": "put_hook"}, indent=2) + "\n")


def test_list_prints_a_line_each(client, capsys):
    cli.main(["trigger", "list", "--queue", "q"])
    cli.main(["hook", "list"])
    assert client.calls == [("triggers", (), {"queue": "q"}), ("hooks", (), {"queue": "default"})]
    assert capsys.readouterr().out.splitlines() == [
        f"{'t1':<24} on {'c':<20} match {json.dumps({'ok': True}):<30} -> {'echo':<16} fired 2  last error: boom",
        f"{'h1':<24} -> {'c':<20} received 3",
    ]


def test_rm_deletes_by_name(client, capsys):
    cli.main(["trigger", "rm", "t1"])
    cli.main(["hook", "rm", "h1", "--queue", "q"])
    assert client.calls == [("delete_trigger", ("t1",), {"queue": "default"}), ("delete_hook", ("h1",), {"queue": "q"})]


@pytest.mark.parametrize("argv, usage", [
    (["trigger", "add", "t1", "--channel", "c"],
     "error: dojo trigger add NAME --channel CHANNEL --type TYPE [--payload JSON] [--match JSON]"),
    (["hook", "add", "h1"], "error: dojo hook add NAME --channel CHANNEL [--rotate]"),
    (["trigger", "rm"], "error: dojo trigger rm NAME"),
    (["hook", "rm"], "error: dojo hook rm NAME"),
])
def test_a_missing_argument_says_the_usage_and_calls_nothing(client, argv, usage):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert str(exc.value) == usage and client.calls == []
