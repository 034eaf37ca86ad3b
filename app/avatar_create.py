"""Personal avatars from a clip: the pipeline behind ``main.py avatar create``.

``create_avatar(clip, out, settings, progress)`` turns the frames of a ``SourceClip``
(``read_video``, ``read_images``, or frames captured from a camera) into a ``.lca`` file:

1. read: decode at most ``settings.max_frames`` frames, evenly spread over the clip (a
   long clip is thinned while it is decoded, so memory stays bounded), scaled so the long
   side is at most 640 px; refuse a clip too short, too dark or too blurred (``CreateError``
   with what to capture instead).
2. track + segment: the project's tracker (codes, face mesh, body landmarks per frame) and
   mediapipe's selfie segmentation (person masks); refuse a clip without a person, or one
   where the face and shoulders are not in view.
3. hold out frames, spread through the clip and at its end: never fitted, scored at the end.
4. cameras: one pinhole camera per frame (``fit_cameras``), from the face mesh and
   shoulders against the posed avatar; for a full-body clip from the body's landmarks
   (``fit_body_cameras``), with the limbs turned onto them (``fit_body_pose``).
5. [shape]: the body and face shape (``avatar.shape.fit_shape``), then the cameras again.
   [face]: the face's static mismatch (``face_rest_correction``), then the cameras again.
6. keyframes: the training frames that differ most in head pose and framing.
7. colours: visibility-aware projective texturing over the keyframes
   (``avatar.appearance.visible_colors``: a z-buffer from the splatter, weighted by
   viewing angle); [completion]: every Gaussian never seen gets a colour from what was seen
   (``avatar.completion.complete_colors``; without it, the nearest seen Gaussian's).
   [grow]: Gaussians grown past the surface where the person mask reaches beyond the
   avatar (``avatar.grow``: hair, loose clothes, arms held out), as many as the .lca has room for.
8. refine: photometric optimisation with the torch splatter (SH degree 1, opacities,
   scales, offsets, [per-frame pose corrections of the training frames]), for the time
   the budget leaves; fitted Gaussians left transparent are dropped.
9. [correctives]: linear pose/expression correctives from the face-mesh residuals. Off in
   the command (``product_settings``): fitted on one clip they changed its held-out score
   by under 0.1 dB, and at expressions past the clip's (a broad smile, a blink with a
   smile, a nod) they moved the face's vertices 0.8-7 cm and broke the face apart
   (docs/BENCHMARKS.md, "Correctives off in avatar create").
10. score: the written avatar rendered for the held-out frames, masked PSNR/SSIM.
11. write: the ``.lca`` (float16 where fine, at most 20 MB) with its provenance, whole or
    not at all.

Bracketed stages are switched by ``CreateSettings`` flags (their modules are built
separately; see docs/ARCHITECTURE.md). torch is imported here (the ``create`` extra).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

MAX_SIDE_PX = 640          # frames are scaled down to this long side before anything else
SIZE_MULTIPLE = 8          # ... and cropped to a multiple of this (fit sizes divide evenly)
FIT_LONG_SIDE_PX = 320     # the photometric fit runs at about this long side
MIN_FRAMES = 12            # fewer usable frames than this is too few to fit and score
MIN_USABLE_FRACTION = 0.5  # of the decoded frames must show the face and both shoulders
DARK_MEAN = 0.16           # mean luma (0-1) below this: too dark (jwpIntro: 0.51)
# Sharpness: the median over frames of the smaller of the variances of the horizontal and
# vertical second differences of the grey image (0-1) at the fit size (a blur along one
# direction removes that direction's). Measured on jwpIntro.mp4 (640x480): 1.5e-3 as it is;
# 2.0e-4 blurred by a 2-pixel Gaussian, 7.4e-5 by 3 pixels; 2.7e-4 smeared over 9 pixels
# sideways (motion), 9.4e-5 over 15, 3.4e-5 over 25. Below the limit: too blurred.
BLUR_LIMIT = 1.0e-4
EMPTY_COVERAGE = 0.02      # person-mask share of the frame below which no one is there
MAX_LCA_BYTES = 20_000_000
# Gaussians grown at most (avatar.grow): 60 bytes each in the .lca. jwpIntro.mp4 grew 33k, its
# held-out PSNR from 20.1 to 25.4 dB on a one-minute refinement (docs/BENCHMARKS.md).
MAX_GROWN = 30_000
# The .lca's compact layout (avatar.lca.save_avatar_file): per Gaussian a face (int32), a
# barycentric point and an offset (float32), a quaternion, scales, an opacity and SH degree 1
# colours (float16): 60 bytes; correctives 10 bytes per vertex and width (int32 index,
# float16 xyz); the header (JSON, provenance) under 100 kB.
LCA_BYTES_PER_GAUSSIAN = 60
LCA_HEADER_BYTES = 100_000
# Corrective features per vertex. The default avatar (272k Gaussians, 16.3 MB) with width 24
# (3.3 MB) left no room under 20 MB for grown Gaussians, which are worth 5 dB held out on
# jwpIntro.mp4; correctives changed the held-out score by under 0.1 dB there. 12 frees room
# for about 27k Gaussians.
CORRECTIVE_WIDTH = 12
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12  # mediapipe pose indices (the person's sides)
SHOULDER_BONES = ("upperarm01.L", "upperarm01.R")
SHOULDER_WEIGHT = 40.0  # each shoulder counts like this many face points in the camera fit
# A full-body clip (shoulders, hips and knees in view) fits its cameras to the body: the face
# is small there (pose2sim's cam01 at 640 px: about 25 px) or hidden (no face mesh found).
FULL_BODY_JOINTS = (11, 12, 23, 24, 25, 26)  # mediapipe pose: shoulders, hips, knees
BODY_NOSE = 0              # mediapipe pose's nose ...
FACE_MESH_NOSE_TIP = 1     # ... is the face mesh's nose tip, on the template's face
BODY_VISIBLE = 0.5         # pose visibility from which a landmark counts in the camera fit
BODY_BASE_DISTANCE_M = 3.0  # the body fit's first guess, refined from the person's size
WEBCAM_FOCAL_PX = 554.0  # a 60-degree horizontal field of view at 640 px: the base camera
BASE_DISTANCE_M = 0.6
TOOL = "main.py avatar create"


class CreateError(ValueError):
    """Input the pipeline cannot make an avatar from; the message says what to capture."""


# -- reading --------------------------------------------------------------------------------

@dataclass
class SourceClip:
    """Frames to make an avatar from: ``frames`` (H, W, 3) uint8 RGB of one size, their
    ``times`` (seconds from the start) and ``indices`` in the source, the source's frame
    count, a description, the source's sha256, and whether the frames are unrelated photos
    (``static``: an image folder)."""

    frames: list[np.ndarray]
    times: list[float]
    indices: list[int]
    total_frames: int
    description: str
    sha256: str
    static: bool = False


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalise_frame(image: np.ndarray) -> np.ndarray:
    """The frame scaled down to a long side of at most MAX_SIDE_PX and cropped (bottom,
    right) to multiples of SIZE_MULTIPLE."""
    h, w = image.shape[:2]
    scale = min(1.0, MAX_SIDE_PX / max(h, w))
    if scale < 1.0:
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize(
            (max(SIZE_MULTIPLE, round(w * scale)), max(SIZE_MULTIPLE, round(h * scale))),
            Image.BILINEAR))
        h, w = image.shape[:2]
    h8, w8 = h - h % SIZE_MULTIPLE, w - w % SIZE_MULTIPLE
    if h8 < 64 or w8 < 64:
        raise CreateError(f"frames of {w}x{h} pixels are too small: capture at 640x480 or more")
    return np.ascontiguousarray(image[:h8, :w8])


def read_video(path: str | Path, max_frames: int) -> SourceClip:
    """Up to ``max_frames`` frames evenly spread over a video file. Decodes every frame but
    converts only those kept; when more than ``max_frames`` are kept, every other one is
    dropped and the stride doubles, so a clip of any length fits in bounded memory."""
    import av

    path = Path(path)
    if not path.is_file():
        raise CreateError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise CreateError(f"{path}: not a readable video ({exc}); record an MP4 or WebM clip "
                          "of yourself instead") from None
    frames, times, indices = [], [], []
    stride, count = 1, 0
    try:
        if not container.streams.video:
            raise CreateError(f"{path}: holds no video; record a clip of yourself instead")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.frames and stream.frames > max_frames:  # known length: one stride
            stride = math.ceil(stream.frames / max_frames)
        try:
            for frame in container.decode(video=0):
                if count % stride == 0:
                    frames.append(normalise_frame(frame.to_ndarray(format="rgb24")))
                    times.append(float(frame.time) if frame.time is not None else count / 30.0)
                    indices.append(count)
                    if len(frames) > max_frames:
                        frames, times, indices = frames[::2], times[::2], indices[::2]
                        stride *= 2
                count += 1
        except (av.error.FFmpegError, OSError) as exc:
            if not frames:
                raise CreateError(f"{path}: not a readable video ({exc}); record an MP4 or "
                                  "WebM clip of yourself instead") from None
            # a clip broken part-way: keep what decoded
    finally:
        container.close()
    if frames and any(f.shape != frames[0].shape for f in frames):
        raise CreateError(f"{path}: its frame size changes mid-clip; record one steady clip")
    return SourceClip(frames, times, indices, count, str(path), sha256_of(path))


def read_images(folder: str | Path, max_frames: int) -> SourceClip:
    """Up to ``max_frames`` images of a folder (sorted by name, evenly picked), all scaled
    to the first one's size (they must share its shape within 2 %)."""
    from PIL import Image

    from tracking.sources import IMAGE_SUFFIXES, SourceError, load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise CreateError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CreateError(f"{folder}: holds no images (.jpg, .png, ...); put photos of "
                          "yourself from several angles there")
    chosen = np.unique(np.linspace(0, len(files) - 1, min(max_frames, len(files))).round()
                       .astype(int))
    frames, digest = [], hashlib.sha256()
    for i in chosen:
        try:
            image = load_image(files[i])
        except (SourceError, OSError, ValueError) as exc:
            raise CreateError(f"{files[i]}: not a readable image ({exc})") from None
        digest.update(files[i].name.encode() + bytes.fromhex(sha256_of(files[i])))
        if frames:
            h, w = frames[0].shape[:2]
            if abs(image.shape[1] / image.shape[0] - w / h) > 0.02 * w / h:
                raise CreateError(f"{files[i].name}: its shape differs from {files[0].name}'s; "
                                  "use photos taken with one camera setting")
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        else:
            image = normalise_frame(image)
        frames.append(image)
    return SourceClip(frames, [float(i) for i in range(len(frames))], [int(i) for i in chosen],
                      len(files), str(folder), digest.hexdigest(), static=True)


def clip_from_frames(frames: list[np.ndarray], times: list[float], description: str) -> SourceClip:
    """A ``SourceClip`` from frames already in memory (a camera capture)."""
    frames = [normalise_frame(f) for f in frames]
    digest = hashlib.sha256()
    for f in frames:
        digest.update(f.tobytes())
    return SourceClip(frames, list(times), list(range(len(frames))), len(frames), description,
                      digest.hexdigest())


# -- checks on the frames ---------------------------------------------------------------------

def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filtered (area mean) image (H, W, C) or (H, W), H and W multiples of factor."""
    if factor == 1:
        return np.asarray(image, dtype=np.float64)
    h, w = image.shape[:2]
    shaped = image.reshape(h // factor, factor, w // factor, factor, *image.shape[2:])
    return shaped.mean(axis=(1, 3))


def fit_factor(width: int, height: int) -> int:
    """How much the photometric fit shrinks the frames (2 for 640x480: 320x240)."""
    factor = max(1, round(max(width, height) / FIT_LONG_SIDE_PX))
    while factor > 1 and (width % factor or height % factor):
        factor -= 1
    return factor


def luma(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma (H, W) in [0, 1] of a uint8 RGB image."""
    return (image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            ) / 255.0


def sharpness(image: np.ndarray, factor: int) -> float:
    """The smaller of the variances of the grey image's horizontal and vertical second
    differences at the fit size (see BLUR_LIMIT)."""
    g = downsample(luma(image), factor)
    dx = g[:, :-2] + g[:, 2:] - 2 * g[:, 1:-1]
    dy = g[:-2] + g[2:] - 2 * g[1:-1]
    return float(min(dx.var(), dy.var()))


def check_frames(clip: SourceClip) -> dict:
    """CreateError for a clip too short, too dark or too blurred; else its measures."""
    n = len(clip.frames)
    if n < MIN_FRAMES:
        what = "images" if clip.static else "frames"
        raise CreateError(f"{clip.description}: only {n} {what}; at least {MIN_FRAMES} are "
                          "needed: record 10 seconds or more of yourself (or that many photos)")
    h, w = clip.frames[0].shape[:2]
    factor = fit_factor(w, h)
    sample = clip.frames[:: max(1, n // 24)]
    brightness = float(np.mean([luma(f[::4, ::4]).mean() for f in sample]))
    if brightness < DARK_MEAN:
        raise CreateError(f"{clip.description}: too dark (mean brightness {brightness:.0%}); "
                          "record again facing a lamp or a window, with the light on your face")
    sharp = float(np.median([sharpness(f, factor) for f in sample]))
    if sharp < BLUR_LIMIT:
        raise CreateError(f"{clip.description}: too blurred (sharpness {sharp:.1e}, needs "
                          f"{BLUR_LIMIT:.0e}); hold the camera still, move slowly, make sure "
                          "it is focused, and record in good light")
    return {"brightness": round(brightness, 3), "sharpness": float(f"{sharp:.3g}")}


# -- tracking -------------------------------------------------------------------------------

@dataclass
class TrackedClip:
    """Every frame (N, H, W, 3) uint8 RGB, its codes, face-mesh points (N, 478, 2) px and
    body landmarks (N, 33, 3) (x px, y px, visibility; NaN where not found), person
    probability (N, H, W) float16."""

    frames: np.ndarray
    codes: list
    faces: np.ndarray
    bodies: np.ndarray
    probabilities: np.ndarray

    @property
    def shoulders(self) -> np.ndarray:
        """(N, 2, 2) pixels of the person's left and right shoulders (NaN where absent)."""
        return self.bodies[:, [LEFT_SHOULDER, RIGHT_SHOULDER], :2]

    def usable(self) -> np.ndarray:
        """(N,) bool: frames with the face mesh and both shoulders in view."""
        face_ok = ~np.isnan(self.faces).any(axis=(1, 2))
        s = self.bodies[:, [LEFT_SHOULDER, RIGHT_SHOULDER]]
        h, w = self.frames.shape[1:3]
        inside = ((s[..., 0] >= 0) & (s[..., 0] < w) & (s[..., 1] >= 0) & (s[..., 1] < h)
                  & (s[..., 2] > 0.5)).all(axis=1)
        return face_ok & inside

    def full_body(self) -> np.ndarray:
        """(N,) bool: frames whose pose shows the shoulders, hips and knees, inside the frame."""
        h, w = self.frames.shape[1:3]
        j = self.bodies[:, FULL_BODY_JOINTS]
        with np.errstate(invalid="ignore"):
            inside = ((j[..., 0] >= 0) & (j[..., 0] < w) & (j[..., 1] >= 0) & (j[..., 1] < h)
                      & (j[..., 2] >= BODY_VISIBLE))
        return inside.all(axis=1)

    def subset(self, keep) -> TrackedClip:
        keep = np.asarray(keep)
        return TrackedClip(self.frames[keep], [self.codes[i] for i in keep], self.faces[keep],
                           self.bodies[keep], self.probabilities[keep])

    def save(self, path: Path) -> None:
        np.savez(path, frames=self.frames, faces=self.faces, bodies=self.bodies,
                 probabilities=self.probabilities,
                 codes=np.array([c.to_json() for c in self.codes]))

    @classmethod
    def load(cls, path: Path) -> TrackedClip:
        from avatar.codes import Codes

        z = np.load(path)
        return cls(z["frames"], [Codes.from_json(str(c)) for c in z["codes"]], z["faces"],
                   z["bodies"], z["probabilities"])


def track_frames(clip: SourceClip, progress: Callable[[str, float], None] | None = None,
                 seconds: dict | None = None) -> TrackedClip:
    """The project's tracker over the clip's frames (in order, at their own times), then
    the person masks."""
    from tracking.segmentation import PersonSegmenter
    from tracking.sources import Frame
    from tracking.tracker import Tracker

    say = progress or (lambda stage, fraction: None)
    seconds = {} if seconds is None else seconds
    t = time.perf_counter()
    codes, faces, bodies = [], [], []
    n = len(clip.frames)
    with Tracker(static=clip.static) as tracker:
        for k, (image, when) in enumerate(zip(clip.frames, clip.times)):
            result = tracker.process(Frame(image, when, k, clip.description, when))
            lm = result.landmarks
            codes.append(result.codes)
            face = lm.face if lm is not None else None
            faces.append(np.full((478, 2), np.nan) if face is None else face[:, :2])
            if lm is None or lm.pose is None:
                bodies.append(np.full((33, 3), np.nan))
            else:
                vis = (lm.pose_visibility if lm.pose_visibility is not None
                       else np.ones(len(lm.pose)))
                bodies.append(np.column_stack([lm.pose[:, :2], vis]))
            say("track", (k + 1) / n)
    seconds["track"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    probabilities = []
    with PersonSegmenter() as segmenter:
        for k, image in enumerate(clip.frames):
            probabilities.append(segmenter.process(image).probability.astype(np.float16))
            say("segment", (k + 1) / n)
    probabilities = [keep_tracked_person(p, b) for p, b in zip(probabilities, bodies)]
    seconds["segment"] = round(time.perf_counter() - t, 2)
    return TrackedClip(np.stack(clip.frames), codes, np.stack(faces).astype(np.float32),
                       np.stack(bodies).astype(np.float32), np.stack(probabilities))


def touching(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(H, W) bool: the connected parts of ``mask`` (H, W) bool that hold a ``seeds`` pixel."""
    from scipy.ndimage import label

    labels, _ = label(mask)
    kept = np.unique(labels[seeds & mask])
    return np.isin(labels, kept[kept > 0])


def keep_tracked_person(probability: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The person probability (H, W) with everyone but the tracked person cleared: the mask's
    connected parts that hold none of the person's pose landmarks (``body`` (33, 3): x px,
    y px, visibility) go (someone walking behind: pose2sim's cam01 and cam02 show a second
    person). Unchanged without landmarks or when no part holds one."""
    h, w = probability.shape
    seen = body[np.isfinite(body).all(axis=1) & (body[:, 2] >= BODY_VISIBLE)]
    x, y = seen[:, 0].astype(int), seen[:, 1].astype(int)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    if not inside.any():
        return probability
    seeds = np.zeros((h, w), bool)
    seeds[y[inside], x[inside]] = True
    person = touching(probability > 0.5, seeds)
    if not person.any():
        return probability
    out = probability.copy()
    out[~person & (probability > 0.5)] = 0
    return out


CAMERA_FIT_POINTS = {"face+shoulders": "face mesh + shoulders", "face": "face mesh",
                     "body": "body landmarks (33-point pose)"}


def check_person(tracked: TrackedClip, description: str) -> tuple[np.ndarray, str]:
    """(the usable frames' indices, the points the cameras are fitted to: a key of
    CAMERA_FIT_POINTS), or CreateError: no person, or not enough of one. A full-body clip
    (most frames show the shoulders, hips and knees) fits to the body in those frames;
    else frames with the face and both shoulders when most frames have them; else, for a
    close-up where most frames show the face, the face alone."""
    usable = tracked.usable()
    n = len(usable)
    enough = max(MIN_FRAMES, MIN_USABLE_FRACTION * n)
    coverage = tracked.probabilities[:, ::4, ::4].astype(np.float32)
    coverage = (coverage > 0.5).mean(axis=(1, 2))
    faces = ~np.isnan(tracked.faces).any(axis=(1, 2))
    bodies = ~np.isnan(tracked.bodies).any(axis=(1, 2))
    full_body = tracked.full_body()
    if full_body.sum() >= enough:
        return np.flatnonzero(full_body), "body"
    if usable.sum() >= enough:
        return np.flatnonzero(usable), "face+shoulders"
    if faces.mean() < 0.2 and bodies.mean() < 0.2 and np.median(coverage) < EMPTY_COVERAGE:
        raise CreateError(f"{description}: no person found in it; record yourself facing the "
                          "camera, head and shoulders in the frame, in good light")
    if faces.sum() >= enough:  # a face close-up
        return np.flatnonzero(faces), "face"
    missing = []
    if faces.mean() < 0.5:
        missing.append("the face")
    if usable.mean() < 0.5 and faces.mean() >= 0.5:
        missing.append("both shoulders")
    what = " and ".join(missing) or "the face and both shoulders"
    raise CreateError(f"{description}: the person is only partly visible ({what} in "
                      f"{usable.sum()} of {n} frames); record again with your whole head and "
                      "both shoulders in the frame, facing the camera")


# -- held-out frames and keyframes --------------------------------------------------------------

def hold_out(n: int, tail_fraction: float = 0.12, spread_every: int = 10,
             min_tail: int = 2, gap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) positions among ``n`` frames in time order: the last
    ``tail_fraction`` of the clip, plus every ``spread_every``-th frame before it (0: none);
    with ``gap`` (frames close in time) the training set also leaves out each spread
    frame's two neighbours, so no training frame is a near copy of a held-out one."""
    tail = max(min_tail, int(round(tail_fraction * n)))
    held = set(range(n - tail, n))
    gaps = {n - tail - 1} if gap else set()
    if spread_every:
        for i in range(spread_every // 2, n - tail - 1, spread_every):
            held.add(i)
            if gap:
                gaps.update((i - 1, i + 1))
    training = [i for i in range(n) if i not in held and i not in gaps]
    return np.array(training, dtype=np.int64), np.array(sorted(held), dtype=np.int64)


def choose_keyframes(codes: list, faces: np.ndarray, width: int, count: int) -> np.ndarray:
    """``count`` positions among the frames that differ most in head pose and where the face
    is (greedy farthest-point sampling, from the frame nearest the median)."""
    n = len(codes)
    if n <= count:
        return np.arange(n)
    head = np.array([np.asarray(c.head, dtype=np.float64).reshape(-1)[:4] for c in codes])
    head *= np.sign(head[:, :1] + 1e-9)  # q and -q are one rotation
    centre = np.nanmean(faces, axis=1) / width
    features = np.concatenate([head * 2.0, centre], axis=1)
    features = np.nan_to_num(features)
    start = int(np.argmin(np.linalg.norm(features - np.median(features, axis=0), axis=1)))
    chosen = [start]
    distance = np.linalg.norm(features - features[start], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(features - features[nxt], axis=1))
    return np.array(sorted(chosen))


# -- cameras ----------------------------------------------------------------------------------

def fit_cameras(avatar, codes: list, faces: np.ndarray, shoulders: np.ndarray | None,
                width: int, height: int, bodies: np.ndarray | None = None):
    """(posed vertices per frame, cameras per frame, RMS px): one focal length for the clip
    and a principal point per frame, fitted to the face mesh and shoulders (None: the face
    mesh alone, for a close-up); with ``bodies`` (N, 33, 3), to the body instead
    (``fit_body_cameras``)."""
    if bodies is not None:
        return fit_body_cameras(avatar, codes, bodies, width, height)
    from avatar.appearance import fit_frame_cameras
    from render.camera import Camera
    from tracking.facemesh import load_correspondence

    correspondence = load_correspondence()
    shoulder_index = [avatar.template.bone_index(b) for b in SHOULDER_BONES]
    vertices, world, image = [], [], []
    for k, (c, face) in enumerate(zip(codes, faces)):
        v = posed_vertices(avatar, c)
        vertices.append(v)
        pair = None if shoulders is None else shoulders[k]
        if np.isnan(face).any() or (pair is not None and np.isnan(pair).any()):
            world.append(None)
            image.append(None)
            continue
        points = correspondence.surface_points(avatar.template, v)
        if pair is None:
            world.append(points)
            image.append(face)
            continue
        heads = avatar.rig.pose_codes(c).heads[shoulder_index]
        world.append(np.concatenate([points, heads]))
        image.append(np.concatenate([face, pair]))
    head_y = float(np.mean([v[:, 1].max() for v in vertices])) - 0.12
    fov = np.degrees(2 * np.arctan(height / 2 / WEBCAM_FOCAL_PX))
    base = Camera.look_at([0.0, head_y, BASE_DISTANCE_M], [0.0, head_y, 0.0], width, height,
                          vertical_fov_deg=float(fov))
    weights = (np.ones(478) if shoulders is None
               else np.r_[np.ones(478), SHOULDER_WEIGHT, SHOULDER_WEIGHT])
    cameras, rms = fit_frame_cameras(world, image, base, weights)
    return vertices, cameras, rms


def body_points(avatar, codes, vertices: np.ndarray) -> np.ndarray:
    """(13, 3) the avatar's points for BODY_LANDMARKS, posed by ``codes`` (``vertices``: its
    posed mesh): the nose tip on the face, then the heads of avatar.shape's landmark bones."""
    from avatar.shape import POSE_LANDMARK_BONES
    from tracking.facemesh import load_correspondence

    nose = load_correspondence().surface_points(avatar.template, vertices)[FACE_MESH_NOSE_TIP]
    bones = [avatar.template.bone_index(b) for b in POSE_LANDMARK_BONES.values()]
    return np.concatenate([nose[None], avatar.rig.pose_codes(codes).heads[bones]])


def body_landmarks() -> list[int]:
    """The mediapipe pose indices ``body_points`` gives, in its order."""
    from avatar.shape import POSE_LANDMARK_BONES

    return [BODY_NOSE, *POSE_LANDMARK_BONES]


def fit_body_cameras(avatar, codes: list, bodies: np.ndarray, width: int, height: int):
    """(posed vertices per frame, cameras per frame, RMS px) for a full-body clip: a camera
    of WEBCAM_FOCAL_PX looking at the avatar level from +Z, at the distance where the
    avatar is the person's size, then per frame a scale and a shift of its image plane
    (least squares on s_f p + t_f ~ l over the nose, shoulders, elbows, wrists, hips, knees
    and ankles seen with visibility >= BODY_VISIBLE). The scale is per frame because a
    walking person's distance changes. A frame with fewer than three such points takes
    the nearest fitted frame's camera."""
    from render.camera import Camera

    index = body_landmarks()
    vertices, world, image, weight = [], [], [], []
    for c, body in zip(codes, bodies):
        v = posed_vertices(avatar, c)
        vertices.append(v)
        world.append(body_points(avatar, c, v))
        seen = body[index]
        with np.errstate(invalid="ignore"):
            weight.append((np.isfinite(seen).all(axis=1) & (seen[:, 2] >= BODY_VISIBLE))
                          .astype(np.float64))
        image.append(np.nan_to_num(seen[:, :2]))
    fitted = np.flatnonzero([w.sum() >= 3 for w in weight])
    if len(fitted) == 0:
        raise CreateError("no frame shows enough of the body to line the avatar up with")
    centre_y = float(np.mean([v[:, 1].min() + v[:, 1].max() for v in vertices])) / 2
    fov = float(np.degrees(2 * np.arctan(height / 2 / WEBCAM_FOCAL_PX)))
    distance = BODY_BASE_DISTANCE_M
    for _ in range(2):  # the second pass at the distance the first one's scale implies
        base = Camera.look_at([0.0, centre_y, distance], [0.0, centre_y, 0.0], width, height,
                              vertical_fov_deg=fov)
        scales, shifts, squares = {}, {}, []
        for f in fitted:
            cam = world[f] @ base.cv_from_world[:3, :3].T + base.cv_from_world[:3, 3]
            p = np.stack([base.fx * cam[:, 0] / cam[:, 2] + base.cx,
                          base.fy * cam[:, 1] / cam[:, 2] + base.cy], axis=1)
            w = weight[f] / weight[f].sum()
            p_mean, l_mean = w @ p, w @ image[f]
            pc, lc = p - p_mean, image[f] - l_mean
            scales[f] = float(np.sum(w[:, None] * pc * lc) / max(np.sum(w[:, None] * pc * pc),
                                                                  1e-12))
            shifts[f] = l_mean - scales[f] * p_mean
            squares.append(np.sum(w[:, None] * (scales[f] * p + shifts[f] - image[f]) ** 2))
        distance *= float(np.median(list(scales.values())))
    rms = float(np.sqrt(np.mean(squares)))
    cameras = []
    for f in range(len(codes)):
        g = int(fitted[np.argmin(np.abs(fitted - f))])
        s, t = scales[g], shifts[g]
        cameras.append(Camera(base.camera_from_world, width, height, base.fx * s, base.fy * s,
                              base.cx * s + t[0], base.cy * s + t[1], base.near, base.far))
    return vertices, cameras, rms


# The limbs the body's pose fit turns: each bone's end joint is a pose landmark.
LIMB_ENDS = {"upperarm01.L": ("lowerarm01.L", 13), "upperarm01.R": ("lowerarm01.R", 14),
             "lowerarm01.L": ("wrist.L", 15), "lowerarm01.R": ("wrist.R", 16),
             "upperleg01.L": ("lowerleg01.L", 25), "upperleg01.R": ("lowerleg01.R", 26),
             "lowerleg01.L": ("foot.L", 27), "lowerleg01.R": ("foot.R", 28)}
# A limb's turn away from the tracker's costs like this many pixels of landmark error per
# radian: it keeps the depth the tracker lifted (2D points cannot tell toward from away).
LIMB_TURN_PX_PER_RAD = 20.0


def fit_body_pose(avatar, codes: list, bodies: np.ndarray, cameras: list) -> list:
    """The codes with each frame's limbs (upper and lower arms and legs) turned so that the
    elbows, wrists, knees and ankles project onto the pose landmarks seen (visibility >=
    BODY_VISIBLE) through the frame's fitted camera (least squares, the turns kept small
    by LIMB_TURN_PX_PER_RAD). The tracker's monocular lift leaves them 10-30 px off at 640 px
    on pose2sim's cam01, where the camera looks down at the walker."""
    from dataclasses import replace

    from scipy.optimize import least_squares

    from avatar.codes import BODY_BONES
    from common.rotation import quat_from_axis_angle, quat_multiply, quat_normalize

    position = {name: i for i, name in enumerate(BODY_BONES)}
    turned = [position[b] for b in LIMB_ENDS]
    ends = [avatar.template.bone_index(end) for end, _ in LIMB_ENDS.values()]
    landmarks = [j for _, j in LIMB_ENDS.values()]
    out = []
    for c, body, camera in zip(codes, bodies, cameras):
        seen = body[landmarks]
        with np.errstate(invalid="ignore"):
            weight = (np.isfinite(seen).all(axis=1) & (seen[:, 2] >= BODY_VISIBLE))
        if not weight.any():
            out.append(c)
            continue
        cv = camera.cv_from_world

        def posed(x: np.ndarray, c=c):
            rotations = c.body.astype(np.float64).copy()
            for k, b in enumerate(turned):
                angle = float(np.linalg.norm(x[3 * k:3 * k + 3]))
                if angle > 1e-9:
                    turn = quat_from_axis_angle(x[3 * k:3 * k + 3] / angle, angle)
                    rotations[b] = quat_multiply(rotations[b], turn)
            return replace(c, body=quat_normalize(rotations).astype(np.float32))

        def residuals(x: np.ndarray, seen=seen, weight=weight, cv=cv, camera=camera):
            heads = avatar.rig.pose_codes(posed(x)).heads[ends]
            cam = heads @ cv[:3, :3].T + cv[:3, 3]
            px = np.stack([camera.fx * cam[:, 0] / cam[:, 2] + camera.cx,
                           camera.fy * cam[:, 1] / cam[:, 2] + camera.cy], axis=1)
            miss = (px - np.nan_to_num(seen[:, :2])) * weight[:, None]
            return np.concatenate([miss.reshape(-1), LIMB_TURN_PX_PER_RAD * x])

        fit = least_squares(residuals, np.zeros(3 * len(turned)), method="lm", max_nfev=400)
        out.append(posed(fit.x))
    return out


def posed_vertices(avatar, codes) -> np.ndarray:
    """The avatar's mesh for a codes frame as its posers build it (correctives included)."""
    from render.skinned import posed_mesh

    return posed_mesh(avatar.skinned, avatar.skin_pose(codes)).astype(np.float32)


# -- the pipeline -----------------------------------------------------------------------------

@dataclass
class CreateSettings:
    """What ``create_avatar`` does and how long it may take.

    ``budget_s``: the whole run's target time; it sets the frames decoded, keyframes,
    held-out frames scored and the refinement's time. ``tail_fraction`` / ``spread_every``:
    the held-out frames (``hold_out``). ``shape`` / ``complete`` / ``correctives``: the
    optional stages. ``threads``: torch's CPU threads (None: torch's default).
    """

    budget_s: float = 600.0
    seed: int = 0
    name: str = "me"
    shape: bool = True
    complete: bool = True
    correctives: bool = False  # see the module's stage 9: off in the command too
    grow: bool = True  # Gaussians grown where the person mask reaches past the avatar
    face_rest: bool = True  # the face's static mismatch (corrective fit's rest offset)
    pose_corrections: bool = True  # per-frame pose corrections of the training frames
    max_grown: int = MAX_GROWN
    corrective_width: int = CORRECTIVE_WIDTH
    tail_fraction: float = 0.12
    spread_every: int = 10
    threads: int | None = None
    max_steps: int = 4000
    coarse_fraction: float = 0.4  # of the refinement's time at half the fit's resolution
    licence: str = "unspecified"

    @property
    def max_frames(self) -> int:
        """Frames to decode and track: 24 at a minute's budget, 240 at ten minutes."""
        return int(np.clip(self.budget_s / 2.5, 24, 240))

    @property
    def keyframes(self) -> int:
        return int(np.clip(self.budget_s / 60.0, 4, 10))

    @property
    def scored_frames(self) -> int:
        return int(np.clip(self.budget_s / 25.0, 4, 24))


@dataclass
class CreateResult:
    """What ``create_avatar`` made: the avatar's data, its held-out quality, each stage's
    seconds, and the provenance written into the file."""

    data: object
    quality: object
    seconds: dict
    provenance: dict
    path: Path | None = None
    size_bytes: int = 0
    info: dict = field(default_factory=dict)


# Planned seconds per unit, for the time estimate before a stage has run (2-core VM).
TRACK_S_PER_FRAME = 0.075
SEGMENT_S_PER_FRAME = 0.01
VISIBILITY_S_PER_KEYFRAME = 1.5
SCORE_S_PER_FRAME = 1.0
MAX_WRITTEN_SCALE_M = 0.1
MIN_FACE_FRAMES = 10  # avatar.corrective_fit refuses fewer frames with a tracked face
FACE_REST_FRAMES = 40  # training frames the face's static mismatch is measured on
MIN_KEPT_OPACITY = 0.01  # a fitted Gaussian more transparent than this is left out
FIXED_S = {"cameras": 3.0, "shape": 60.0, "face": 10.0, "complete": 3.0, "correctives": 15.0,
           "write": 4.0}
MIN_REFINE_STEPS = 20
# Colours faster than FitSettings' defaults, decaying to 30 %. Scales and offsets were at
# 0.03 and 5e-4 too (chosen on 60-step runs, before Gaussians were grown, when stretching
# edge Gaussians over the uncovered mask was what the fit could do): with grown Gaussians,
# 300 steps at those rates scored 26.1 dB held out on jwpIntro and an idle 10-minute run
# (855 steps) 25.2 dB, the face speckled; at a tenth of them 26.9 dB at 300 steps
# (docs/BENCHMARKS.md, "Refinement: where the error is").
REFINE_RATES = {"lr_log_scale": 0.003, "lr_offset": 5e-5, "lr_sh_dc": 0.03, "lr_final": 0.3}


class Progress:
    """Stage bookkeeping: each stage's planned and actual seconds, and ``report(stage,
    fraction)`` calls ``callback(stage, fraction, seconds_left)``."""

    def __init__(self, plan: dict[str, float],
                 callback: Callable[[str, float, float], None] | None):
        self.plan = dict(plan)
        self.seconds: dict[str, float] = {}
        self.callback = callback
        self._stage, self._t0 = None, time.perf_counter()

    def start(self, stage: str) -> None:
        self.finish()
        self._stage, self._t0 = stage, time.perf_counter()
        self.report(stage, 0.0)

    def switch(self, stage: str) -> None:
        """Start ``stage`` unless it is the current one (for reports from inside a step
        that runs two stages, like tracking then segmentation)."""
        if stage != self._stage:
            self.start(stage)

    def finish(self) -> None:
        if self._stage is not None:
            self.seconds[self._stage] = round(self.seconds.get(self._stage, 0.0)
                                              + time.perf_counter() - self._t0, 2)
            self._stage = None

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def left(self, stage: str, fraction: float) -> float:
        done_now = self.elapsed()
        planned = self.plan.get(stage, done_now)
        current = max(planned - done_now, 0.0) if fraction <= 0 else \
            done_now * (1 - fraction) / max(fraction, 1e-3)
        names = list(self.plan)
        later = names[names.index(stage) + 1:] if stage in names else []
        return current + sum(self.plan[s] for s in later if s not in self.seconds)

    def report(self, stage: str, fraction: float) -> None:
        if stage != self._stage and stage in self.plan:
            self.switch(stage)
        if self.callback is not None:
            self.callback(stage, min(max(fraction, 0.0), 1.0), self.left(stage, fraction))


def create_avatar(clip: SourceClip, out: str | Path | None, settings: CreateSettings,
                  progress: Callable[[str, float, float], None] | None = None,
                  checks: dict | None = None, tracked: TrackedClip | None = None
                  ) -> CreateResult:
    """Make an avatar from ``clip`` and write it to ``out`` (None: do not write).

    ``progress(stage, fraction of the stage done, estimated seconds left in the run)``.
    Raises ``CreateError`` for input it cannot use (nothing is written then). ``checks``
    and ``tracked``: the frame checks' measures and the clip's tracking when already done
    (benchmarks repeat a fit on one tracking).
    """
    import torch

    from avatar.appearance import (
        AppearanceModel,
        FitFrame,
        FitSettings,
        fit_appearance,
        fit_splatter,
        visible_colors,
        visible_gaussians,
    )
    from avatar.avatar import Avatar, load_avatar
    from avatar.template import load_template

    started = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    n_frames = len(clip.frames)
    plan = {"read": 0.0, "track": TRACK_S_PER_FRAME * n_frames,
            "segment": SEGMENT_S_PER_FRAME * n_frames, "cameras": FIXED_S["cameras"]}
    if settings.shape:
        plan["shape"] = FIXED_S["shape"]
    if settings.face_rest:
        plan["face"] = FIXED_S["face"]
    plan["colours"] = VISIBILITY_S_PER_KEYFRAME * 2 * settings.keyframes
    plan["complete"] = FIXED_S["complete"]
    if settings.grow:
        plan["grow"] = VISIBILITY_S_PER_KEYFRAME * settings.keyframes
    plan["refine"] = 0.0
    if settings.correctives:
        plan["correctives"] = FIXED_S["correctives"]
    plan["score"] = SCORE_S_PER_FRAME * settings.scored_frames
    plan["write"] = FIXED_S["write"]
    plan["refine"] = max(settings.budget_s - sum(plan.values()), 10.0)
    bar = Progress(plan, progress)

    bar.start("read")
    measures = check_frames(clip) if checks is None else checks
    bar.start("track")
    track_seconds: dict = {}
    if tracked is None:
        tracked = track_frames(clip, lambda stage, f: bar.report(stage, f), track_seconds)
    bar.finish()
    usable, fit_points = check_person(tracked, clip.description)
    tracked = tracked.subset(usable)
    source_index = np.asarray(clip.indices)[usable]
    n = len(usable)
    step_s = float(np.median(np.diff(np.asarray(clip.times)[usable]))) if n > 1 else 1.0
    training, held = hold_out(n, settings.tail_fraction, settings.spread_every,
                              gap=step_s < 0.1)
    if len(training) < 4 or len(held) < 2:
        raise CreateError(f"{clip.description}: too few usable frames ({n}); record 10 "
                          "seconds or more with your head and shoulders in view")

    bar.start("cameras")
    template = load_template()
    default = load_avatar("default", template)
    avatar = default
    h, w = tracked.frames.shape[1:3]
    shoulders = tracked.shoulders if fit_points == "face+shoulders" else None
    bodies = tracked.bodies if fit_points == "body" else None
    vertices, cameras, rms = fit_cameras(avatar, tracked.codes, tracked.faces, shoulders, w, h,
                                         bodies)
    if bodies is not None:  # the limbs onto the landmarks, then the cameras again
        tracked.codes = fit_body_pose(avatar, tracked.codes, bodies, cameras)
        vertices, cameras, rms = fit_cameras(avatar, tracked.codes, tracked.faces, None, w, h,
                                             bodies)
    shape_info: dict = {}
    shape = None
    if settings.shape:
        bar.start("shape")
        shape, shape_info = _fit_shape(template, tracked, training, cameras, bar)
        avatar = Avatar(default.data, shape.apply(template))
        vertices, cameras, rms = fit_cameras(avatar, tracked.codes, tracked.faces,
                                             shoulders, w, h, bodies)
    faces_seen = sum(_found(tracked.faces[i]) is not None for i in training)
    if settings.face_rest and faces_seen >= MIN_FACE_FRAMES:
        bar.start("face")
        shape, rest_info = face_rest_correction(shape, template, tracked, training, cameras)
        shape_info = {**shape_info, "face_rest_offset": rest_info}
        avatar = Avatar(default.data, shape.apply(template))
        vertices, cameras, rms = fit_cameras(avatar, tracked.codes, tracked.faces,
                                             shoulders, w, h, bodies)

    bar.start("colours")
    factor = fit_factor(w, h)

    def fit_frame(i: int, f: int = factor) -> FitFrame:
        return FitFrame(vertices[i], cameras[i].resized(w // f, h // f),
                        downsample(tracked.frames[i] / 255.0, f).astype(np.float32),
                        downsample(tracked.probabilities[i].astype(np.float32), f) > 0.5)

    train_frames = [fit_frame(int(i)) for i in training]
    coarse = None
    if w % (2 * factor) == 0 and h % (2 * factor) == 0:  # coarse to fine
        coarse = [fit_frame(int(i), 2 * factor) for i in training]
    where = tracked.bodies[training, :, :2] if fit_points == "body" else tracked.faces[training]
    keys = choose_keyframes([tracked.codes[i] for i in training], where, w, settings.keyframes)
    key_frames = [train_frames[k] for k in keys]
    index = visible_gaussians(avatar, [(fr.vertices, fr.camera) for fr in key_frames])
    bar.report("colours", 0.5)
    if len(index) == 0:
        raise CreateError(f"{clip.description}: the avatar could not be lined up with the "
                          "person; record facing the camera, head and shoulders in view")
    model = AppearanceModel(avatar, index)
    views = [(model.base(fr.vertices), fr.camera, fr.image, fr.mask) for fr in key_frames]
    colours, weight = visible_colors(model, views)
    n_all = len(avatar)
    full = np.asarray(avatar.data.colors, dtype=np.float32)
    full = full[:, 0] * 0.28209479177387814 + 0.5 if full.ndim == 3 else full.copy()
    seen = np.zeros(n_all, bool)
    seen[index] = weight > 0
    full[index[weight > 0]] = colours[weight > 0]

    # A scored frame costs about what a keyframe's two renders here did (one render, SSIM):
    # plan the scoring from that, on this machine as loaded now.
    per_render = bar.elapsed() / max(2 * len(key_frames), 1)
    plan["score"] = bar.plan["score"] = 1.2 * per_render * settings.scored_frames
    bar.start("complete")
    full = _complete(avatar, full, seen, settings.complete)

    grown = 0
    if settings.grow:
        bar.start("grow")
        avatar, index, full, grown = grow_avatar(
            avatar, index, full, key_frames,
            min(settings.max_grown, growth_room(len(avatar), len(template.vertices),
                                                settings.corrective_width
                                                if settings.correctives else 0)),
            settings.seed)

    bar.start("refine")
    model = AppearanceModel(avatar, index, colors=full[index])
    refine_s = max(settings.budget_s - (time.perf_counter() - started)
                   - sum(plan[s] for s in ("correctives", "score", "write") if s in plan), 5.0)
    fit_settings = FitSettings(steps=settings.max_steps, seed=settings.seed,
                               time_limit_s=refine_s, min_steps=MIN_REFINE_STEPS,
                               coarse_fraction=settings.coarse_fraction if coarse else 0.0,
                               pose_corrections=settings.pose_corrections, **REFINE_RATES)
    bar.plan["refine"] = refine_s
    log = fit_appearance(model, train_frames, fit_settings,
                         lambda step, loss: bar.report(
                             "refine", max(step / settings.max_steps,
                                           bar.elapsed() / max(refine_s, 1e-3))),
                         coarse_frames=coarse)
    data = avatar_data_from_fit(avatar, model, full, settings.name)
    if shape is not None:
        data.shape = shape

    corrective_info: dict = {}
    if settings.correctives:
        bar.start("correctives")
        corrective_info = _fit_correctives(data, template, tracked, training, cameras,
                                           settings.corrective_width)

    bar.start("score")
    final = Avatar(data, template)
    scored = held[np.unique(np.linspace(0, len(held) - 1, min(settings.scored_frames,
                                                              len(held))).round().astype(int))]
    quality = score_avatar(final, tracked, scored, cameras, factor,
                           lambda f: bar.report("score", f))

    provenance = {
        "tool": TOOL, "tool_version": tool_version(), "date": date.today().isoformat(),
        "source": Path(clip.description).name, "source_sha256": clip.sha256,
        "source_frames": clip.total_frames,
        "frames_used": [int(source_index[i]) for i in training],
        "frames_held_out": [int(source_index[i]) for i in held],
        "scored_frames": [int(source_index[i]) for i in scored],
        "keyframes": [int(source_index[training[k]]) for k in keys],
        **quality.to_json_dict(),
        "fit_size": [w // factor, h // factor], "refine_steps": len(log.losses),
        "camera_fit_rms_px": round(float(rms), 2), "gaussians_fitted": int(len(index)),
        "gaussians_seen": int(seen.sum()), "gaussians_grown": int(grown),
        "gaussians_pruned": int(len(avatar) - len(data)), "checks": measures,
        "camera_fit_points": CAMERA_FIT_POINTS[fit_points],
        "colour_completion": "avatar.completion" if settings.complete else "nearest seen",
        "shape": shape_info or None, "correctives": corrective_info or None,
        "seed": settings.seed, "budget_s": settings.budget_s,
        "splatter": fit_splatter(),
    }
    result = CreateResult(data, quality, bar.seconds, provenance,
                          info={"usable_frames": n, "decoded_frames": n_frames,
                                "training": len(training), "held_out": len(held)})
    bar.start("write")
    provenance["stage_seconds"] = dict(bar.seconds)
    data.provenance = provenance
    if out is not None:
        result.path = Path(out)
        result.size_bytes = write_avatar(data, out, template)
    bar.finish()
    result.seconds = dict(bar.seconds)
    return result


def tool_version() -> str:
    """splatcall's version (pyproject), with the git commit when run from a checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    version = "unknown"
    try:
        import tomllib

        version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, ValueError):
        pass
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"splatcall {version}" + (f" ({commit})" if commit else "")


def _fit_shape(template, tracked: TrackedClip, training, cameras, bar: Progress):
    """avatar.shape.fit_shape over up to 30 training frames (the shape helper's module)."""
    from avatar.shape import ShapeObservation, fit_shape

    pick = training[np.unique(np.linspace(0, len(training) - 1, min(30, len(training)))
                              .round().astype(int))]
    observations = [ShapeObservation(tracked.codes[i], cameras[i], _found(tracked.bodies[i]),
                                     _found(tracked.faces[i]), tracked.probabilities[i] > 0.5)
                    for i in pick]
    fit = fit_shape(observations, template, budget_s=FIXED_S["shape"],
                    progress=lambda f: bar.report("shape", f))
    return fit.shape, {"landmark_rms_px": round(float(fit.landmark_rms_px), 2),
                       "frames": len(pick), "phenotype": fit.shape.phenotype}


def face_rest_correction(shape, template, tracked: TrackedClip, training, cameras):
    """``shape`` with the face's static mismatch added (``CorrectiveFit.rest_offset``: the
    part of the face-mesh residual common to every frame, spread over the head), and a
    report. ``shape`` None: the shipped template's."""
    from avatar.avatar import Avatar, load_avatar
    from avatar.corrective_fit import fit_correctives_from_landmarks
    from avatar.shape import BodyShape

    default = load_avatar("default", template)
    shaped = template if shape is None else shape.apply(template)
    # The static part is a mean over frames: 40 of them give it (the whole fit's time
    # follows the frames: 137 s for 130 frames at load 8).
    pick = training[np.unique(np.linspace(0, len(training) - 1, min(FACE_REST_FRAMES,
                                                                     len(training)))
                              .round().astype(int))]
    fit = fit_correctives_from_landmarks(Avatar(default.data, shaped),
                                         [tracked.codes[i] for i in pick],
                                         [cameras[i] for i in pick],
                                         [_found(tracked.faces[i]) for i in pick])
    if shape is None:
        shape = BodyShape({}, {}, np.zeros_like(template.vertices),
                          np.zeros_like(template.bone_heads))
    corrected = BodyShape(dict(shape.phenotype), dict(shape.local_changes),
                          shape.vertex_delta + fit.rest_offset, shape.bone_head_delta)
    px = fit.report["landmark_rms_px"]
    return corrected, {"landmark_rms_px_before": px["fitted_before"],
                       "landmark_rms_px_with_rest_offset": px["fitted_after_with_rest_offset"],
                       "largest_mm": round(1000 * float(np.abs(fit.rest_offset).max()), 2)}


def _found(points: np.ndarray) -> np.ndarray | None:
    """Landmarks as the fits take them: None for a frame where the tracker found none (the
    clip's arrays hold NaN there)."""
    return None if np.isnan(points).any() else points


def _complete(avatar, colors: np.ndarray, seen: np.ndarray, use_module: bool) -> np.ndarray:
    """Every unseen Gaussian's colour from the seen ones: avatar.completion when on, else
    the colour of the nearest seen Gaussian on the body at rest."""
    if use_module:
        from avatar.completion import complete_colors

        return np.asarray(complete_colors(avatar.template, avatar.data.binding_face, colors,
                                          seen), dtype=np.float32)
    from scipy.spatial import cKDTree

    from render.skinned import gaussians_on_mesh

    if not seen.any():
        return colors
    rest = gaussians_on_mesh(avatar.skinned, avatar.template.vertices).means
    _, nearest = cKDTree(rest[seen]).query(rest[~seen])
    out = colors.copy()
    out[~seen] = colors[seen][nearest]
    return out


def _fit_correctives(data, template, tracked: TrackedClip, training, cameras,
                     width: int = CORRECTIVE_WIDTH) -> dict:
    """avatar.corrective_fit over the training frames (the corrfit helper's module); sets
    the data's corrective fields."""
    from avatar.avatar import Avatar
    from avatar.corrective_fit import fit_correctives_from_landmarks

    faces = sum(_found(tracked.faces[i]) is not None for i in training)
    if faces < MIN_FACE_FRAMES:  # a full-body clip where the face mesh is not found
        return {"skipped": f"{faces} training frames with a tracked face, under "
                           f"{MIN_FACE_FRAMES}"}
    fit = fit_correctives_from_landmarks(Avatar(data, template),
                                         [tracked.codes[i] for i in training],
                                         [cameras[i] for i in training],
                                         [_found(tracked.faces[i]) for i in training],
                                         width=width)
    data.corrective_bones = list(fit.bones)
    data.corrective_index = fit.index
    data.corrective_basis = fit.basis
    return fit.report


def avatar_data_from_fit(avatar, model, colors: np.ndarray, name: str):
    """The .lca contents: every Gaussian of ``avatar`` (baked shading, SH degree 1); the
    model's fitted ones with their SH, opacities, scales, turns and offsets (tangential offsets
    become barycentric moves in the rest triangle, the normal part the binding offset);
    the rest with ``colors`` (N, 3) as their SH's constant term."""
    from avatar.appearance import SH_DEGREE
    from avatar.lca import AvatarData
    from common.rotation import quat_multiply, quat_normalize
    from render.reference import SH_C0
    from render.skinned import triangle_frames

    d = avatar.data
    n = len(d)
    state = model.state()
    i = state["index"]
    sh = np.zeros((n, (SH_DEGREE + 1) ** 2, 3), np.float32)
    sh[:, 0] = (colors - 0.5) / SH_C0
    sh[i] = state["sh"]
    opacities = np.asarray(d.opacities, np.float32).copy()
    opacities[i] = np.clip(state["opacities"], 0.0, 1.0)
    scales = np.asarray(d.local_scales, np.float32).copy()
    scales[i] *= state["scale_factors"]
    quats = np.asarray(d.local_quats, np.float32).copy()
    quats[i] = quat_normalize(quat_multiply(quats[i].astype(np.float64), state["turns"]))
    # Never past what a .lca may hold (avatar.lca: a tenth of the body's height), so a long
    # fit cannot fail at the write.
    np.minimum(scales, MAX_WRITTEN_SCALE_M, out=scales)
    bary = np.asarray(d.binding_bary, np.float64).copy()
    offset = np.asarray(d.binding_offset, np.float32).copy()
    faces = d.binding_face[i]
    tmpl = avatar.template
    frames, _ = triangle_frames(tmpl.vertices, tmpl.faces)
    corners = tmpl.vertices[tmpl.faces[faces]].astype(np.float64)  # (M, 3, 3)
    tangential = state["offsets"].astype(np.float64).copy()
    offset[i] += tangential[:, 2]
    tangential[:, 2] = 0.0
    point = np.einsum("mk,mkj->mj", bary[i], corners) + np.einsum(
        "mij,mj->mi", frames[faces], tangential)
    bary[i] = barycentric(point, corners)
    # Fitted Gaussians the fit made transparent go (room in the .lca for grown ones).
    keep = np.ones(n, bool)
    keep[i[opacities[i] < MIN_KEPT_OPACITY]] = False
    data = AvatarData(
        name=name, binding_face=np.asarray(d.binding_face)[keep],
        binding_bary=bary.astype(np.float32)[keep], binding_offset=offset[keep],
        local_quats=quats[keep], local_scales=scales[keep],
        opacities=opacities[keep], colors=sh[keep], template=dict(d.template),
        bone_names=list(d.bone_names), shading="baked", licence="unspecified",
        attribution="made with main.py avatar create", provenance={})
    return data


def growth_room(gaussians: int, vertices: int, corrective_width: int) -> int:
    """How many Gaussians may be grown on an avatar of ``gaussians`` whose file keeps
    correctives of ``corrective_width`` (0: none) and a body shape, so that the .lca stays
    under MAX_LCA_BYTES with its SH degree 1 colours (avatar.lca's compact layout)."""
    fixed = (gaussians * LCA_BYTES_PER_GAUSSIAN + vertices * (12 + 10 * corrective_width)
             + LCA_HEADER_BYTES)
    return max(0, (MAX_LCA_BYTES - fixed) // LCA_BYTES_PER_GAUSSIAN)


def grow_avatar(avatar, index: np.ndarray, colors: np.ndarray, frames: list, max_new: int,
                seed: int = 0):
    """Gaussians grown where the person mask reaches past the avatar (``avatar.grow``):
    (the grown avatar, the fitted Gaussians' indices with the children appended, every
    Gaussian's colour (N', 3), the count grown). ``frames``: FitFrames to find the gaps in."""
    from avatar.avatar import Avatar
    from avatar.grow import GrowView, grow_gaussians

    views = [GrowView(fr.vertices, fr.camera, fr.image, fr.mask,
                      render_avatar(avatar, fr.vertices, fr.camera)[..., 3]) for fr in frames]
    grown = grow_gaussians(avatar, index, views, max_new, seed)
    n = len(avatar)
    return (Avatar(grown.data, avatar.template),
            np.concatenate([index, n + np.arange(grown.count)]),
            np.concatenate([colors, grown.colors]).astype(np.float32), grown.count)


def barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(M, 3) barycentric coordinates of points projected into their triangles (M, 3, 3),
    clamped inside (each >= 0) and summing to 1."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    r = points - corners[:, 0]
    d11, d12, d22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    r1, r2 = (r * e1).sum(1), (r * e2).sum(1)
    det = np.maximum(d11 * d22 - d12 * d12, 1e-20)
    b1 = (d22 * r1 - d12 * r2) / det
    b2 = (d11 * r2 - d12 * r1) / det
    out = np.clip(np.stack([1 - b1 - b2, b1, b2], axis=1), 0.0, None)
    return out / np.maximum(out.sum(1, keepdims=True), 1e-12)


def render_avatar(avatar, vertices: np.ndarray, camera) -> np.ndarray:
    """(H, W, 4) premultiplied RGBA of the whole avatar on a posed mesh (torch splatter)."""
    import torch

    from render import torch_splat
    from render.skinned import gaussians_on_mesh

    g = gaussians_on_mesh(avatar.skinned, vertices)
    with torch.no_grad():
        return torch_splat.render(*(torch.as_tensor(np.asarray(a, np.float32)) for a in (
            g.means, g.quats, g.scales, g.opacities, g.colors)), camera).numpy()


def score_avatar(avatar, tracked: TrackedClip, frames, cameras, factor: int,
                 progress: Callable[[float], None] | None = None):
    """HeldOutQuality of ``avatar`` over ``frames`` (positions in ``tracked``) at the fit
    size, inside the person mask: the written avatar as a receiver's poser places it."""
    from avatar.quality import HeldOutQuality

    h, w = tracked.frames.shape[1:3]
    triples = []
    for k, i in enumerate(frames):
        camera = cameras[i].resized(w // factor, h // factor)
        rgba = render_avatar(avatar, posed_vertices(avatar, tracked.codes[i]), camera)
        target = downsample(tracked.frames[i] / 255.0, factor)
        mask = downsample(tracked.probabilities[i].astype(np.float32), factor) > 0.5
        triples.append((np.clip(rgba[..., :3], 0, 1), target, mask))
        if progress:
            progress((k + 1) / len(frames))
    return HeldOutQuality.of(triples)


def write_avatar(data, out: str | Path, template) -> int:
    """Write ``data`` to ``out`` whole or not at all, after checking that it loads and is at
    most MAX_LCA_BYTES (over it, the colours lose their view-dependent SH terms, 18 bytes a
    Gaussian, and the provenance says so); returns its size."""
    from avatar.lca import AvatarFileError, load_avatar_file, save_avatar_file
    from common.files import replacing

    out = Path(out)
    with replacing(out) as tmp:
        save_avatar_file(tmp, data)
        size = tmp.stat().st_size
        if size > MAX_LCA_BYTES and data.colors.ndim == 3 and data.colors.shape[1] > 1:
            data.colors = np.ascontiguousarray(data.colors[:, :1])
            data.provenance["colours_reduced"] = (f"SH degree 1 -> 0: {size / 1e6:.1f} MB was "
                                                  f"over {MAX_LCA_BYTES / 1e6:.0f} MB")
            save_avatar_file(tmp, data)
            size = tmp.stat().st_size
        if size > MAX_LCA_BYTES:
            raise CreateError(f"the avatar would take {size / 1e6:.1f} MB, over the "
                              f"{MAX_LCA_BYTES / 1e6:.0f} MB a call can exchange")
        try:
            load_avatar_file(tmp, template)
        except AvatarFileError as exc:
            raise CreateError(f"the fitted avatar failed its own checks: {exc}") from None
    return size


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(math.ceil(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
