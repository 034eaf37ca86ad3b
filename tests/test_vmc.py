"""VMC over real UDP sockets on 127.0.0.1: our sender to our receiver gives the codes back
(every humanoid bone's rotation within float32 precision, the 52 weights exactly); the
packets checked against the protocol by a small decoder written here from the
specification; the axes checked by forward kinematics in Unity's own terms; 10,000 fuzzed
datagrams counted and dropped; a flood bounded."""

from __future__ import annotations

import logging
import math
import socket
import struct
import time

import numpy as np
import pytest

from app.poses import POSES
from avatar.codes import BLENDSHAPE_NAMES, Codes
from avatar.humanoid import HUMAN_BONES, Humanoid
from common.rotation import quat_normalize, quat_to_matrix
from avatar.template import load_template
from net import vmc

# Unity's HumanBodyBones (docs.unity3d.com ScriptReference/HumanBodyBones), Jaw and
# LastBone left out: the names the protocol sends in /VMC/Ext/Bone/Pos.
UNITY_BONES = (
    ["Hips", "LeftUpperLeg", "RightUpperLeg", "LeftLowerLeg", "RightLowerLeg", "LeftFoot",
     "RightFoot", "Spine", "Chest", "UpperChest", "Neck", "Head", "LeftShoulder",
     "RightShoulder", "LeftUpperArm", "RightUpperArm", "LeftLowerArm", "RightLowerArm",
     "LeftHand", "RightHand", "LeftToes", "RightToes", "LeftEye", "RightEye"]
    + [f"{side}{finger}{joint}" for side in ("Left", "Right")
       for finger in ("Thumb", "Index", "Middle", "Ring", "Little")
       for joint in ("Proximal", "Intermediate", "Distal")]
)


@pytest.fixture(scope="module")
def humanoid():
    return Humanoid(load_template())


def random_codes(rng: np.random.Generator, seq: int = 0) -> Codes:
    return Codes(
        t=float(rng.uniform(0, 100)), seq=seq,
        face=rng.uniform(0, 1, 52).astype(np.float32),
        gaze=rng.uniform(-0.5, 0.5, (2, 2)).astype(np.float32),
        head=quat_normalize(rng.normal(size=(4, 4))).astype(np.float32),
        body=quat_normalize(rng.normal(size=(31, 4))).astype(np.float32),
        hands=quat_normalize(rng.normal(size=(2, 19, 4))).astype(np.float32),
        root_translation=rng.uniform(-1, 1, 3).astype(np.float32),
        root_rotation=quat_normalize(rng.normal(size=4)).astype(np.float32),
    )


# -- an independent OSC decoder (OSC 1.0: big-endian, strings NUL-padded to 4 bytes) --------
def _string(data: bytes, i: int) -> tuple[str, int]:
    end = data.index(b"\x00", i)
    return data[i:end].decode("ascii"), i + ((end - i) // 4 + 1) * 4


def decode_message(data: bytes) -> tuple[str, str, list]:
    address, i = _string(data, 0)
    tags, i = _string(data, i)
    assert tags.startswith(",")
    args = []
    for tag in tags[1:]:
        if tag == "f":
            args.append(struct.unpack_from(">f", data, i)[0])
            i += 4
        elif tag == "i":
            args.append(struct.unpack_from(">i", data, i)[0])
            i += 4
        elif tag == "s":
            value, i = _string(data, i)
            args.append(value)
        else:
            raise AssertionError(f"unexpected OSC type {tag!r}")
    assert i == len(data), "trailing bytes after the arguments"
    return address, tags, args


def decode_bundle(data: bytes) -> list[tuple[str, str, list]]:
    assert data[:8] == b"#bundle\x00"
    assert data[8:16] == b"\x00\x00\x00\x00\x00\x00\x00\x01"  # the time tag 'immediately'
    messages, i = [], 16
    while i < len(data):
        (size,) = struct.unpack_from(">i", data, i)
        assert size % 4 == 0
        messages.append(decode_message(data[i + 4:i + 4 + size]))
        i += 4 + size
    assert i == len(data)
    return messages


def unity_forward_kinematics(bones: dict) -> dict:
    """Joint positions from decoded Bone/Pos messages, composed as Unity composes local
    transforms (parent rotation applied to the child's local position)."""
    world = {}
    for bone in HUMAN_BONES:
        p, q = np.array(bones[bone.name][:3]), np.array(bones[bone.name][3:])
        rotation = quat_to_matrix(np.array([q[3], q[0], q[1], q[2]]))  # Unity stores x y z w
        if bone.parent is None:
            world[bone.name] = (p, rotation)
        else:
            parent_p, parent_r = world[bone.parent]
            world[bone.name] = (parent_p + parent_r @ p, parent_r @ rotation)
    return world


# -- tests -----------------------------------------------------------------------------------
def test_a_round_trip_on_loopback_gives_back_every_humanoid_bone_and_exact_weights(humanoid):
    receiver = vmc.VmcReceiver("127.0.0.1", 0, humanoid)
    sender = vmc.VmcSender(*receiver.address, humanoid)
    rng = np.random.default_rng(3)
    frames = [POSES[name].codes(0.4) for name in ("walk", "wave", "fist", "talk")]
    frames += [random_codes(rng, seq) for seq in range(6)]
    try:
        for sent in frames:
            sender.send(sent)
            deadline = time.monotonic() + 5
            back = None
            while back is None and time.monotonic() < deadline:
                back = receiver.take()
                time.sleep(0.001)
            assert back is not None, "nothing arrived"
            assert np.array_equal(back.face, sent.face)  # float32 on the wire: exact
            assert np.abs(back.gaze - sent.gaze).max() < 1e-5
            assert np.abs(back.root_translation - sent.root_translation).max() < 1e-5
            assert back.valid.all()
            ours = humanoid.rig.pose(humanoid.rig.local_rotations(sent))
            theirs = humanoid.rig.pose(humanoid.rig.local_rotations(back))
            # Every humanoid bone turns the same: the world rotation of its last template bone.
            error = np.abs(ours.rotations[humanoid.last] - theirs.rotations[humanoid.last])
            assert error.max() < 2e-5, error.max()
    finally:
        sender.close()
        receiver.close()
    assert receiver.stats.malformed == 0 and sender.stats.send_errors == 0
    assert sender.stats.datagrams == 3 * len(frames)


def test_packets_follow_the_vmc_specification(humanoid):
    codes = POSES["talk"].codes(0.3)
    datagrams = vmc.VmcEncoder(humanoid).encode(codes, 12.5)
    assert len(datagrams) == 3
    bones, shapes, status = (decode_bundle(d) for d in datagrams)

    assert bones[0] == ("/VMC/Ext/Root/Pos", ",sfffffff", ["root", 0, 0, 0, 0, 0, 0, 1.0])
    assert all(m[:2] == ("/VMC/Ext/Bone/Pos", ",sfffffff") for m in bones[1:])
    assert sorted(m[2][0] for m in bones[1:]) == sorted(UNITY_BONES)
    for _address, _, args in bones[1:]:
        assert abs(math.hypot(*args[4:8]) - 1) < 1e-6  # unit quaternions, x y z w

    assert all(m[:2] == ("/VMC/Ext/Blend/Val", ",sf") for m in shapes[:-1])
    assert shapes[-1] == ("/VMC/Ext/Blend/Apply", ",", [])
    perfect_sync = [n[0].upper() + n[1:] for n in BLENDSHAPE_NAMES]
    assert [m[2][0] for m in shapes[:-1]] == perfect_sync
    assert "JawOpen" in perfect_sync and "EyeBlinkLeft" in perfect_sync
    assert [m[2][1] for m in shapes[:-1]] == [float(w) for w in codes.face]

    assert status == [("/VMC/Ext/OK", ",i", [1]), ("/VMC/Ext/T", ",f", [12.5])]
    assert all(len(d) < 8192 for d in datagrams)


def test_the_encoder_writes_the_same_bytes_as_python_osc_message_by_message(humanoid):
    encoder = vmc.VmcEncoder(humanoid)
    rng = np.random.default_rng(5)
    for codes in [Codes(), POSES["wave"].codes(1.0), random_codes(rng), random_codes(rng)]:
        assert encoder.encode(codes, 3.25) == vmc.encode_reference(humanoid, codes, 3.25)


@pytest.mark.parametrize("pose", ["walk", "wave", "fist"])
def test_unity_forward_kinematics_of_the_packet_mirrors_our_skeleton(humanoid, pose):
    """Local positions and rotations composed in Unity's axes put every joint where ours is,
    mirrored in X: the avatar's left hand (our +X) is at Unity's -X, its left arm raised in
    the wave is raised there too. (These poses turn only the first template bone of each
    humanoid bone, so joint positions, not only rotations, must agree.)"""
    codes = POSES[pose].codes(0.6)
    messages = decode_bundle(vmc.VmcEncoder(humanoid).encode(codes, 0.0)[0])
    bones = {args[0]: args[1:] for address, _, args in messages[1:]}
    world = unity_forward_kinematics(bones)
    ours = humanoid.rig.pose(humanoid.rig.local_rotations(codes), codes.root_translation)
    for i, bone in enumerate(HUMAN_BONES):
        expected = ours.heads[humanoid.pivots[i]] * np.array([-1.0, 1.0, 1.0])
        assert np.abs(world[bone.name][0] - expected).max() < 1e-5, bone.name
    assert world["LeftHand"][0][0] < -0.2 < 0.2 < world["RightHand"][0][0]


def test_a_t_posed_sender_puts_our_arms_out_palms_down_and_legs_straight(humanoid):
    """All identity rotations are VRM's T-pose: our template must reach it from its A-pose."""
    decoder = vmc.VmcDecoder(humanoid)
    messages = decode_bundle(vmc.VmcEncoder(humanoid).encode(POSES["wave"].codes(), 0.0)[0])
    decoder.feed(_send_raw([(address, *args[:4], 0.0, 0.0, 0.0, 1.0)
                            for address, _, args in messages]), 1.0)
    codes = decoder.codes()
    skeleton = humanoid.rig.pose(humanoid.rig.local_rotations(codes))
    template = humanoid.rig.template

    def head(name):
        return skeleton.heads[template.bone_index(name)]

    forearm = head("wrist.L") - head("lowerarm01.L")
    assert np.dot(forearm / np.linalg.norm(forearm), [1, 0, 0]) > 0.999
    fingers = head("finger3-3.L") - head("finger3-1.L")
    assert np.dot(fingers / np.linalg.norm(fingers), [1, 0, 0]) > 0.99
    palm = np.cross(head("finger3-1.L") - head("wrist.L"),
                    head("finger2-1.L") - head("finger5-1.L"))
    assert np.dot(palm / np.linalg.norm(palm), [0, -1, 0]) > 0.99
    shin = head("foot.R") - head("lowerleg01.R")
    assert np.dot(shin / np.linalg.norm(shin), [0, -1, 0]) > 0.999


def test_axis_conversion_is_the_x_mirror_of_the_rotation():
    rng = np.random.default_rng(2)
    q = quat_normalize(rng.normal(size=(20, 4)))
    unity = vmc.to_unity_quaternion(q)
    mirror = np.diag([-1.0, 1.0, 1.0])
    expected = mirror @ quat_to_matrix(q) @ mirror
    got = quat_to_matrix(np.roll(unity, 1, axis=-1))
    assert np.abs(got - expected).max() < 1e-12
    assert np.allclose(vmc.from_unity_quaternion(unity), q)


def _send_raw(messages: list) -> bytes:
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    bundle = OscBundleBuilder(IMMEDIATELY)
    for address, *args in messages:
        builder = OscMessageBuilder(address)
        for a in args:
            builder.add_arg(a)
        bundle.add_content(builder.build())
    return bundle.build().dgram


def test_missing_bones_stay_at_rest_and_unknown_names_are_counted(humanoid):
    decoder = vmc.VmcDecoder(humanoid)
    turn = [0.0, math.sin(0.2), 0.0, math.cos(0.2)]  # Unity x y z w: about Unity's +Y
    decoder.feed(_send_raw([
        ("/VMC/Ext/Bone/Pos", "Head", 0.0, 0.1, 0.0, *turn),
        ("/VMC/Ext/Bone/Pos", "Tail", 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 1.0),
        ("/VMC/Ext/Blend/Val", "jawopen", 0.5),  # any case
        ("/VMC/Ext/Blend/Val", "Joy", 1.0),
        ("/VMC/Ext/Blend/Apply",),
        ("/VMC/Ext/Cam", "cam", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 60.0),
    ]), 7.5)
    codes = decoder.codes()
    assert codes.t == 7.5
    assert codes.blendshape("jawOpen") == 0.5 and codes.face.sum() == 0.5
    assert np.array_equal(codes.body, Codes().body) and np.array_equal(codes.hands, Codes().hands)
    assert codes.is_valid("head") and codes.is_valid("face")
    assert not codes.is_valid("body") and not codes.is_valid("left_hand")
    # Unity's +Y turn is a turn about our -Y (mirror): the head looks to the avatar's right.
    head = quat_to_matrix(codes.head[3])
    assert head[0, 2] < -0.3
    stats = decoder.stats
    assert (stats.unknown_bones, stats.unknown_blendshapes, stats.ignored) == (1, 1, 1)
    assert stats.unknown_names == {"Tail": 1, "Joy": 1}
    assert decoder.codes() is codes  # nothing new: the same frame


def test_unknown_names_are_kept_for_a_bounded_number_of_short_names(humanoid):
    decoder = vmc.VmcDecoder(humanoid)
    for i in range(500):
        decoder.feed(_send_raw([("/VMC/Ext/Blend/Val", f"shape{i}" + "x" * 5000, 0.5)]), 1.0)
    assert decoder.stats.unknown_blendshapes == 500
    names = decoder.stats.unknown_names
    assert len(names) == vmc.UNKNOWN_NAMES_KEPT
    assert max(map(len, names)) == vmc.UNKNOWN_NAME_CHARS


def test_a_larger_sender_stands_on_our_floor(humanoid):
    """Hips 1.74 m up on legs twice ours: our root stays at its rest height."""
    decoder = vmc.VmcDecoder(humanoid)
    messages = decode_bundle(vmc.VmcEncoder(humanoid).encode(Codes(), 0.0)[0])
    scaled = [(address, args[0], *[2 * v for v in args[1:4]], *args[4:])
              for address, _, args in messages]
    decoder.feed(_send_raw(scaled), 1.0)
    assert np.abs(decoder.codes().root_translation).max() < 1e-5


def mutations(rng: np.random.Generator, valid: list[bytes]):
    """Random bytes, bit flips, truncations, bad sizes and types, non-finite numbers, deep
    nesting: what a hostile or broken network could deliver."""
    bad_numbers = [struct.pack(">f", v) for v in (math.nan, math.inf, -math.inf, 1e30)]
    for i in range(10_000):
        base = bytearray(valid[i % len(valid)])
        kind = i % 8
        if kind == 0:
            yield rng.bytes(int(rng.integers(0, 600)))
        elif kind == 1:
            for _ in range(int(rng.integers(1, 20))):
                base[int(rng.integers(len(base)))] ^= 1 << int(rng.integers(8))
            yield bytes(base)
        elif kind == 2:
            yield bytes(base[:int(rng.integers(len(base)))])
        elif kind == 3:  # an element size pointing anywhere
            at = 16 + 4 * int(rng.integers(0, 4))
            base[at:at + 4] = struct.pack(">i", int(rng.integers(-2**31, 2**31)))
            yield bytes(base)
        elif kind == 4:  # a number replaced by NaN, infinity or a huge value
            at = len(base) - 4 * int(rng.integers(1, 8))
            base[at:at + 4] = bad_numbers[int(rng.integers(len(bad_numbers)))]
            yield bytes(base)
        elif kind == 5:  # a type tag letter changed
            at = bytes(base).find(b",s")
            base[at + 1 + int(rng.integers(0, 4))] = int(rng.choice(list(b"bhdtmrTFN[]xS")))
            yield bytes(base)
        elif kind == 6:  # bundles nested deeper than any sender needs
            inner = bytes(base)
            for _ in range(int(rng.integers(1, 12))):
                inner = (b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", len(inner))
                         + inner)
            yield inner
        else:  # random bytes after a valid address
            yield b"/VMC/Ext/Bone/Pos\x00\x00\x00" + rng.bytes(int(rng.integers(0, 80)))


def test_ten_thousand_fuzzed_datagrams_are_counted_and_dropped_never_raised(humanoid, caplog):
    encoder = vmc.VmcEncoder(humanoid)
    rng = np.random.default_rng(11)
    valid = encoder.encode(random_codes(rng), 1.0)
    decoder = vmc.VmcDecoder(humanoid)
    with caplog.at_level(logging.DEBUG):
        for datagram in mutations(rng, valid):
            decoder.feed(datagram, 1.0)
            codes = decoder.codes()  # a frame from whatever got through is always valid codes
            assert codes is None or np.isfinite(codes.body).all()
    stats = decoder.stats
    assert stats.datagrams == 10_000
    assert stats.malformed > 6_000, stats  # most mutations break the packet
    assert not caplog.records  # no log line per bad datagram
    # And the receiver still follows a good sender afterwards.
    good = POSES["wave"].codes(0.2)
    for datagram in encoder.encode(good, 2.0):
        decoder.feed(datagram, 2.0)
    assert np.array_equal(decoder.codes().face, good.face)


def test_fuzzed_datagrams_over_a_real_socket_are_counted(humanoid):
    receiver = vmc.VmcReceiver("127.0.0.1", 0, humanoid)
    rng = np.random.default_rng(12)
    valid = vmc.VmcEncoder(humanoid).encode(random_codes(rng), 1.0)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    try:
        for datagram in mutations(rng, valid):
            if sent == 2000:
                break
            out.sendto(datagram or b"\x00", receiver.address)
            sent += 1
            if sent % 50 == 0:
                receiver.poll()
        deadline = time.monotonic() + 5
        while receiver.stats.datagrams < sent and time.monotonic() < deadline:
            receiver.poll()
    finally:
        out.close()
        receiver.close()
    assert receiver.stats.datagrams == sent  # loopback loses nothing at this pace
    assert receiver.stats.malformed > 1000


def test_a_flood_costs_one_bounded_poll_and_leaves_no_backlog(humanoid):
    receiver = vmc.VmcReceiver("127.0.0.1", 0, humanoid, max_datagrams=20)
    datagrams = vmc.VmcEncoder(humanoid).encode(POSES["walk"].codes(0.1), 1.0)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(200):
            out.sendto(datagrams[2], receiver.address)  # small: the socket buffer holds them
        time.sleep(0.2)
        assert receiver.poll() == 20
        assert receiver.stats.dropped_flood > 150
        assert receiver.poll() == 0  # nothing left behind to fall behind on
    finally:
        out.close()
        receiver.close()
    assert receiver.stats.datagrams == 20


@pytest.mark.parametrize("text, expected", [
    ("39539", ("127.0.0.1", 39539)), ("example.org:9000", ("example.org", 9000)),
    ("[::1]:39539", ("::1", 39539)),
])
def test_endpoints_parse(text, expected):
    assert vmc.parse_endpoint(text, "127.0.0.1") == expected


@pytest.mark.parametrize("text", ["", ":", "host:", "host:port", "70000", "0"])
def test_bad_endpoints_say_why(text):
    with pytest.raises(ValueError):
        vmc.parse_endpoint(text, "127.0.0.1")



def test_a_sender_to_localhost_reaches_a_receiver_listening_on_ipv4(humanoid):
    receiver = vmc.VmcReceiver("127.0.0.1", 0, humanoid)
    sender = vmc.VmcSender("localhost", receiver.address[1], humanoid)
    try:
        sender.send(POSES["smile"].codes())
        deadline = time.monotonic() + 5
        while receiver.take() is None:
            assert time.monotonic() < deadline, "nothing arrived"
            time.sleep(0.001)
    finally:
        sender.close()
        receiver.close()
