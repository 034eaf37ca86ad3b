"""Wire format: round trips within the quantisation bounds, size budget, and a fuzz test of
the decoder (100,000+ random and mutated packets: counted and dropped, never raised, no NaN)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from avatar.codes import PARTS, Codes
from common.rotation import quat_angle_rad, quat_normalize
from net import wire


def random_codes(rng: np.random.Generator, seq: int = 7, valid=None) -> Codes:
    return Codes(
        t=float(rng.uniform(0, 1e5)),
        seq=seq,
        face=rng.uniform(0, 1, 52).astype(np.float32),
        gaze=rng.uniform(-0.9, 0.9, (2, 2)).astype(np.float32),
        head=quat_normalize(rng.normal(size=(4, 4))).astype(np.float32),
        body=quat_normalize(rng.normal(size=(31, 4))).astype(np.float32),
        hands=quat_normalize(rng.normal(size=(2, 19, 4))).astype(np.float32),
        root_translation=rng.uniform(-3, 3, 3).astype(np.float32),
        root_rotation=quat_normalize(rng.normal(size=4)).astype(np.float32),
        valid=np.ones(len(PARTS), bool) if valid is None else valid,
    )


def test_full_frame_fits_the_budget_and_one_sctp_chunk():
    packet = wire.encode(random_codes(np.random.default_rng(0)))
    assert len(packet) == wire.MAX_PACKET_BYTES == 384
    assert len(packet) <= 400 < 1161


def test_round_trip_within_quantisation_error():
    rng = np.random.default_rng(1)
    worst_angle = 0.0
    for seq in range(200):
        codes = random_codes(rng, seq)
        back = wire.decode(wire.encode(codes))
        assert back.seq == seq and back.t == codes.t
        assert np.array_equal(back.valid, codes.valid)
        assert np.max(np.abs(back.face - codes.face)) <= 0.5 / 255 + 1e-6
        assert np.max(np.abs(back.gaze - codes.gaze)) <= 0.9 / 32767 + 1e-6
        assert np.array_equal(back.root_translation, codes.root_translation)
        for name in ("head", "body", "hands", "root_rotation"):
            angles = quat_angle_rad(getattr(back, name), getattr(codes, name))
            worst_angle = max(worst_angle, float(np.max(angles)))
    assert np.degrees(worst_angle) < 0.25, worst_angle


def test_edge_quaternions_survive():
    # Components exactly at the smallest-three range limits, negative w, and axis rotations.
    s = np.sqrt(0.5)
    quats = np.array([[1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, -1],
                      [s, s, 0, 0], [0.5, -0.5, 0.5, -0.5], [s, 0, 0, -s]], dtype=np.float64)
    back = wire.unpack_quats(wire.pack_quats(quats))
    assert np.all(np.degrees(quat_angle_rad(back, quats)) < 0.25)


def test_absent_parts_are_left_out_and_come_back_invalid_at_rest():
    rng = np.random.default_rng(2)
    valid = np.array([True, False, True, False, False, True, False])
    codes = random_codes(rng, valid=valid)
    packet = wire.encode(codes)
    assert len(packet) == wire.HEADER_BYTES + 52 + 16 + 76
    back = wire.decode(packet)
    assert np.array_equal(back.valid, valid)
    assert np.array_equal(back.body, Codes().body)
    assert np.array_equal(back.hands[0], Codes().hands[0])
    assert not np.array_equal(back.hands[1], Codes().hands[1])


@pytest.mark.parametrize("mutate, message", [
    (lambda p: b"XX" + p[2:], "bad magic"),
    (lambda p: p[:2] + bytes([9]) + p[3:], "version 9"),
    (lambda p: p[:3] + bytes([0xFF]) + p[4:], "reserved bits"),
    (lambda p: p[:-1], "mask implies"),
    (lambda p: p + b"\0", "mask implies"),
    (lambda p: p[:5], "shorter than the header"),
    (lambda p: p[:8] + struct.pack("<d", float("nan")) + p[16:], "not finite"),
    (lambda p: p[:-16] + struct.pack("<3f", np.inf, 0, 0) + p[-4:], "root translation"),
    (lambda p: p[:-16] + struct.pack("<3f", 500, 0, 0) + p[-4:], "root translation"),
    # three kept components all at +1/sqrt(2): squared sum 1.5, no unit quaternion
    (lambda p: p[:-4] + struct.pack("<I", 0x3FFFFFFF), "not a unit rotation"),
])
def test_malformed_packets_raise_a_clear_wire_error(mutate, message):
    packet = wire.encode(random_codes(np.random.default_rng(3)))
    with pytest.raises(wire.WireError, match=message):
        wire.decode(mutate(packet))


def test_decoder_counts_and_drops_instead_of_raising():
    decoder = wire.PacketDecoder()
    assert decoder.decode(b"hello") is None
    assert decoder.decode("a text message") is None
    assert decoder.decode(wire.encode(Codes(seq=3))).seq == 3
    assert (decoder.decoded, decoder.malformed) == (1, 2)
    assert "shorter than the header" in decoder.errors_by_kind.__repr__() or decoder.last_error


def _check_frame(codes: Codes) -> None:
    for name in ("face", "gaze", "head", "body", "hands", "root_translation", "root_rotation"):
        assert np.all(np.isfinite(getattr(codes, name))), name
    assert np.all((codes.face >= 0) & (codes.face <= 1))
    for name in ("head", "body", "hands", "root_rotation"):
        norms = np.linalg.norm(getattr(codes, name), axis=-1)
        assert np.all(np.abs(norms - 1) < 1e-3), name


def test_fuzz_random_and_mutated_packets():
    """100,000 random byte strings and 100,000 mutations of real packets: the decoder never
    raises, and every frame it accepts is finite, in range and of unit quaternions."""
    rng = np.random.default_rng(1234)
    decoder = wire.PacketDecoder()
    seeds = [wire.encode(random_codes(rng, seq=i, valid=rng.random(len(PARTS)) < 0.7))
             for i in range(64)]
    accepted = 0
    for i in range(100_000):
        kind = i % 4
        if kind == 0:  # pure noise, of any length up to a bit above the largest packet
            packet = rng.bytes(int(rng.integers(0, 420)))
        elif kind == 1:  # noise behind a valid header prefix: reaches the part decoders
            size = wire.packet_size(int(rng.integers(0, 128)))
            packet = wire.MAGIC + bytes([wire.WIRE_VERSION]) + rng.bytes(size - 3)
        else:  # a real packet with bytes flipped, cut short or extended
            packet = bytearray(seeds[int(rng.integers(len(seeds)))])
            for _ in range(int(rng.integers(1, 6))):
                pos = int(rng.integers(len(packet)))
                packet[pos] = (packet[pos] ^ (1 << int(rng.integers(8)))) if kind == 2 \
                    else int(rng.integers(256))
            if rng.random() < 0.1:
                packet = packet[: int(rng.integers(len(packet) + 1))]
            elif rng.random() < 0.05:
                packet += rng.bytes(int(rng.integers(1, 8)))
            packet = bytes(packet)
        decoder.highest_seq = None  # content checks here; the sequence bound is tested below
        codes = decoder.decode(packet)
        if codes is not None:
            accepted += 1
            _check_frame(codes)
    assert decoder.decoded + decoder.malformed == 100_000
    # Both paths were exercised: many mutated packets are still valid frames, noise is not.
    assert decoder.malformed > 20_000 and accepted > 20_000
    assert not any(k.startswith("unexpected") for k in decoder.errors_by_kind), \
        decoder.errors_by_kind


def test_a_stray_packet_with_a_far_sequence_number_does_not_move_the_receiver():
    from net.wire import MAX_SEQ_JUMP, PacketDecoder

    decoder = PacketDecoder()
    for seq in range(100):
        assert decoder.decode(wire.encode(Codes(seq=seq, t=seq / 60))) is not None
    stray = decoder.decode(wire.encode(Codes(seq=3_918_443_796 % (1 << 32), t=2.0)))
    assert stray is None and decoder.highest_seq == 99 and decoder.malformed == 1
    assert "sequence jump" in decoder.last_error
    assert decoder.decode(wire.encode(Codes(seq=99 + MAX_SEQ_JUMP, t=2.0))) is not None


def test_a_sender_that_really_jumps_is_followed_after_a_few_packets():
    from net.wire import RESYNC_PACKETS, PacketDecoder

    decoder = PacketDecoder()
    decoder.decode(wire.encode(Codes(seq=10, t=0.0)))
    results = [decoder.decode(wire.encode(Codes(seq=1_000_000 + i, t=1.0 + i / 60)))
               for i in range(RESYNC_PACKETS + 2)]
    assert all(r is None for r in results[:RESYNC_PACKETS - 1])
    assert all(r is not None for r in results[RESYNC_PACKETS - 1:])
    assert decoder.highest_seq == 1_000_000 + RESYNC_PACKETS + 1
