#!/usr/bin/env bash
# The demo talker's own avatar (issue 12: "the demo shows the talker as himself"), created once
# from the demo clip by `main.py avatar create` and kept in .cache/demo/ (app/demo_avatar.py
# keys it by the clip and the creation code, so it is made again only when either changes).
# About 5 minutes on a 2-core CPU, once. Needs the `create` extra (installed by setup.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
clip=.cache/media/jwpIntro.mp4
[ -s "$clip" ] || { echo "[setup:demo-avatar] no $clip: skipped" >&2; exit 0; }
# A failed creation must not stop the demo: it then shows the default avatar, and says so.
GLOG_minloglevel=2 TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python app/demo_avatar.py "$clip" \
    || echo "[setup:demo-avatar] creating it failed: the demo shows the default avatar" >&2
