"""The body solver on a real person, against four calibrated views: pose2sim's synchronised
clips of a man walking (cam01-cam04, 100 frames each at 60 fps) and their calibration.

Each view is tracked alone (the tracker's landmark detector in video mode); each joint is
then triangulated (common.calibration.triangulate) from the views whose pose sees it
(visibility >= 0.5, at least two; a view more than ``AGREE_PX`` off is left out), and each
view's single-camera body solve is compared,
limb bone by limb bone (upper arm, forearm, thigh, shin; both sides), with the triangulated
bone's direction turned into that camera's axes. The reference is mediapipe's own 2D
points seen from four sides, so it measures the lift (depth), not mediapipe's 2D placement.

    .venv/bin/python bench/body_views.py
    .venv/bin/python bench/body_views.py --no-hidden-elbow   # before tracking.body.ELBOW_HIDDEN
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracking import landmarks as L  # noqa: E402

# Limb bone -> (its first joint, its end joint, the template bone whose head ends it).
LIMBS = {}
for _side, _name in ((".L", "LEFT"), (".R", "RIGHT")):
    for _bone, _a, _b, _end in (("upperarm01", "SHOULDER", "ELBOW", "lowerarm01"),
                                ("lowerarm01", "ELBOW", "WRIST", "wrist"),
                                ("upperleg01", "HIP", "KNEE", "lowerleg01"),
                                ("lowerleg01", "KNEE", "ANKLE", "foot")):
        LIMBS[_bone + _side] = (getattr(L, f"{_name}_{_a}"), getattr(L, f"{_name}_{_b}"),
                                _end + _side)
CAMERA_TO_AVATAR = np.array([1.0, -1.0, -1.0])
# A view's point counts as agreeing with the triangulation within this many pixels (of 1920):
# a limb is scored in a view only where both its joints agree there, so that the figures
# measure the lift, not mediapipe's 2D placement in that view.
AGREE_PX = 30.0


def track_views(say=print) -> list[list]:
    """Per view, the landmarks of every frame (None where no pose)."""
    from tests.media import pose2sim_views
    from tracking.landmarks import LandmarkDetector
    from tracking.sources import VideoSource

    views = []
    t0 = time.perf_counter()
    for path in pose2sim_views():
        source = VideoSource(path)
        frames = []
        with LandmarkDetector(static_image_mode=False) as detector:
            while (frame := source.read()) is not None:
                lm = detector.detect(frame.image)
                frames.append(lm if lm.pose is not None else None)
        source.close()
        views.append(frames)
        say(f"  {path.name}: {len(frames)} frames, {time.perf_counter() - t0:.0f} s")
    return views


def triangulated(cameras, views) -> list:
    """Per frame, (33, 3) world joints (NaN where fewer than two views see the joint)."""
    from common.calibration import triangulate

    out = []
    for i in range(min(len(v) for v in views)):
        joints = np.full((33, 3), np.nan)
        for j in range(33):
            seen = [(c, lm) for c, lm in zip(cameras, (v[i] for v in views))
                    if lm is not None and lm.pose_visibility[j] >= 0.5]
            if len(seen) < 2:
                continue
            pixels = np.array([[_pixels(c, lm)[j]] for c, lm in seen])
            point = triangulate([c for c, _ in seen], pixels)[0]
            # A view that disagrees (the man in the background of cam01 and cam02, a side
            # swapped) is left out when the others still make two.
            miss = [np.linalg.norm(c.project(point[None])[0] - px[0])
                    for (c, _), px in zip(seen, pixels)]
            keep = [k for k, m in enumerate(miss) if m <= AGREE_PX]
            if len(keep) < len(seen) and len(keep) >= 2:
                point = triangulate([seen[k][0] for k in keep], pixels[keep])[0]
            joints[j] = point
        out.append(joints)
    return out


def _pixels(camera, lm) -> np.ndarray:
    """(33, 2) the pose's points in the calibration's pixels."""
    return lm.pose[:, :2] * np.array(camera.size) / (lm.width, lm.height)


def errors(cameras, views, world) -> dict:
    """{view name: (frames, limbs) degrees} between each view's solve and the triangulation."""
    from avatar.codes import Codes
    from avatar.rig import Rig
    from avatar.template import load_template
    from tracking.body import BodySolver
    from tracking.kinematics import angle_deg

    template = load_template()
    rig, solver = Rig(template), BodySolver(template)
    out = {}
    for camera, frames in zip(cameras, views):
        rows = []
        for lm, joints in zip(frames, world):
            pose = solver.solve(lm) if lm is not None else None
            if pose is None:
                continue
            heads = dict(zip(rig.bone_names, rig.pose_codes(Codes(
                body=pose.body, root_rotation=pose.root_rotation)).heads))
            row = []
            for bone, (a, b, end) in LIMBS.items():
                seen = min(lm.pose_visibility[a], lm.pose_visibility[b]) >= 0.5
                truth = camera.camera_from_world @ (joints[b] - joints[a]) * CAMERA_TO_AVATAR
                if seen and np.all(np.isfinite(truth)):
                    miss = np.linalg.norm(camera.project(joints[[a, b]])
                                          - _pixels(camera, lm)[[a, b]], axis=1)
                    seen = miss.max() <= AGREE_PX
                row.append(angle_deg(heads[end] - heads[bone], truth)
                           if seen and np.all(np.isfinite(truth)) else np.nan)
            rows.append(row)
        out[camera.name] = np.array(rows)
    return out


def report(result: dict) -> str:
    lines = [f"{'view':6s} {'frames':>6s} " + " ".join(f"{b[:9]:>11s}" for b in LIMBS)
             + "   median    p90"]
    every = []
    for name, e in result.items():
        every.append(e[np.isfinite(e)])
        medians = [np.nanmedian(e[:, k]) if np.isfinite(e[:, k]).any() else np.nan
                   for k in range(e.shape[1])]
        lines.append(f"{name:6s} {len(e):6d} " + " ".join(f"{m:11.1f}" for m in medians)
                     + f" {np.nanmedian(e):8.1f} {np.nanpercentile(e, 90):6.1f}")
    all_ = np.concatenate(every)
    lines.append(f"all views: median {np.median(all_):.1f}, p90 {np.percentile(all_, 90):.1f}, "
                 f"{len(all_)} limb directions")
    return "\n".join(lines)


def main() -> None:
    import argparse
    import pickle

    import tracking.body as body
    from tests.media import pose2sim_cameras

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="pickle of the four views' landmarks (made if missing)")
    parser.add_argument("--no-hidden-elbow", action="store_true",
                        help="solve without moving hidden elbows (the solver before it)")
    args = parser.parse_args()
    if args.no_hidden_elbow:
        body.ELBOW_HIDDEN = (-2.0, -1.0)  # the forearm's seen fraction never falls below -1
    if args.cache and Path(args.cache).exists():
        views = pickle.loads(Path(args.cache).read_bytes())
    else:
        views = track_views(say=lambda s: print(s, file=sys.stderr))
        if args.cache:
            Path(args.cache).write_bytes(pickle.dumps(views))
    cameras = pose2sim_cameras()
    print(report(errors(cameras, views, triangulated(cameras, views))))


if __name__ == "__main__":
    main()
