"""`main.py call --janus` with a Janus that cannot be reached, over either of its APIs: one
`error:` line and exit status 1 (no Janus needed)."""

from __future__ import annotations

import pytest

from app.cli import main


@pytest.mark.parametrize("url", ["ws://127.0.0.1:9", "http://127.0.0.1:9/janus"])
def test_an_unreachable_janus_is_one_error_line(tmp_path, capsys, url):
    args = ["call", "--janus", url, "--room", "5", "--audio", "none", "--duration", "1",
            "--no-window"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not join: cannot reach Janus at " + url), err


@pytest.mark.parametrize("url", ["ws://127.0.0.1:9", "http://127.0.0.1:9/janus"])
def test_janus_s_http_api_is_joined_with_one_warning_about_crashes(capsys, url):
    args = ["call", "--janus", url, "--room", "5", "--audio", "none", "--duration", "1",
            "--no-window"]
    main(args)
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:")]
    if url.startswith("http"):
        assert len(warnings) == 1 and "ws://" in warnings[0] and "60 s" in warnings[0]
    else:
        assert warnings == []
