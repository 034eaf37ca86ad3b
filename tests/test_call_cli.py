"""The user-facing commands: help texts, tokens from `serve --make-token`, and one-line
errors for the mistakes a user can make with `call`."""

from __future__ import annotations

import pytest

from app.cli import main
from net.tokens import check_token, load_or_create_secret


@pytest.mark.parametrize("command", ["serve", "call"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_make_token_admits_to_its_room(tmp_path, capsys):
    secret_file = tmp_path / "secret.key"
    assert main(["serve", "--secret-file", str(secret_file), "--make-token", "den"]) == 0
    token = capsys.readouterr().out.strip()
    check_token(load_or_create_secret(secret_file), token, "den")


@pytest.mark.parametrize("extra, message", [
    (["--audio", "tone:abc"], "not a number"),
    (["--codes", "/no/such.jsonl"], "cannot read codes"),
    (["--fps", "0"], "--fps"),
    (["--avatar", "/no/such.lca"], "no such file"),
    (["--video", "/dev/no-such-camera"], "no camera"),
    ([], "cannot reach the signalling server"),
    (["--janus", "http://127.0.0.1:9/janus", "--room", "5"], "cannot reach Janus"),
    (["--janus", "http://127.0.0.1:9/janus"], "--room must be a number"),
])
def test_call_errors_are_one_line(tmp_path, capsys, extra, message):
    args = ["call", "--room", "r", "--secret-file", str(tmp_path / "k"), "--audio", "none",
            "--server", "ws://127.0.0.1:9/ws", "--duration", "1", *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err


def test_call_without_credentials_says_how_to_get_them(capsys):
    assert main(["call", "--room", "r", "--audio", "none"]) == 1
    assert "--make-token" in capsys.readouterr().err


def test_serve_refuses_a_bad_port(tmp_path, capsys):
    assert main(["serve", "--secret-file", str(tmp_path / "k"), "--port", "70000"]) == 1
    assert "port" in capsys.readouterr().err


@pytest.mark.slow
def test_a_call_with_an_audio_file_ends_without_a_thread_error(tmp_path):
    """The file's player thread is stopped while the call's event loop still runs: the normal
    end of `call --audio FILE` printed "Event loop is closed" from that thread before."""
    import subprocess
    import sys

    from tests.media import media_path
    from tests.processes import ROOT, free_port, wait_for

    clip = media_path("jwpIntro.mp4")
    port, secret = free_port(), tmp_path / "secret.key"
    server = subprocess.Popen([sys.executable, "main.py", "serve", "--port", str(port),
                               "--secret-file", str(secret)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import socket

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 20, "the signalling server")
        common = [sys.executable, "main.py", "call", "--server", f"ws://127.0.0.1:{port}/ws",
                  "--room", "r", "--secret-file", str(secret), "--loopback", "--no-window"]
        # A listener, so that the voice is really sent (the player's thread starts then).
        listener = subprocess.Popen([*common, "--name", "ears", "--audio", "none",
                                     "--duration", "8"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        call = subprocess.run([*common, "--name", "voice", "--audio", str(clip),
                               "--duration", "5"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        listener.wait(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = call.stdout + call.stderr
    assert call.returncode == 0, output[-2000:]
    assert "left the call" in output
    assert "Event loop is closed" not in output and "Traceback" not in output, output[-2000:]
