"""The call window's level of detail chosen by its frame time (app.call_window.DetailGovernor):
the rule on given frame times, then a real window under Xvfb (Mesa's OpenGL) that steps down
when its frames are over the budget and back up when they fit."""

from __future__ import annotations

import numpy as np

from app.call_window import (BACKGROUND, DETAIL_LEVELS, DETAIL_RETRY_S, DETAIL_SLOW_FRAMES,
                             CallSnapshot, DetailGovernor, RemoteView)
from avatar.codes import Codes
from tests.test_call_window import _in_fresh_process, _open_window, _pixels
from tests.test_view_cmd import display  # noqa: F401 - the Xvfb fixture


def test_slow_frames_in_a_row_step_the_detail_down_one_level_at_a_time():
    governor = DetailGovernor(budget_ms=40.0)
    now = 0.0
    for _ in range(DETAIL_SLOW_FRAMES - 1):
        now += 0.05
        assert governor.update(50.0, now) == 0
    assert governor.update(30.0, now) == 0   # one in time: the count starts again
    for _ in range(DETAIL_SLOW_FRAMES - 1):
        now += 0.05
        assert governor.update(50.0, now) == 0
    assert governor.update(50.0, now) == 1
    slow = (len(DETAIL_LEVELS) + 1) * DETAIL_SLOW_FRAMES
    for _ in range(slow):  # never below the last level
        now += 0.05
        governor.update(80.0, now)
    assert governor.level == len(DETAIL_LEVELS) - 1
    assert sum(governor.frames) == slow + 2 * DETAIL_SLOW_FRAMES


def test_the_level_above_comes_back_when_it_fits_or_is_tried_again_later():
    governor = DetailGovernor(budget_ms=40.0)
    now = 0.0
    for _ in range(DETAIL_SLOW_FRAMES):  # a burst of other work: 45 ms frames
        now += 0.05
        governor.update(45.0, now)
    assert governor.level == 1
    # Level 0 took 45 ms: over 0.9 of the budget, so level 1's 30 ms frames stay at 1 ...
    for _ in range(20):
        now += 0.03
        assert governor.update(30.0, now) == 1
    # ... until DETAIL_RETRY_S have passed: level 0 is tried again, and kept while it fits.
    now += DETAIL_RETRY_S
    assert governor.update(30.0, now) == 0
    for _ in range(20):
        now += 0.035
        assert governor.update(35.0, now) == 0
    # Slow again: down; level 0's smoothed time is over the budget now, so a frame in time
    # at level 1 does not bring it back before DETAIL_RETRY_S.
    for _ in range(DETAIL_SLOW_FRAMES):
        now += 0.05
        governor.update(60.0, now)
    assert governor.level == 1
    assert governor.update(20.0, now) == 1


def test_a_fixed_governor_stays_at_the_first_level():
    governor = DetailGovernor(budget_ms=1.0, fixed=True)
    for i in range(20):
        assert governor.update(100.0, i * 0.1) == 0
    assert governor.frames[0] == 20


def _check_steps(x_display: str) -> None:
    import glfw

    window, mailbox = _open_window(x_display)
    background = np.array(BACKGROUND) * 255
    mailbox.latest = CallSnapshot([RemoteView("r", "remote", Codes(), True, 50.0, 30.0, 60.0,
                                              0.0, 0.0)])

    def covered() -> float:
        window.draw_frame()
        for seat in window.seats.values():
            seat.opacity = 1.0  # wholly faded in
        middle = _pixels(window)[60:170, 120:200]
        return float((np.abs(middle - background).sum(axis=2) > 60).mean())

    covered()
    full = covered()
    base = {stride for _, stride, _ in window._lod}
    window.detail.budget_ms = 0.001  # every frame is too slow
    for _ in range(len(DETAIL_LEVELS) * DETAIL_SLOW_FRAMES):
        thin = covered()
    assert window.detail.level == len(DETAIL_LEVELS) - 1
    strides = {body for _, _, body in window._lod}
    assert max(strides) == max(base) + DETAIL_LEVELS[-1][1]  # fewer Gaussians drawn,
    assert thin > 0.85 * full, (thin, full)                  # the avatar still there
    window.detail.budget_ms = 1e6  # and with time to spare it climbs back to full detail
    for _ in range(len(DETAIL_LEVELS) + 1):
        covered()
    assert window.detail.level == 0
    glfw.terminate()


def test_a_real_window_draws_less_detail_while_its_frames_are_slow(display):  # noqa: F811
    _in_fresh_process(_check_steps, display)


def test_a_level_that_is_still_too_slow_is_tried_again_twice_as_late_each_time():
    from app.call_window import DETAIL_RETRY_MAX_S

    governor = DetailGovernor(budget_ms=40.0)
    now, tries = 0.0, []
    while now < 200.0:
        now += 0.05
        # level 0 takes 60 ms, level 1 30 ms: the machine never gets quieter
        before = governor.level
        if governor.update(60.0 if governor.level == 0 else 30.0, now) == 0 and before == 1:
            tries.append(now)
    gaps = np.diff(tries)
    # 5 s after leaving level 0 (plus the slow frames spent trying it), then 10, 20, 40, 60
    expected = [2 * DETAIL_RETRY_S, 4 * DETAIL_RETRY_S, 8 * DETAIL_RETRY_S, DETAIL_RETRY_MAX_S]
    assert len(gaps) >= 4
    assert np.allclose(gaps[:4], expected, atol=0.5), gaps
    assert governor.frames[0] <= DETAIL_SLOW_FRAMES * (len(tries) + 1)


def test_the_lowest_levels_thin_the_body_and_keep_the_head():
    from app.call_window import HEAD_FROM_TOP_M, head_mask, thinned
    from avatar.avatar import load_avatar

    avatar = load_avatar("default")
    head = head_mask(avatar)
    rest = avatar.pose(Codes()).means
    assert 0.05 < head.mean() < 0.7
    assert rest[head, 1].min() > rest[:, 1].max() - HEAD_FROM_TOP_M - 1e-6
    both = thinned(avatar.skinned, 8, head=head, head_stride=4)
    uniform = thinned(avatar.skinned, 4)
    heads = int(head.sum())
    # every 4th Gaussian of the head, every 8th of the rest
    assert len(both) == len(range(0, heads, 4)) + len(range(0, len(head) - heads, 8))
    # each grown by its own stride's area: sqrt(4) on the head, sqrt(8) on the body
    scale = both.local_scales / avatar.skinned.subset(
        np.sort(np.r_[np.flatnonzero(head)[::4], np.flatnonzero(~head)[::8]])).local_scales
    assert np.allclose(np.unique(np.round(scale, 4)), [2.0, round(np.sqrt(8), 4)])
    # and the head itself is drawn as at the uniform stride 4
    assert len(uniform) > len(both) > len(range(0, heads, 4))


def _check_self_view_after_the_swap(x_display: str) -> None:
    import time

    import glfw

    from app.call_window import SELF_VIEW_EVERY, SELF_VIEW_PERIOD_S

    window, mailbox = _open_window(x_display)
    mailbox.latest = CallSnapshot([RemoteView("r", "remote", Codes(), True, 50.0, 30.0, 60.0,
                                              0.0, 0.0)])
    draws = []
    real_draw = window.self_renderer.draw
    window.self_renderer.draw = lambda *a, **k: (draws.append(1), real_draw(*a, **k))[1]
    window.draw_frame()  # the first frame draws the self-view it has none of yet
    assert len(draws) == 1
    first = _pixels(window)[-40:, -40:]
    for _ in range(2 * SELF_VIEW_EVERY):  # from the ask to the presentation: never redrawn
        window.frames_drawn += 1
        window.draw_frame()
    assert len(draws) == 1
    time.sleep(SELF_VIEW_PERIOD_S)
    window.prepare_next(mailbox.latest)  # after the swap, when due: redrawn
    assert len(draws) == 2
    window.prepare_next(mailbox.latest)  # and not again before its period
    assert len(draws) == 2
    window.draw_frame()  # the frame shows the texture: the same self-view, blitted
    assert np.abs(_pixels(window)[-40:, -40:] - first).max() <= 2
    glfw.terminate()


def test_the_self_view_is_redrawn_after_the_swap_not_between_ask_and_presentation(
        display):  # noqa: F811
    _in_fresh_process(_check_self_view_after_the_swap, display)
