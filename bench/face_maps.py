"""Learned corrections of the face solver, measured against plain least squares (issue 15).

Each candidate is fitted on the renders of four identities of bench/face_loop.py and scored
on the fifth (leave one identity out, every identity in turn), on extra "talking" renders
(mouth shapes the loop does not pose, which a correction must not read as the scored
shapes), and, fitted on all five, on real media: jwpIntro.mp4 (a calm talker: the
calm shapes' 90th percentiles), testMovie.mp4 (a talker who raises his brows, frames
142-189: browInnerUp's 90th percentile) and the astronaut's smile.

    .venv/bin/python bench/face_maps.py --cache loop.pkl --talk-cache talk.pkl

Candidates: per-shape gains on the solver's weights; a ridge map from the solver's 52
weights and the head pose's 9 terms to the 14 scored shapes; a ridge map from the aligned
landmark displacements (1404) and the pose terms to the scored shapes.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import face_loop as F  # noqa: E402

from avatar.codes import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES  # noqa: E402

# Mouth and eye shapes of talking that the loop does not pose (and two mixtures).
TALK = {
    "neutral": {},
    "talk_funnel": {"jawOpen": 0.25, "mouthFunnel": 0.6},
    "talk_close": {"mouthClose": 0.3, "jawOpen": 0.2},
    "rollLower": {"mouthRollLower": 0.6},
    "lowerDown": {"mouthLowerDownLeft": 0.6, "mouthLowerDownRight": 0.6, "jawOpen": 0.2},
    "upperUp": {"mouthUpperUpLeft": 0.6, "mouthUpperUpRight": 0.6},
    "frown": {"mouthFrownLeft": 0.7, "mouthFrownRight": 0.7},
    "stretch": {"mouthStretchLeft": 0.6, "mouthStretchRight": 0.6},
    "press": {"mouthPressLeft": 0.6, "mouthPressRight": 0.6},
    "shrug": {"mouthShrugUpper": 0.5, "mouthShrugLower": 0.5},
    "squint": {"eyeSquintLeft": 0.6, "eyeSquintRight": 0.6},
    "mouthLeft": {"mouthLeft": 0.6},
    "talk_smile": {"jawOpen": 0.4, "mouthSmileLeft": 0.5, "mouthSmileRight": 0.5},
    "brow_talk": {"browInnerUp": 0.5, "jawOpen": 0.3},
}
TALK_POSES = [(0, 0), (15, 0), (-30, 0), (0, -12)]
# The calm shapes of tests/test_track_face.py's calm talker.
CALM = ("brow", "eyeWide", "eyeSquint", "noseSneer", "cheek", "jawForward", "jawLeft",
        "jawRight", "mouthSmile", "mouthFrown", "mouthDimple", "mouthLeft", "mouthRight")
SCORED = [BLENDSHAPE_INDEX[n] for n in F.SCORED]
DEPTH = np.array([1.0, 1.0, 0.35])


class _Unpickler(pickle.Unpickler):
    """Reads bench/face_loop.py's cache, whose cases were pickled as ``__main__.Case``."""

    def find_class(self, module, name):
        if module == "__main__" and name == "Case":
            return F.Case
        return super().find_class(module, name)


def _cases(path: str | None, render):
    if path and Path(path).exists():
        with open(path, "rb") as f:
            return _Unpickler(f).load()
    cases = render()
    if path:
        Path(path).write_bytes(pickle.dumps(cases))
    return cases


def features(solver, face, t=None, neutral=None):
    """(weights (52,), displacement (1404,), pose terms (9,)) of one face."""
    from tracking.face import head_angles, pose_features

    if neutral is not None:
        solver.calibrate(neutral)
    weights = solver.solve(face, 0.0 if t is None else t).weights
    aligned, rotation = solver.align(face)
    displacement = ((aligned - solver.neutral)[:468] * DEPTH).reshape(-1)
    return weights, displacement, pose_features(*head_angles(rotation))


def case_features(solver, cases):
    neutrals = {(c.identity, c.light): c.face_px for c in cases
                if c.expression == "neutral" and c.yaw_deg == 0 and c.pitch_deg == 0}
    rows = [features(solver, c.face_px, neutral=neutrals[(c.identity, c.light)])
            for c in cases]
    w, d, p = (np.array(x) for x in zip(*rows))
    return w, d, p, np.array([c.truth for c in cases]), np.array([c.identity for c in cases])


def real_features(solver):
    """{name: (weights, displacements, pose terms)} over jwpIntro.mp4 and testMovie.mp4
    (video mode, the whole tracker's landmarks) and the astronaut (a photograph)."""
    from skimage import data as skimage_data

    from tests.media import media_path
    from tracking.landmarks import LandmarkDetector
    from tracking.sources import Frame, VideoSource
    from tracking.tracker import Tracker

    out = {}
    for name in ("jwpIntro.mp4", "testMovie.mp4"):
        source = VideoSource(media_path(name))
        fps = source.nominal_fps or 30.0
        faces = []
        with Tracker() as tracker:
            while (frame := source.read()) is not None:
                t = len(faces) / fps
                faces.append((t, tracker.process(Frame(frame.image, t, len(faces))).landmarks.face))
        source.close()
        solver.recalibrate(start=True)
        rows = [features(solver, f, t) for t, f in faces if f is not None]
        out[name] = tuple(np.array(x) for x in zip(*rows))
    with LandmarkDetector(static_image_mode=True) as detector:
        face = detector.detect(skimage_data.astronaut()).face
    solver.recalibrate(start=False)
    out["astronaut"] = tuple(np.array([x]) for x in features(solver, face))
    return out


def gains(w, d, p, t):
    g = np.ones(w.shape[1])
    for k in SCORED:
        posed = t[:, k] > 0
        g[k] = np.sum(w[posed, k] * t[posed, k]) / max(np.sum(w[posed, k] ** 2), 1e-9)
    return lambda w, d, p: _replace(w, np.clip(w[:, SCORED] * g[SCORED], 0, 1))


def ridge(inputs, lam):
    """A ridge map from ``inputs(w, d, p)`` to the scored shapes (dual form)."""
    def fit(w, d, p, t):
        x = inputs(w, d, p)
        mu = x.mean(0)
        xc = x - mu
        y = t[:, SCORED]
        b = y.mean(0)
        a = xc.T @ np.linalg.solve(xc @ xc.T + lam * np.eye(len(xc)), y - b)
        return lambda w, d, p: _replace(w, np.clip((inputs(w, d, p) - mu) @ a + b, 0, 1))
    return fit


def _replace(w, scored):
    out = w.copy()
    out[:, SCORED] = scored
    return out


def evaluate(label, fit, loop, talk, real, cases):
    """Leave one identity out over the loop's and the talking renders; fitted on all five
    for the real media. One line of figures."""
    w, d, p, t, ids = (np.concatenate([a, b]) for a, b in zip(loop, talk))
    n = len(loop[0])
    out = w.copy()
    if fit is not None:
        for held in sorted(set(ids)):
            train = ids != held
            out[ids == held] = fit(w[train], d[train], p[train], t[train])(
                w[ids == held], d[ids == held], p[ids == held])
        apply = fit(w, d, p, t)
    else:
        def apply(w, d, p):
            return w
    r = F.score(cases, out[:n])
    unposed = t[n:][:, SCORED] == 0
    talk_p90 = float(np.percentile(out[n:][:, SCORED][unposed], 90))
    calm = [i for i, name in enumerate(BLENDSHAPE_NAMES) if name.startswith(CALM)]
    jwp = np.percentile(apply(*real["jwpIntro.mp4"])[:, calm], 90, axis=0)
    brows = np.percentile(apply(*real["testMovie.mp4"])[:, BLENDSHAPE_INDEX["browInnerUp"]], 90)
    smile = apply(*real["astronaut"])[0]
    brow_med = [r[k]["median"] for k in F.SCORED if k.startswith("brow")]
    return (f"{label:34s} jaw {r['jawOpen']['median']:.2f} smiles "
            f"{r['mouthSmileLeft']['median']:.2f}/{r['mouthSmileRight']['median']:.2f} brows "
            f"{min(brow_med):.2f}-{max(brow_med):.2f} puff {r['cheekPuff']['median']:.2f} "
            f"pucker {r['mouthPucker']['median']:.2f} turned {r['_neutral_turned_max']:.2f} | "
            f"talk p90 {talk_p90:.2f} | jwpIntro calm p90 max {jwp.max():.2f} mean "
            f"{jwp.mean():.3f} | testMovie brows p90 {brows:.2f} | astronaut "
            f"{smile[BLENDSHAPE_INDEX['mouthSmileLeft']]:.2f}/"
            f"{smile[BLENDSHAPE_INDEX['mouthSmileRight']]:.2f}")


def main() -> None:
    import argparse

    from avatar.template import load_template
    from tracking.face import FaceSolver

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="bench/face_loop.py's cache of all five identities "
                        "(rendered, 9 min, if missing)")
    parser.add_argument("--talk-cache", help="cache of the talking renders (2 min if missing)")
    args = parser.parse_args()
    say = lambda s: print(s, file=sys.stderr)  # noqa: E731
    cases = _cases(args.cache, lambda: F.render_loop(say=say, identities=list(F.IDENTITY)))
    F.EXPRESSIONS.update(TALK)
    talk_cases = _cases(args.talk_cache, lambda: F.render_loop(
        expressions=list(TALK), poses=TALK_POSES, lights=[0], say=say,
        identities=list(F.IDENTITY)))
    solver = FaceSolver(load_template())
    loop = case_features(solver, cases)
    talk = case_features(solver, talk_cases)
    real = real_features(solver)
    candidates = [("least squares (as shipped)", None), ("per-shape gains", gains)]
    for lam in (1.0, 3.0):
        candidates.append((f"ridge on weights + pose, {lam:g}",
                           ridge(lambda w, d, p: np.c_[w, p], lam)))
    for lam in (10.0, 100.0):
        candidates.append((f"ridge on displacements, {lam:g}",
                           ridge(lambda w, d, p: np.c_[1000 * d, p], lam)))
    for label, fit in candidates:
        print(evaluate(label, fit, loop, talk, real, cases), flush=True)


if __name__ == "__main__":
    main()
