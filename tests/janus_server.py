"""Start Debian's Janus (the SFU for rooms beyond a mesh) in its own network namespace, for
tests and benchmarks on one machine.

libnice (Janus's ICE) ignores loopback addresses, so Janus gets a namespace with one end of
a veth pair (``10.77.N.2``) and the peers use the other end (``10.77.N.1``) as their only
host candidate (``net.loopback.use_host_addresses``). Janus is configured from scratch in a
temporary folder: only the VideoRoom plugin, the HTTP transport (``url``) and the WebSocket
one (``ws_url``) on the veth address, ICE on the veth only. Needs root (namespaces) and
``janus`` and ``ip`` installed (scripts/apt/test-net.txt). ``JanusServer.unavailable()``
says why it cannot run, if so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

PLUGINS = "/usr/lib/x86_64-linux-gnu/janus"
_UNWANTED_PLUGINS = ("audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip",
                     "streaming", "textroom", "videocall", "voicemail")
_UNWANTED_TRANSPORTS = ("mqtt", "nanomsg", "pfunix", "rabbitmq")


class JanusServer:
    """``with JanusServer() as janus:`` then ``janus.url`` (HTTP API), ``janus.ws_url``
    (WebSocket API) and ``janus.client_address`` (the host-side veth address peers must
    use)."""

    def __init__(self, subnet: int | None = None, port: int = 8088, ws_port: int = 8188):
        self.subnet = subnet if subnet is not None else 100 + os.getpid() % 100
        tag = f"{os.getpid() % 10000}{self.subnet % 100:02d}"  # two may run at once
        self.namespace = f"scjanus{tag}"
        self.veth_host, self.veth_janus = f"vsc{tag}h", f"vsc{tag}j"
        self.client_address = f"10.77.{self.subnet}.1"
        self.janus_address = f"10.77.{self.subnet}.2"
        self.port = port
        self.url = f"http://{self.janus_address}:{port}/janus"
        self.ws_port = ws_port
        self.ws_url = f"ws://{self.janus_address}:{ws_port}"
        self._dir: Path | None = None
        self._process: subprocess.Popen | None = None

    @staticmethod
    def unavailable() -> str | None:
        """Why Janus cannot be started here, or None."""
        if shutil.which("janus") is None:
            return "Debian's janus is not installed (scripts/setup.sh test installs it)"
        if shutil.which("ip") is None:
            return "iproute2's ip is not installed"
        if os.geteuid() != 0:
            return "network namespaces need root"
        return None

    def _ip(self, *args: str, namespace: bool = False) -> None:
        command = (["ip", "netns", "exec", self.namespace] if namespace else []) + ["ip", *args]
        subprocess.run(command, check=True, capture_output=True, timeout=10)

    def start(self, timeout_s: float = 20.0) -> "JanusServer":
        reason = self.unavailable()
        if reason:
            raise RuntimeError(reason)
        self.stop_network()
        self._ip("netns", "add", self.namespace)
        self._ip("link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_janus)
        self._ip("link", "set", self.veth_janus, "netns", self.namespace)
        self._ip("addr", "add", f"{self.client_address}/24", "dev", self.veth_host)
        self._ip("link", "set", self.veth_host, "up")
        self._ip("addr", "add", f"{self.janus_address}/24", "dev", self.veth_janus, namespace=True)
        self._ip("link", "set", self.veth_janus, "up", namespace=True)
        self._ip("link", "set", "lo", "up", namespace=True)
        self._dir = Path(tempfile.mkdtemp(prefix="janus-"))
        self._write_config(self._dir)
        return self._launch(timeout_s)

    def crash(self) -> None:
        """SIGKILL Janus (its namespace and configuration stay, for ``restart``)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def restart(self, timeout_s: float = 20.0) -> "JanusServer":
        """Start Janus again after ``crash``, at the same addresses, with no rooms."""
        self.crash()
        return self._launch(timeout_s)

    def _launch(self, timeout_s: float) -> "JanusServer":
        assert self._dir is not None
        log = open(self._dir / "janus.log", "a")
        self._process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "janus", "-C", str(self._dir / "janus.jcfg"),
             "-F", str(self._dir), "-d", os.environ.get("JANUS_DEBUG", "3")],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"janus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url.replace("/janus", "/janus/info"),
                                            timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("janus did not answer within " f"{timeout_s:g} s")

    def _write_config(self, folder: Path) -> None:
        (folder / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{folder}"
    plugins_folder = "{PLUGINS}/plugins"
    transports_folder = "{PLUGINS}/transports"
    events_folder = "{PLUGINS}/events"
    loggers_folder = "{PLUGINS}/loggers"
    debug_level = 3
    session_timeout = 60
    interface = "{self.janus_address}"
}}
media: {{ }}
nat: {{
    ice_enforce_list = "{self.veth_janus}"
}}
plugins: {{
    disable = "{",".join(f"libjanus_{p}.so" for p in _UNWANTED_PLUGINS)}"
}}
transports: {{
    disable = "{",".join(f"libjanus_{t}.so" for t in _UNWANTED_TRANSPORTS)}"
}}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ }}
""")
        (folder / "janus.transport.http.jcfg").write_text(f"""
general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {self.port}
    ip = "{self.janus_address}"
    https = false
}}
admin: {{ admin_http = false }}
""")
        (folder / "janus.transport.websockets.jcfg").write_text(f"""
general: {{
    json = "compact"
    ws = true
    ws_port = {self.ws_port}
    ws_ip = "{self.janus_address}"
    wss = false
}}
admin: {{ admin_ws = false }}
""")
        (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")

    def log_tail(self, chars: int = 3000) -> str:
        if self._dir is None or not (self._dir / "janus.log").exists():
            return ""
        return (self._dir / "janus.log").read_text(errors="replace")[-chars:]

    def stop_network(self) -> None:
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth_host], capture_output=True)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self.stop_network()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "JanusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_janus(**options):
    """A module fixture's body: a started ``JanusServer(**options)``, stopped after (skips
    without Janus, fails when it does not start). Use as ``yield from serve_janus()``."""
    import pytest

    reason = JanusServer.unavailable()
    if reason:
        pytest.skip(f"Janus integration test needs: {reason}")
    server = JanusServer(**options)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"Janus did not start: {exc}")
    yield server
    server.stop()
