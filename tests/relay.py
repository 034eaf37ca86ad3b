"""A lossy UDP relay for tests and benchmarks: a poor network on loopback, without ``tc netem``.

Every UDP endpoint a peer advertises (its ICE host candidate) gets a stand-in socket on the
relay, and the peers are told the stand-ins' addresses instead (``rewrite_sdp``, used as a
``Call``'s ``remote_sdp_filter``). A datagram from real endpoint S arriving at the stand-in
of real endpoint D is sent on from S's stand-in to D, after dropping it and delaying it by
``delay_s`` plus uniform jitter in ``+-jitter_s`` (each way). Losses are random but
stratified: of every ``round(1 / loss)`` datagrams in one direction, exactly one, at a random
position, is dropped (two in a row happen, at block edges). The loss rate is then exact
rather than binomial, so a test of "at most 6% lost at 5% loss" is not a coin toss.
So each peer sees the other only at its stand-in address, ICE checks included, and every
packet of the call (STUN, DTLS, SCTP, RTP) crosses the bad link.

``blackout(seconds)`` drops every datagram, both ways, for that long: the network gone.

The relay runs its own event loop in a child process (``LossyRelay``) so that its timing
depends neither on the load of the loop that runs the peers nor on their GIL;
``RelayCore`` is the relay itself, usable in-process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import re
import socket
import threading
from dataclasses import dataclass, field

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ host.*)$",
                        re.IGNORECASE | re.MULTILINE)


@dataclass
class RelayStats:
    forwarded: int = 0
    dropped: int = 0
    by_pair: dict = field(default_factory=dict)


class RelayCore:
    def __init__(self, loss: float = 0.05, delay_s: float = 0.025, jitter_s: float = 0.005,
                 seed: int = 0, host: str = "127.0.0.1"):
        self.loss, self.delay_s, self.jitter_s = loss, delay_s, jitter_s
        self.host = host
        self.stats = RelayStats()
        self._random = random.Random(seed)
        self._block = max(1, round(1.0 / loss)) if loss > 0 else 0
        self._blocks: dict[tuple, tuple[int, int]] = {}  # direction -> (position, drop at)
        self._stand_in: dict[tuple[str, int], socket.socket] = {}   # real -> stand-in
        self._real_of: dict[int, tuple[str, int]] = {}               # stand-in port -> real
        self._lock = threading.Lock()
        self._dark_until = 0.0  # the loop's time until which everything is dropped
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lossy-relay",
                                        daemon=True)
        self._thread.start()

    # -- set-up --------------------------------------------------------------------------
    def stand_in_port(self, real: tuple[str, int]) -> int:
        """The relay port that stands for the real endpoint ``real`` (created on first use)."""
        with self._lock:
            sock = self._stand_in.get(real)
            if sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((self.host, 0))
                sock.setblocking(False)
                self._stand_in[real] = sock
                self._real_of[sock.getsockname()[1]] = real
                self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(),
                                                self._readable, sock)
            return sock.getsockname()[1]

    def rewrite_sdp(self, sdp: str) -> str:
        """Replace every UDP host candidate in ``sdp`` by its stand-in on the relay, and
        drop the others (so that no path bypasses the relay)."""
        def replace(match: re.Match) -> str:
            port = self.stand_in_port((match.group(2), int(match.group(3))))
            return f"{match.group(1)}{self.host} {port}{match.group(4)}"

        lines = []
        for line in sdp.splitlines():
            if line.startswith("a=candidate:"):
                if not _CANDIDATE.match(line):
                    continue
                line = _CANDIDATE.sub(replace, line)
            lines.append(line)
        return "\r\n".join(lines) + "\r\n"

    # -- forwarding ----------------------------------------------------------------------
    def _readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data, source = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            destination = self._real_of.get(sock.getsockname()[1])
            if destination is None:
                continue
            out = self._stand_in.get(source)
            if out is None:
                self.stand_in_port(source)
                out = self._stand_in[source]
            if self._loop.time() < self._dark_until or self._drop((source, destination)):
                self.stats.dropped += 1
                continue
            delay = self.delay_s + self._random.uniform(-self.jitter_s, self.jitter_s)
            self._loop.call_later(max(0.0, delay), self._send, out, data, destination)

    def blackout(self, seconds: float) -> None:
        """Drop everything for ``seconds`` from now."""
        def start():
            self._dark_until = self._loop.time() + seconds

        self._loop.call_soon_threadsafe(start)

    def _drop(self, direction: tuple) -> bool:
        if not self._block:
            return False
        position, drop_at = self._blocks.get(direction, (0, self._random.randrange(self._block)))
        drop = position == drop_at
        position += 1
        if position == self._block:
            position, drop_at = 0, self._random.randrange(self._block)
        self._blocks[direction] = (position, drop_at)
        return drop

    def _send(self, sock: socket.socket, data: bytes, destination) -> None:
        try:
            sock.sendto(data, destination)
            self.stats.forwarded += 1
        except OSError:
            pass

    def close(self) -> None:
        def shutdown():
            for sock in self._stand_in.values():
                self._loop.remove_reader(sock.fileno())
                sock.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(timeout=5)
        self._loop.close()


def _serve(conn, kwargs) -> None:
    core = RelayCore(**kwargs)
    try:
        while True:
            request = conn.recv()
            if request[0] == "port":
                conn.send(core.stand_in_port(request[1]))
            elif request[0] == "stats":
                conn.send(core.stats)
            elif request[0] == "blackout":
                core.blackout(request[1])
                conn.send(True)
            elif request[0] == "close":
                break
    except EOFError:
        pass
    finally:
        core.close()


class LossyRelay:
    """``RelayCore`` in a child process; the same ``rewrite_sdp``, ``stats`` and ``close``."""

    def __init__(self, **kwargs):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, kwargs), daemon=True,
                                        name="lossy-relay")
        self._process.start()
        self.host = kwargs.get("host", "127.0.0.1")
        self._final_stats: RelayStats | None = None

    def stand_in_port(self, real: tuple[str, int]) -> int:
        self._conn.send(("port", real))
        return self._conn.recv()

    rewrite_sdp = RelayCore.rewrite_sdp

    def blackout(self, seconds: float) -> None:
        self._conn.send(("blackout", seconds))
        self._conn.recv()

    @property
    def stats(self) -> RelayStats:
        if self._final_stats is not None:
            return self._final_stats
        self._conn.send(("stats",))
        return self._conn.recv()

    def close(self) -> None:
        if self._process.is_alive():
            self._final_stats = self.stats
            self._conn.send(("close",))
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
