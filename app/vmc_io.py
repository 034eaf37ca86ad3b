"""VMC for the commands: a sender for ``track --vmc`` and ``call --vmc-out``, a live codes
source for ``call --codes vmc:PORT`` and ``view --vmc PORT`` (``net.vmc`` underneath).

A bare PORT to listen on means every interface (as VMC tools do, so that a phone or another
computer on the network can send); ``127.0.0.1:PORT`` accepts only this machine. A bare
PORT to send to means this machine.
"""

from __future__ import annotations

import sys

from app.cli import UserError

LISTEN_HOST = "0.0.0.0"
SEND_HOST = "127.0.0.1"


def _humanoid():
    from avatar.humanoid import Humanoid
    from avatar.template import load_template

    return Humanoid(load_template())


def open_sender(endpoint: str, option: str):
    """A ``VmcSender`` to ``HOST:PORT`` (or ``PORT``: this machine), or a UserError naming
    ``option``."""
    from net.vmc import VmcSender, parse_endpoint

    try:
        host, port = parse_endpoint(endpoint, SEND_HOST)
        return VmcSender(host, port, _humanoid())
    except ValueError as exc:
        raise UserError(f"{option}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{option}: cannot send to {endpoint}: {exc.strerror or exc}") from None


def open_receiver(endpoint: str, option: str):
    """A ``VmcReceiver`` on ``HOST:PORT`` (or ``PORT``: every interface), or a UserError."""
    from net.vmc import VmcReceiver, parse_endpoint

    try:
        host, port = parse_endpoint(endpoint, LISTEN_HOST)
        return VmcReceiver(host, port, _humanoid())
    except ValueError as exc:
        raise UserError(f"{option}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{option}: cannot listen on {endpoint}: {exc.strerror or exc}") from None


def sender_summary(sender) -> str:
    s = sender.stats
    host, port = sender.address[:2]
    line = (f"VMC sent {s.frames} frames to {host}:{port} "
            f"({s.bytes / max(s.frames, 1):.0f} bytes a frame)")
    if s.send_errors:
        line += f", {s.send_errors} datagrams not sent ({s.last_error})"
    return line


def receiver_summary(receiver) -> str:
    s = receiver.stats
    host, port = receiver.address
    line = (f"VMC on {host}:{port}: {s.datagrams} datagrams, {s.frames} codes frames, "
            f"{s.malformed} malformed, {s.unknown_bones} unknown bones, "
            f"{s.unknown_blendshapes} unknown blendshapes, {s.dropped_flood} dropped in floods")
    if s.unknown_names:
        common = sorted(s.unknown_names.items(), key=lambda kv: -kv[1])[:5]
        line += " (unknown: " + ", ".join(f"{n} x{c}" for n, c in common) + ")"
    return line


class VmcCodesSource:
    """Codes from a VMC sender, for the call loop: ``take()`` the newest frame if new."""

    def __init__(self, endpoint: str, option: str):
        self.receiver = open_receiver(endpoint, option)
        self.description = "VMC on {}:{}".format(*self.receiver.address)

    def start(self) -> None:
        pass  # the socket is polled by take(): no thread

    def take(self):
        return self.receiver.take()

    def stop(self) -> None:
        print(receiver_summary(self.receiver), file=sys.stderr)
        self.receiver.close()


class VmcPlayback:
    """The viewer's codes source for ``view --vmc``: whatever a VMC sender last sent (the
    rest pose before anything arrives), the same object while nothing changed. It has no
    recording and no pose, so the viewer has nothing to play, pause or step."""

    frames = None
    pose = None

    def __init__(self, endpoint: str, option: str):
        from avatar.codes import Codes

        self.receiver = open_receiver(endpoint, option)
        self._rest = Codes()

    def codes_at(self, elapsed_s: float):
        return self.receiver.latest() or self._rest

    def close(self) -> None:
        self.receiver.close()
