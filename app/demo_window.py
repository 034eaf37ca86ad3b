"""The demo in the call window: where there is a display, ``main.py demo`` shows the
receiver's side of its call live, as ``main.py call`` does (the sender's avatar once it has
arrived, the self-view driven by the codes being sent, the overlay), and plays the received
voice on the speakers, delayed like the avatar; without a display it writes its video as
before (app.demo_cmd)."""

from __future__ import annotations

import time

WINDOW_START_S = 120.0


class DemoWindow:
    """The call window (its own process, ``app.call_window.WindowLink``) and the speakers,
    fed once per display tick of the demo's receiver."""

    def __init__(self, link, say, speaker: str | None = None):
        from app.call_window import CallMonitor
        from app.speakers import VoiceMixer, open_speakers

        self.link = link
        self._monitor = lambda: CallMonitor(link.controls)
        self.monitor = None  # made when the first pose plays out
        self.mixer = VoiceMixer()
        self.speakers, note = open_speakers(self.mixer, speaker)
        say(f"speakers: {note}" if self.speakers is not None
            else f"{note}: the demo goes on without sound")
        self._avatars_sent: set[str] = set()
        self._playout_s: dict[str, float] = {}

    @property
    def closed(self) -> bool:
        return self.link.closed

    def voice(self, remote_id: str, samples) -> None:
        """A received voice frame (float mono): to the overlay's level and the speakers."""
        from app.speakers import voice_delay_s

        if self.monitor is not None:
            self.monitor.voice(remote_id, samples)
        if self.speakers is not None:
            self.mixer.push(remote_id, samples, time.monotonic(), voice_delay_s(
                self._playout_s.get(remote_id, 0.0), self.link.display_s))

    def tick(self, call, poses: dict, own_codes, now_s: float) -> None:
        """One display tick: the receiver's remotes and their played-out poses to the window,
        and any remote avatar that has arrived meanwhile."""
        self.link.poll()
        if self.monitor is None and poses:
            self.monitor = self._monitor()  # its uptime (--screenshot-at) from the first pose
        for remote_id, remote in call.remotes.items():
            self._playout_s[remote_id] = remote.playout.delay_s
            said = call.avatars.remotes.get(remote_id)
            if (remote_id not in self._avatars_sent and said is not None
                    and said.status == "ready" and said.sha256):
                self.link.avatar(remote_id, call.avatars.cache_dir / f"{said.sha256}.lca")
                self._avatars_sent.add(remote_id)
        if self.monitor is not None:
            self.monitor.tick(call.remotes, poses, own_codes, now_s)
            self.link.show(self.monitor.latest)

    def close(self) -> None:
        self.link.stop()
        if self.speakers is not None:
            self.speakers.close()


def open_demo_window(args, say) -> DemoWindow | None:
    """The window for the demo, or None (no display, ``--no-window``, or it did not open:
    ``say`` gets one line why, and the demo writes its video instead)."""
    from app.call_window import WindowLink, WindowOptions
    from app.view_cmd import no_display_reason

    if args.no_window:
        return None
    reason = no_display_reason()
    if reason:
        say(f"{reason}: writing the demo to {args.out}")
        return None
    link = WindowLink(WindowOptions("demo", 960, 540, 60.0, None, args.screenshot,
                                    args.screenshot_at))
    error = link.wait_ready(WINDOW_START_S)
    if error:
        link.stop()
        say(f"{error}: writing the demo to {args.out}")
        return None
    return DemoWindow(link, say)
