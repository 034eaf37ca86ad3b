"""Voice sources and sinks: the tone, a file source, the missing-microphone fallback, WAV
recording read back with pyav, and bad source specs."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from net.audio import (AudioRecorder, SilenceTrack, ToneTrack, dominant_frequency_hz,
                       frame_to_mono, open_audio_source)


async def _read(track, n, stop=False):
    frames = [await track.recv() for _ in range(n)]
    if stop:  # a file player's reader thread must end while the loop still runs
        track.stop()
        await asyncio.sleep(0.2)
    return frames


def test_tone_track_is_paced_48k_audio_of_its_frequency():
    frames = asyncio.run(_read(ToneTrack(523.25), 25))
    assert all(f.sample_rate == 48000 and f.samples == 960 for f in frames)
    samples = np.concatenate([frame_to_mono(f) for f in frames])
    assert abs(dominant_frequency_hz(samples, 48000) - 523.25) < 1.0
    assert [f.pts for f in frames[:3]] == [0, 960, 1920]


def test_recorded_wav_reads_back_and_serves_as_a_file_source(tmp_path):
    path = tmp_path / "tone.wav"
    recorder = AudioRecorder(path)
    for frame in asyncio.run(_read(ToneTrack(880), 50)):
        recorder.write(frame)
    recorder.close()
    with av.open(str(path)) as container:
        data = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert len(data) == 50 * 960
    assert abs(dominant_frequency_hz(data / 32768.0, 48000) - 880) < 1.0

    track, description = open_audio_source(str(path))
    assert "tone.wav" in description
    frames = asyncio.run(_read(track, 20, stop=True))
    samples = np.concatenate([frame_to_mono(f) for f in frames])
    assert abs(dominant_frequency_hz(samples, frames[0].sample_rate) - 880) < 2.0


def test_a_missing_microphone_means_a_warning_and_silence(caplog):
    track, description = open_audio_source("mic")
    if not isinstance(track, SilenceTrack):
        track.stop()
        pytest.skip("this machine has a microphone; the fallback cannot be seen here")
    assert "no microphone" in description
    assert any("no microphone could be opened" in r.message for r in caplog.records)
    frames = asyncio.run(_read(track, 3))
    assert np.all(frame_to_mono(frames[0]) == 0)


@pytest.mark.parametrize("spec, message", [
    ("tone:abc", "not a number"), ("tone:5", "20..20000"),
    ("/no/such/file.wav", "is not 'mic'"),
])
def test_bad_sources_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        open_audio_source(spec)


def test_a_file_without_audio_is_refused(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF not really a wav file at all")
    with pytest.raises(ValueError, match="cannot read audio|no audio"):
        open_audio_source(str(path))


def test_none_means_no_track():
    assert open_audio_source("none") == (None, "no audio")
