"""The Markdown deck parser runs in linear time: it sees the whole upload before any per-slide limit."""

import pytest

from pipelines.render.deck import split_markdown

MB = 1_000_000


# The timeout only catches a hang (the old regular expressions took hours on these); nothing asserts a time.
@pytest.mark.timeout(120)
@pytest.mark.parametrize("crafted, slides", [
    ("\n" * MB, []),  # `^\s*---+\s*$` over lines: every line start rescans every later blank line
    (" \n" * (MB // 2), []),
    ("<!--" * (MB // 4), [("<!--" * (MB // 4), "")]),  # `<!--(.*?)-->` with no end: every start scans to the end
    ("<!-- a -->" + "<!--" * (MB // 4), [("<!--" * (MB // 4), "a")]),
    ("---\n" * (MB // 4), []),
], ids=["blank-lines", "space-lines", "open-comments", "closed-then-open-comments", "separators"])
def test_crafted_markdown_parses_in_linear_time(crafted, slides):
    assert split_markdown(crafted) == slides


def test_separators_comments_and_notes_keep_their_meaning():
    text = "# A\n  ---  \n# B <!-- one --> x\n<!-- two\nlines -->\n-----\nNote: said\nmore\n---\n<!-- unclosed\n"
    assert split_markdown(text) == [("# A", ""), ("# B  x", "one\ntwo\nlines"), ("", "said\nmore"),
                                    ("<!-- unclosed", "")]
