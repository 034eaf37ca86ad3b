"""The OpenXR session's state machine (``Lifecycle``): what the application must do as the
runtime moves its session between states. Free of runtime calls, so it is tested alone.

READY -> ``xrBeginSession``; STOPPING -> ``xrEndSession``; EXITING or LOSS_PENDING (or an
instance loss) -> the frame loop ends. A user's exit asks the runtime first
(``xrRequestExitSession``) while the session runs."""

from __future__ import annotations

import enum

class SessionState(enum.IntEnum):
    """XrSessionState's values (fixed by the OpenXR specification)."""
    UNKNOWN = 0
    IDLE = 1
    READY = 2
    SYNCHRONIZED = 3
    VISIBLE = 4
    FOCUSED = 5
    STOPPING = 6
    LOSS_PENDING = 7
    EXITING = 8


class Lifecycle:
    """What the application must do as the runtime moves its session between states.

    ``on_state`` returns "begin" (call xrBeginSession), "end" (call xrEndSession) or None;
    ``running`` says the frame loop must run; ``done`` that the loop must end (then
    ``exit_reason`` says why)."""

    def __init__(self) -> None:
        self.state = SessionState.UNKNOWN
        self.running = False
        self.done = False
        self.exit_requested = False
        self.exit_reason: str | None = None
        self.lost = False

    def on_state(self, state: int) -> str | None:
        self.state = SessionState(int(state))
        if self.state == SessionState.READY and not self.done:
            self.running = True
            return "begin"
        if self.state == SessionState.STOPPING:
            was_running, self.running = self.running, False
            return "end" if was_running else None
        if self.state == SessionState.EXITING:
            self._finish("the viewer was asked to exit" if self.exit_requested
                         else "the OpenXR runtime ended the session")
        elif self.state == SessionState.LOSS_PENDING:
            self.lost = True
            self._finish("the OpenXR session was lost (headset disconnected or runtime stopped)")
        return None

    def on_instance_loss(self) -> None:
        self.on_lost("the OpenXR runtime is going away (instance loss pending)")

    def on_lost(self, reason: str) -> None:
        """The runtime is gone (an event said so, or a call failed with a loss)."""
        self.lost = True
        self.running = False
        self._finish(reason)

    def request_exit(self) -> bool:
        """The user wants to leave. True when the runtime must be asked
        (xrRequestExitSession) because the session is running; else the loop just ends."""
        first = not self.exit_requested
        self.exit_requested = True
        if self.running and not self.done:
            return first
        self._finish("the viewer was asked to exit")
        return False

    @property
    def focused(self) -> bool:
        return self.state == SessionState.FOCUSED

    def _finish(self, reason: str) -> None:
        if not self.done:
            self.done, self.exit_reason = True, reason
