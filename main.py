#!/usr/bin/env python3
"""splatcall: a video call in which you appear as a 3D Gaussian avatar. `main.py --help`
lists the commands."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
