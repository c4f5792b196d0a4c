"""`dojo up`'s Ray head binds what Ray lets it to 127.0.0.1 (no Ray started here)."""

from __future__ import annotations

from serve.launcher import head_args


def test_the_head_listens_on_loopback_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("DOJO_RAY_START_ARGS", raising=False)
    args = head_args()
    assert "--node-ip-address=127.0.0.1" in args and "--dashboard-host=127.0.0.1" in args
    # A head that other machines join names its real address; dojo then adds no loopback of its own.
    joined = head_args(extra="--num-cpus=0 --node-ip-address=10.1.2.3")
    assert "--node-ip-address=10.1.2.3" in joined and "--node-ip-address=127.0.0.1" not in joined
    assert head_args(num_cpus=2, extra="")[-1] == "--num-cpus=2"
