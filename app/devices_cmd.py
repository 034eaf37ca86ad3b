"""``main.py devices``: the cameras, microphones and speakers this machine has, by the names
``--track camera:...``, ``--mic`` and ``--speaker`` take."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "devices", help="list cameras, microphones and speakers",
        description="List the cameras (V4L2: give one to --track as camera:/dev/videoN), the "
                    "microphones (--mic: an ALSA or PulseAudio device name such as default or "
                    "hw:1,0) and the speakers (--speaker: the index or name shown here) that "
                    "this machine has.")
    p.set_defaults(func=run)


def run(args) -> int:
    from app.speakers import sound_devices
    from tracking.sources import list_cameras

    cameras = list_cameras()
    mics, speakers, why = sound_devices()
    print("cameras:")
    for path, name in cameras:
        print(f"  {path}: {name}")
    if not cameras:
        print("  none (no /dev/video* device)")
    for title, lines in (("microphones", mics), ("speakers", speakers)):
        print(f"{title}:")
        for line in lines:
            print(f"  {line}")
        if not lines:
            print(f"  none ({why or 'no sound device found'})")
    return 0
