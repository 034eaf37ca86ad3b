"""Survey of the shared test clips: each decoded with PyAV, and our tracker run over its first
frames to see whether it finds a person there.

Per clip: file size, resolution, frame rate, frame count (every frame decoded), duration,
codec, and over the first ``--frames`` frames the share in which the tracker's codes mark
the face and the body valid. The Markdown table for docs/media.md goes to stdout.

Usage: python bench/media_survey.py [--frames 20] [--out bench/results/media_survey.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.codes import PART_INDEX  # noqa: E402
from tests.media import KNOWN, MEDIA_DIR  # noqa: E402
from tracking.sources import VideoSource  # noqa: E402
from tracking.tracker import Tracker  # noqa: E402

CLIPS = [name for name in KNOWN if name.endswith(".mp4")]


def probe(path: Path) -> dict:
    """Decode every frame: the container's claims checked against what decodes."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        times = [float(frame.time) for frame in container.decode(stream)]
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
    fps = float(rate) if rate else None
    return {"bytes": path.stat().st_size, "width": width, "height": height, "fps": fps,
            "frames": len(times), "duration_s": times[-1] + (1 / fps if fps else 0.0),
            "codec": codec}


def person_found(path: Path, frames: int) -> dict:
    """Share of the first ``frames`` frames where the tracker marks face / body valid."""
    face = body = seen = 0
    started = time.perf_counter()
    with Tracker() as tracker:
        source = VideoSource(path)
        try:
            while seen < frames and (frame := source.read()) is not None:
                codes = tracker.process(frame).codes
                face += bool(codes.valid[PART_INDEX["face"]])
                body += bool(codes.valid[PART_INDEX["body"]])
                seen += 1
        finally:
            source.close()
    return {"tracked_frames": seen, "face_share": face / max(seen, 1),
            "body_share": body / max(seen, 1),
            "track_ms_per_frame": (time.perf_counter() - started) * 1000 / max(seen, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20,
                        help="frames of each clip to track (default 20)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/media_survey.json",
                        help="where the JSON figures go")
    args = parser.parse_args()
    rows = {}
    for name in CLIPS:
        path = MEDIA_DIR / name
        if not path.is_file():
            print(f"{name}: absent (run scripts/setup.d/30-media.sh)", file=sys.stderr)
            continue
        print(f"{name}: decoding and tracking {args.frames} frames", file=sys.stderr)
        rows[name] = probe(path) | person_found(path, args.frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.date.today().isoformat(),
                                    "frames": args.frames, "clips": rows}, indent=1))
    print("| file | size | resolution | fps | frames | duration | codec | face / body found |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['bytes'] / 1e6:.2f} MB | {r['width']}x{r['height']} | "
              f"{r['fps']:g} | {r['frames']} | {r['duration_s']:.2f} s | {r['codec']} | "
              f"{r['face_share']:.0%} / {r['body_share']:.0%} of {r['tracked_frames']} |")


if __name__ == "__main__":
    main()
