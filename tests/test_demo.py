"""The README's main job, end to end on real parts: mediapipe tracks a real clip, two aiortc
participants talk through the signalling server on loopback (the sender's avatar is fetched
and validated by the receiver), and the received session is rendered with its voice."""

import av
import numpy as np
import pytest

from app import demo_avatar
from app.cli import main
from avatar.codes import read_jsonl
from tests.media import media_path


@pytest.mark.slow
def test_demo_call_tracks_sends_and_renders(tmp_path, capsys):
    clip = media_path("jwpIntro.mp4")
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--clip", str(clip), "--out", str(out), "--max-seconds", "1.5",
                 "--height", "128", "--fps", "15", "--no-window"]) == 0
    log = capsys.readouterr().err
    assert "the sender's avatar arrived over the call" in log, log
    # The talker as himself: the set-up (scripts/setup.d/60-demo-avatar.sh) created his own
    # avatar from the clip, and the demo sent that one.
    created = demo_avatar.find(clip)
    assert created is not None, "scripts/setup.sh creates the demo clip's avatar"
    assert f"the talker's own avatar, created from the clip by the set-up: {created.name}" in log
    with av.open(str(out)) as container:
        kinds = sorted(s.type for s in container.streams)
        assert kinds == ["audio", "video"]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(out)) as container:
        audio = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert len(frames) >= 15 and frames[0].shape[0] == 128
    assert np.abs(audio).max() > 0.01, "the clip's voice should arrive"
    avatar_panel = frames[-1][:, -128:]
    assert np.any(avatar_panel < 200), "the avatar should be in its panel"
    received = read_jsonl(out.with_suffix(".codes.jsonl"))
    assert len(received) == len(frames)
    assert np.mean([c.is_valid("face") for c in received]) > 0.8
