"""Frame sources on real files written by pyav and PIL, and the tracker's lost-source loop."""

from __future__ import annotations

import shutil
import time
from fractions import Fraction

import numpy as np
import pytest

from tracking.sources import (CameraSource, ImageSource, SourceError, SourceLost, VideoSource,
                              open_source)


def _write_video(path, frames=12, size=(64, 48), fps=30):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_source_reads_frames_with_times(tmp_path):
    path = tmp_path / "clip.mp4"
    _write_video(path)
    source = open_source(str(path))
    assert isinstance(source, VideoSource) and not source.live
    frames = list(source)
    assert len(frames) == 12
    assert frames[0].image.shape == (48, 64, 3)
    assert [f.index for f in frames] == list(range(12))
    times = [f.media_time_s for f in frames]
    assert times[0] == pytest.approx(0.0) and times[-1] == pytest.approx(11 / 30, abs=1e-3)
    assert all(b >= a for a, b in zip([f.t for f in frames], [f.t for f in frames][1:]))


def test_broken_video_reports_loss_then_ends(tmp_path):
    # MPEG-TS (as a camera stream or a recording cut by a crash would be): no index at the
    # end, so a cut file still opens.
    path = tmp_path / "clip.ts"
    _write_video(path, frames=60, size=(320, 240))
    data = path.read_bytes()
    broken = tmp_path / "broken.ts"
    # Cut the stream at two thirds and scribble over part of what is left.
    cut = bytearray(data[: len(data) * 2 // 3])
    cut[len(cut) // 2: len(cut) // 2 + 2000] = b"\xff" * 2000
    broken.write_bytes(bytes(cut))
    source = VideoSource(broken)
    got = 0
    lost = False
    while True:
        try:
            frame = source.read()
        except SourceLost:
            lost = True
            continue
        if frame is None:
            break
        got += 1
    assert 0 < got < 60
    # Either FFmpeg reported the damage (SourceLost) or it stopped at the cut cleanly; both
    # end the source without an exception escaping.
    assert source.read() is None
    assert lost or got < 60


def test_images_and_folders(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "c.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    single = open_source(str(tmp_path / "a.png"))
    assert [f.image.shape for f in single] == [(20, 30, 3)]
    folder = open_source(str(tmp_path))
    frames = list(folder)
    assert [f.name for f in frames] == ["a.png", "b.jpg"]
    assert [p.name for p, _ in folder.skipped] == ["c.png"]
    with pytest.raises(SourceError, match="not a readable image"):
        list(ImageSource(tmp_path / "c.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(empty))


def test_missing_inputs_give_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "nothing.mp4"))
    (tmp_path / "fake.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="not a readable video"):
        open_source(str(tmp_path / "fake.mp4"))


def test_missing_camera_lists_devices():
    with pytest.raises(SourceError) as info:
        CameraSource("/dev/video-does-not-exist")
    message = str(info.value)
    assert "not found" in message
    assert "devices found" in message or "no video devices" in message


def test_tracker_survives_a_lost_live_source(tmp_path):
    """A file behaving as a camera (paced, its end = unplugged) goes away and comes back:
    codes keep coming, marked invalid while it is away, valid again once it is back."""
    from tracking.tracker import Tracker, track

    clip = tmp_path / "cam.mp4"
    _write_video(clip, frames=6, size=(64, 48))
    away = tmp_path / "away.mp4"
    source = VideoSource(clip, live=True)
    events = []
    results = []
    state = {"moved_back": False}

    class CountingTracker(Tracker):
        """The real tracker with its detector replaced by a counter: these frames have no
        person in them, so a frame that was seen is what marks it (a stand-in, named so)."""

        def __init__(self):
            from avatar.codes import PARTS, Codes

            self.parts = PARTS
            self.seq = 0
            self._codes = Codes
            self._was_valid = np.zeros(len(PARTS), bool)

        def process(self, frame):
            from tracking.tracker import TrackResult

            codes = self._codes(t=frame.t, seq=self.seq)  # all parts "seen"
            self.seq += 1
            return TrackResult(codes, None, frame)

        def close(self):
            pass

    def on_event(message):
        events.append(message)
        if message.startswith("source lost") and clip.exists():
            shutil.move(clip, away)  # unplugged
            state["lost_at"] = time.monotonic()

    def should_stop():
        if (not state["moved_back"] and "lost_at" in state
                and time.monotonic() - state["lost_at"] > 0.3):
            shutil.move(away, clip)  # plugged back in
            state["moved_back"] = True
        return len(results) > 60

    tracker = CountingTracker()
    for result in track(source, tracker, reconnect_interval_s=0.05, on_event=on_event,
                        should_stop=should_stop):
        results.append(result)
        if len(results) > 60:
            break
    valid = [bool(r.codes.valid.all()) for r in results]
    invalid = [not r.codes.valid.any() for r in results]
    assert valid[:6] == [True] * 6
    first_gap = valid.index(False)
    assert first_gap == 6 and all(invalid[first_gap: first_gap + 3])
    assert any(valid[first_gap:]), "the source came back but no valid codes followed"
    assert any(e == "source is back" for e in events)
    seqs = [r.codes.seq for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
