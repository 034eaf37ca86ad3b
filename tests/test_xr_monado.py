"""Integration: the headset viewer against a real OpenXR runtime, Monado, headless.

scripts/setup.d/50-xr.sh (``scripts/setup.sh test``) builds a Debian trixie root with Monado
in .cache/xr-root. Here the project's sources are copied into it, /proc is mounted (nothing
else), ``monado-service`` runs with the null compositor, and ``python -m app.xr_view`` (the
code behind ``main.py view --xr``) runs inside the root with the Khronos validation layer,
drawing the default avatar into Monado's swapchains through EGL (XR_MNDX_egl_enable,
surfaceless Mesa). The runtime is stopped by its process id at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / ".cache" / "xr-root"
SOURCES = ("app", "avatar", "common", "render", "assets")
RUNTIME_DIR = "/tmp/splatcall-xr"         # inside the root
BACKGROUND = np.array([20, 20, 26])       # DEFAULT_BACKGROUND (0.08, 0.08, 0.10) as bytes
FRAMES = 60

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the Monado root needs root to chroot into"
    if not (ROOT / ".splatcall-xr").exists():
        return ("no Monado root in .cache/xr-root: run `scripts/setup.sh test` as root "
                "(scripts/setup.d/50-xr.sh builds it)")
    return None


if _skip_reason():
    pytest.skip(_skip_reason(), allow_module_level=True)


def _chroot(*command: str, env: dict | None = None) -> list[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/root", "XDG_RUNTIME_DIR": RUNTIME_DIR,
            "PYTHONPATH": "/opt/splatcall", "PYTHONDONTWRITEBYTECODE": "1"}
    base.update(env or {})
    return ["chroot", str(ROOT), "/usr/bin/env", "-i",
            *(f"{k}={v}" for k, v in base.items()), *command]


class Monado:
    def __init__(self, process: subprocess.Popen, log: Path):
        self.process, self.log = process, log

    def client(self, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
        return subprocess.run(_chroot("/bin/sh", "-c", "cd /opt/splatcall && exec "
                                      "/opt/venv/bin/python " + " ".join(args)),
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def monado(tmp_path_factory):
    target = ROOT / "opt" / "splatcall"
    target.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:  # the code under test, fresh for every run
        shutil.rmtree(target / name, ignore_errors=True)
        shutil.copytree(REPO / name, target / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for stale in (ROOT / "tmp").glob("xr-*"):  # no output of an earlier run may pass for ours
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    proc_dir = ROOT / "proc"
    mounted_here = subprocess.run(["mountpoint", "-q", str(proc_dir)]).returncode != 0
    if mounted_here:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], check=True)
    log = tmp_path_factory.mktemp("monado") / "monado.log"
    process = _start_monado(RUNTIME_DIR, log)
    try:
        yield Monado(process, log)
    finally:
        _stop_monado(process)
        if mounted_here:
            subprocess.run(["umount", str(proc_dir)], check=False)
        shutil.rmtree(ROOT / RUNTIME_DIR.lstrip("/"), ignore_errors=True)


def _start_monado(runtime_dir_in_root: str, log: Path) -> subprocess.Popen:
    """monado-service (null compositor) listening in ``runtime_dir_in_root``; /proc must be
    mounted in the root."""
    runtime_dir = ROOT / runtime_dir_in_root.lstrip("/")
    shutil.rmtree(runtime_dir, ignore_errors=True)
    runtime_dir.mkdir(mode=0o700, parents=True)
    with log.open("w") as handle:
        process = subprocess.Popen(
            _chroot("monado-service", env={"XRT_COMPOSITOR_NULL": "1", "XRT_NO_STDIN": "1",
                                           "XDG_RUNTIME_DIR": runtime_dir_in_root}),
            stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (runtime_dir / "monado_comp_ipc").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_monado(process)
            pytest.fail(f"monado-service did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return process


def _stop_monado(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)  # by its process id (chroot and env exec it)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _validation_complaints(output: str) -> list[str]:
    """Lines where the validation layer or the viewer reported a warning or an error."""
    return [line for line in output.splitlines()
            if "VALID_ERROR" in line or "VALID_WARNING" in line or line.startswith("OpenXR error")
            or line.startswith("OpenXR warning")]


def test_viewer_runs_in_monado_with_no_validation_message(monado, tmp_path):
    result = monado.client("-m", "app.xr_view", "--avatar", "default", "--pose", "rest",
                           "--xr-graphics", "egl", "--xr-validation",
                           "--xr-frames", str(FRAMES), "--xr-capture", "/tmp/xr-capture",
                           "--xr-stats", "/tmp/xr-stats.json")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    stats = json.loads((ROOT / "tmp" / "xr-stats.json").read_text())

    # A real runtime, the frame loop ran >= 60 frames, the session walked out cleanly.
    assert stats["runtime"].startswith("Monado")
    assert sum(f["rendered"] for f in stats["frames"]) >= FRAMES
    assert stats["exit_reason"] == "the viewer was asked to exit"
    states = [line.split()[-1] for line in output.splitlines()
              if line.startswith("OpenXR session ")]
    assert states[:5] == ["IDLE", "READY", "SYNCHRONIZED", "VISIBLE", "FOCUSED"], states
    assert states[-3:] == ["STOPPING", "IDLE", "EXITING"], states
    # The validation layer was on and said nothing at warning or above.
    assert "Core Validation Layer is initialized" in output
    assert stats["messages"] == [] and _validation_complaints(output) == []
    # One pose for a still avatar, however many frames.
    assert stats["poses"] == 1

    # The swapchain images as stored: the background bytes are our sRGB values unchanged
    # (sRGB swapchain, GL_FRAMEBUFFER_SRGB off), and the avatar stands in both eyes.
    assert stats["color_is_srgb"] is True
    eyes = [np.load(ROOT / "tmp" / "xr-capture" / f"{eye}.npy") for eye in ("left", "right")]
    centres = []
    for image in eyes:
        assert image.shape == (*stats["eye_size"][::-1], 4)
        np.testing.assert_array_equal(image[0, 0, :3], BACKGROUND)
        avatar = np.abs(image[..., :3].astype(int) - BACKGROUND).sum(axis=-1) > 12
        rows, cols = np.nonzero(avatar)
        assert 0.02 < avatar.mean() < 0.6, avatar.mean()   # a person, not noise, not a wall
        height_px = rows.max() - rows.min()
        assert height_px > 0.35 * image.shape[0]            # life-size and near: a big figure
        centres.append(cols.mean())
        # Straight ahead: the figure is centred left-right within a tenth of the image.
        assert abs(cols.mean() / image.shape[1] - 0.5) < 0.1
        # Upright, head at the top: hair and skin (red over blue) above the blue shirt.
        top = avatar & (np.arange(image.shape[0])[:, None] < rows.min() + 0.08 * height_px)
        shirt = avatar & (np.abs(np.arange(image.shape[0])[:, None]
                                 - (rows.min() + 0.3 * height_px)) < 0.05 * height_px)
        assert image[top][:, 0].mean() > image[top][:, 2].mean()
        assert image[shirt][:, 2].mean() > image[shirt][:, 0].mean()
    # Stereo: each eye got its own view; a near object sits further right in the left eye.
    assert centres[0] - centres[1] > 0.5


@pytest.fixture
def xvfb():
    """An X server for the GLX binding. The client in the root reaches it through X's
    abstract socket (@/tmp/.X11-unix/X<n>), which needs no mount."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb; scripts/apt/test-xr.txt)")
    display = 90 + os.getpid() % 400
    process = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "640x480x24",
                                "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{display}").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"Xvfb :{display} did not start")
        time.sleep(0.05)
    try:
        yield f":{display}"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_glx_binding_runs_in_monado(monado, xvfb):
    result = subprocess.run(
        _chroot("/bin/sh", "-c", "cd /opt/splatcall && exec /opt/venv/bin/python -m app.xr_view "
                "--xr-graphics glx --xr-validation --xr-frames 8 --xr-capture /tmp/xr-glx "
                "--xr-stats /tmp/xr-glx.json", env={"DISPLAY": xvfb}),
        capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    stats = json.loads((ROOT / "tmp" / "xr-glx.json").read_text())
    assert stats["graphics"] == "glx" and stats["messages"] == []
    assert _validation_complaints(output) == []
    assert stats["exit_reason"] == "the viewer was asked to exit"
    image = np.load(ROOT / "tmp" / "xr-glx" / "left.npy")
    np.testing.assert_array_equal(image[0, 0, :3], BACKGROUND)
    assert (np.abs(image[..., :3].astype(int) - BACKGROUND).sum(axis=-1) > 12).mean() > 0.02


def test_animated_codes_are_posed_every_frame_in_monado(monado):
    result = monado.client("-m", "app.xr_view", "--pose", "wave", "--xr-graphics", "egl",
                           "--xr-frames", "6", "--xr-stats", "/tmp/xr-stats-wave.json",
                           timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    stats = json.loads((ROOT / "tmp" / "xr-stats-wave.json").read_text())
    rendered = sum(f["rendered"] for f in stats["frames"])
    assert rendered >= 6 and stats["poses"] >= rendered - 1


def test_runner_thread_takes_codes_from_another_thread(monado):
    """The call app's path: the XR loop on its own thread, codes fed from the main one."""
    script = (
        "import time\n"
        "from app.poses import POSES\n"
        "from app.xr_view import XrRunner, XrStage\n"
        "from avatar.avatar import load_avatar\n"
        "from render.gl_pose import GLPoser\n"
        "stage = XrStage(poser=GLPoser())\n"
        "stage.add('peer', load_avatar('default'))\n"
        "runner = XrRunner(stage, graphics='egl', validation=True).start()\n"
        "runner.ready.wait(60)\n"
        "sent, t0 = 0, time.monotonic()\n"
        "while runner.frames_shown < 8 and time.monotonic() - t0 < 120:\n"
        "    stage.set_codes('peer', POSES['wave'].codes(sent / 30))\n"
        "    sent += 1\n"
        "    time.sleep(1 / 30)\n"
        "print('reason', runner.stop(30))\n"
        "print('frames', runner.frames_shown, 'poses', stage.pose_count, 'sent', sent)\n"
        "print('messages', len(runner._target.messages))\n"
    )
    result = monado.client("-c", _shell_quote(script), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reason the viewer was asked to exit" in result.stdout
    words = result.stdout.split("frames ")[1].split()
    frames, poses = int(words[0]), int(words[2])
    assert frames >= 8 and poses >= 4          # new codes were posed as they came in
    assert "messages 0" in result.stdout


def test_gpu_posed_headset_image_matches_the_numpy_posed_one(monado):
    """Two participants (their own codes, their own places in the room) posed on the GPU in
    a real session, validation layer on. The swapchain images as stored are then compared
    with the same frame drawn offscreen by the same target: GPU-posed again (the offscreen
    path is the swapchain path: the same bytes) and numpy-posed (the same room)."""
    script = (
        "import numpy as np\n"
        "from app.poses import POSES\n"
        "from app.xr_view import XrStage\n"
        "from avatar.avatar import load_avatar\n"
        "from render.gl_pose import GLPoser\n"
        "from render.skinned import NumpyPoser, PosedAvatars\n"
        "from render.xr import XrFrame, XrTarget\n"
        "avatar = load_avatar('default')\n"
        "stage = XrStage(distance_m=2.2, poser=GLPoser())\n"
        "stage.add('alice', avatar, POSES['wave'].codes(0.4))\n"
        "stage.add('bob', avatar, POSES['smile'].codes(0.0))\n"
        "with XrTarget('egl', validation=True) as target:\n"
        "    target.capture = True\n"
        "    target.run(stage, max_frames=4)\n"
        "    cameras = target.captured_cameras\n"
        "    frame = XrFrame(0, 0, 0, cameras, np.eye(4), 0.0)\n"
        "    room = stage(frame)\n"
        "    print('content', type(room).__name__, 'poses', stage.pose_count)\n"
        "    again = target.draw_offscreen(room, cameras)\n"
        "    stage.poser = NumpyPoser()\n"
        "    cpu = target.draw_offscreen(stage(frame), cameras)\n"
        "    print('gpu', isinstance(room, PosedAvatars), 'messages', len(target.messages))\n"
        "    np.save('/tmp/xr-posing.npy', np.stack([np.stack(target.captured),\n"
        "                                          np.stack(again), np.stack(cpu)]))\n"
    )
    result, output = _run_script(monado, script, timeout=300)
    assert "content PosedAvatars poses 2" in result.stdout   # posed once each, on the GPU
    assert "gpu True messages 0" in result.stdout and _validation_complaints(output) == []
    swapchain, again, cpu = np.load(ROOT / "tmp" / "xr-posing.npy").astype(int)
    np.testing.assert_array_equal(again, swapchain)
    for eye in range(2):
        figure = np.abs(cpu[eye, ..., :3] - BACKGROUND).sum(axis=-1) > 12
        assert figure.mean() > 0.05                          # both participants in view
        occupied = figure.any(axis=0).astype(int)           # two people: two runs of columns
        assert np.count_nonzero(np.diff(occupied) == 1) + occupied[0] == 2
        diff = np.abs(swapchain[eye] - cpu[eye]).max(axis=-1)
        print(f"eye {eye}: mean |diff| {diff.mean():.4f} levels, "
              f"{(diff > 2).mean():.3%} of pixels over 2 levels, max {diff.max()}")
        assert diff.mean() < 0.1 and (diff > 2).mean() < 0.002


def test_avatar_the_gpu_poser_refuses_is_posed_in_numpy(monado):
    """An avatar beyond the GPU poser's limits (its template has 13 skin influences a vertex;
    the shader takes 12): one line says so, the session goes on posing in numpy, validation
    stays silent, and the figure is there."""
    script = (
        "import dataclasses, numpy as np\n"
        "from app.xr_view import XrStage\n"
        "from avatar.avatar import Avatar, load_avatar\n"
        "from render.gl_pose import GLPoser\n"
        "from render.xr import XrTarget\n"
        "a = load_avatar('default')\n"
        "t = a.template\n"
        "pad = np.zeros((len(t.vertices), 13 - t.skin_indices.shape[1]))\n"
        "wide = dataclasses.replace(t, skin_indices=np.hstack([t.skin_indices, pad.astype(\n"
        "    t.skin_indices.dtype)]), skin_weights=np.hstack([t.skin_weights, pad.astype(\n"
        "    t.skin_weights.dtype)]))\n"
        "warnings = []\n"
        "stage = XrStage(poser=GLPoser(), warn=warnings.append)\n"
        "stage.add('wide', Avatar(a.data, wide))\n"
        "with XrTarget('egl', validation=True) as target:\n"
        "    target.capture = True\n"
        "    target.run(stage, max_frames=3)\n"
        "    print('gpu', stage.poser.where == 'gl', 'messages', len(target.messages),\n"
        "          'shown', target.frames_shown)\n"
        "    np.save('/tmp/xr-refused.npy', target.captured[0])\n"
        "print('warnings', warnings)\n"
    )
    result, output = _run_script(monado, script, timeout=300)
    assert "gpu False messages 0 shown 3" in result.stdout and _validation_complaints(output) == []
    warnings = result.stdout.split("warnings ")[1]
    assert warnings.count("GPU posing unavailable") == 1 and "13 skin influences" in warnings
    image = np.load(ROOT / "tmp" / "xr-refused.npy")
    assert (np.abs(image[..., :3].astype(int) - BACKGROUND).sum(axis=-1) > 12).mean() > 0.02


def test_image_backend_reaches_the_swapchain(monado):
    """The path of the cuda backend in the headset (BackendGLRenderer: the backend's image
    into a texture, one pass into the swapchain image), driven here by the reference renderer
    through host memory, which is also cuda's fallback when CUDA-GL interop cannot run: the
    stored bytes are the backend's image of that frame, upright, in both eyes."""
    script = (
        "import numpy as np\n"
        "from app.xr_view import XrStage\n"
        "from avatar.avatar import load_avatar\n"
        "from render.backends import ReferenceBackend\n"
        "from render.cuda_interop import BackendGLRenderer\n"
        "from render.reference import render\n"
        "from render.xr import XrFrame, XrTarget\n"
        "stage = XrStage()\n"
        "stage.add('a', load_avatar('default'))\n"
        "factory = lambda ctx: BackendGLRenderer(ctx, ReferenceBackend())\n"
        "with XrTarget('egl', validation=True, renderer_factory=factory) as target:\n"
        "    target.capture = True\n"
        "    target.run(stage, max_frames=2)\n"
        "    print('gpu', stage.poser.where == 'gl', 'messages', len(target.messages))\n"
        "    cameras = target.captured_cameras\n"
        "    room = stage(XrFrame(0, 0, 0, cameras, np.eye(4), 0.0))\n"
        "    expected = [np.round(np.clip(render(room, c, target.background), 0, 1) * 255)\n"
        "                for c in cameras]\n"
        "    np.save('/tmp/xr-backend.npy', np.stack([np.stack(target.captured),\n"
        "                                           np.stack(expected)]))\n"
    )
    result, output = _run_script(monado, script, timeout=400)
    assert "gpu False messages 0" in result.stdout and _validation_complaints(output) == []
    swapchain, expected = np.load(ROOT / "tmp" / "xr-backend.npy").astype(int)
    for eye in range(2):
        np.testing.assert_array_equal(swapchain[eye][0, 0, :3], BACKGROUND)
        assert (np.abs(expected[eye][..., :3] - BACKGROUND).sum(axis=-1) > 12).mean() > 0.02
        assert np.abs(swapchain[eye] - expected[eye]).max() <= 1


def test_validation_messages_do_reach_the_viewer(monado):
    """The control for the test above: a deliberate misuse is reported, so an empty list
    there means the layer had nothing to say, not that its messages were lost."""
    script = (
        "import xr\n"
        "from render.xr import XrTarget\n"
        "target = XrTarget('egl', validation=True, renderer_factory=lambda ctx: None)\n"
        "target.open()\n"
        "try:\n"
        "    xr.create_reference_space(target._session, xr.ReferenceSpaceCreateInfo(\n"
        "        reference_space_type=xr.ReferenceSpaceType.UNBOUNDED_MSFT))\n"
        "except xr.XrException as exc:\n"
        "    print('refused', type(exc).__name__)\n"
        "print('messages', len(target.messages), sorted({m[0] for m in target.messages}))\n"
        "target.close()\n"
    )
    result = monado.client("-c", _shell_quote(script), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refused" in result.stdout
    count, levels = result.stdout.split("messages ")[1].split(" ", 1)
    assert int(count) >= 1 and "'error'" in levels


def test_linear_swapchain_gets_linearised_colour(monado):
    """Forced onto a linear format (Monado offers GL_RGBA16 too), the image holds linear
    light: the sRGB decoding of what the sRGB swapchain holds. Both sessions run in one
    process, one after the other (the simulated head drifts a little between them, so the
    figure's colours are compared as a whole, not pixel by pixel)."""
    script = (
        "import json, numpy as np\n"
        "from render.xr import XrTarget\n"
        "from app.xr_view import XrStage\n"
        "from avatar.avatar import load_avatar\n"
        "from render.gl_pose import GLPoser\n"
        "avatar = load_avatar('default')\n"
        "for srgb in (True, False):\n"
        "    stage = XrStage(poser=GLPoser())\n"
        "    stage.add('a', avatar)\n"
        "    with XrTarget('egl', prefer_srgb=srgb) as target:\n"
        "        target.capture = True\n"
        "        target.run(stage, max_frames=3)\n"
        "        np.save(f'/tmp/xr-format-{srgb}.npy', target.captured[0])\n"
        "        print('format', srgb, target.color_format, target.color_is_srgb)\n"
    )
    result = monado.client("-c", _shell_quote(script), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "format False" in result.stdout and "False\n" in result.stdout.split("format False")[1]
    stored = np.load(ROOT / "tmp" / "xr-format-True.npy").astype(np.float64) / 255
    linear = np.load(ROOT / "tmp" / "xr-format-False.npy").astype(np.float64)
    from render.xr_graphics import srgb_to_linear  # pure numpy: importable on the host too
    np.testing.assert_allclose(linear[0, 0, :3], srgb_to_linear(BACKGROUND / 255), atol=2e-4)

    def figure_colour(rgb, background):
        mask = np.abs(rgb - background).sum(axis=-1) > 0.05
        assert mask.mean() > 0.02
        return rgb[mask].mean(axis=0)

    from_srgb = figure_colour(srgb_to_linear(stored[..., :3]), srgb_to_linear(BACKGROUND / 255))
    from_linear = figure_colour(linear[..., :3], srgb_to_linear(BACKGROUND / 255))
    np.testing.assert_allclose(from_linear, from_srgb, atol=0.02)
    # ...and not the undecoded values (what forgetting to linearise would give).
    assert np.abs(figure_colour(stored[..., :3], BACKGROUND / 255) - from_linear).max() > 0.05


def test_runtime_dying_mid_session_ends_the_viewer_with_one_line(monado, tmp_path):
    """monado-service killed while the viewer draws: no traceback, no hang, one error line
    saying the runtime went away (the session is lost, the loop ends, everything is freed)."""
    doomed_dir = "/tmp/splatcall-xr-doomed"
    doomed = _start_monado(doomed_dir, tmp_path / "doomed.log")
    try:
        client = subprocess.Popen(
            _chroot("/bin/sh", "-c", "cd /opt/splatcall && exec /opt/venv/bin/python -m "
                    "app.xr_view --xr-graphics egl --xr-frames 100000",
                    env={"XDG_RUNTIME_DIR": doomed_dir}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)  # the session runs by then (about 2 s to the first frame here)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        stdout, stderr = client.communicate(timeout=120)
    finally:
        _stop_monado(doomed)
        shutil.rmtree(ROOT / doomed_dir.lstrip("/"), ignore_errors=True)
    assert client.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "OpenXR" in errors[0], stderr[-3000:]


def test_runtime_gone_ends_the_viewer_cleanly(tmp_path):
    """Monado's runtime library with no service to connect to (a runtime directory where
    none listens): the viewer says so in one line, no traceback."""
    proc_dir = ROOT / "proc"
    mounted_here = subprocess.run(["mountpoint", "-q", str(proc_dir)]).returncode != 0
    if mounted_here:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], check=True)
    try:
        result = subprocess.run(_chroot("/bin/sh", "-c", "cd /opt/splatcall && exec "
                                        "/opt/venv/bin/python -m app.xr_view --xr-frames 1",
                                        env={"XDG_RUNTIME_DIR": "/tmp/splatcall-xr-none"}),
                                capture_output=True, text=True, timeout=120)
    finally:
        if mounted_here:
            subprocess.run(["umount", str(proc_dir)], check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "OpenXR" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def _run_script(monado, script: str, timeout: int):
    """Run a Python script as a client in the Monado root; it must exit cleanly. Returns the
    process result and its stdout + stderr."""
    result = monado.client("-c", _shell_quote(script), timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return result, output


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
