"""The CLI's process-wide settings belong to the `dojo` program, not to whoever calls main()."""

import signal

import pytest

from serve.cli import main


@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="no SIGPIPE on this platform")
def test_main_called_in_process_keeps_the_callers_sigpipe_handler():
    # Python ignores SIGPIPE so that a write to a closed pipe raises BrokenPipeError. A test or
    # notebook that runs a CLI command in-process must keep that: with the default handler restored,
    # its next write to a closed pipe (pytest's own output to CI) would kill it without a word.
    before = signal.getsignal(signal.SIGPIPE)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert signal.getsignal(signal.SIGPIPE) == before
