"""The guided capture's window (``main.py avatar create --camera`` with a display): the
camera's picture as a mirror, what to do now over it in large letters, the step's number and
a bar for the time left in the step.

Each frame is composed on the CPU (PIL: the mirrored, letterboxed picture, a banner with the
prompt, the bar) and shown as one texture: the capture keeps 8 frames a second, so drawing
needs nothing faster, and the picture a test reads back is exactly what was composed.
"""

from __future__ import annotations

import numpy as np

from app.cli import UserError

BANNER_H = 96  # pixels at the window's size
BAR_H = 10
FONT_PX = 30


def compose(image: np.ndarray, prompt: str, step: int, steps: int, fraction: float,
            size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 window picture: ``image`` (RGB uint8) mirrored and letterboxed to
    ``size`` (width, height), a dark banner at the top with "step/steps  prompt" and under it
    a bar filled to ``fraction`` of the step's time."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    canvas = Image.new("RGB", (width, height), (16, 16, 16))
    frame = Image.fromarray(np.ascontiguousarray(image[:, ::-1]))  # a mirror, as people expect
    scale = min(width / frame.width, (height - BANNER_H) / frame.height)
    fitted = frame.resize((max(1, round(frame.width * scale)),
                           max(1, round(frame.height * scale))), Image.BILINEAR)
    canvas.paste(fitted, ((width - fitted.width) // 2,
                          BANNER_H + (height - BANNER_H - fitted.height) // 2))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, BANNER_H), fill=(24, 32, 48))
    font = ImageFont.load_default(size=FONT_PX)
    small = ImageFont.load_default(size=FONT_PX * 2 // 3)
    if step > 0:  # 0: the countdown before the first step
        draw.text((16, 12), f"{step}/{steps}", font=small, fill=(170, 180, 200))
    hint = "Esc cancels"
    draw.text((width - 16 - draw.textlength(hint, font=small), 12), hint, font=small,
              fill=(170, 180, 200))
    text = prompt[0].upper() + prompt[1:]
    while draw.textlength(text, font=font) > width - 90 and font.size > 12:
        font = ImageFont.load_default(size=font.size - 2)
    draw.text((70, 8 + (BANNER_H - BAR_H - font.size) // 2), text, font=font,
              fill=(255, 255, 255))
    fill = round((width - 32) * min(max(fraction, 0.0), 1.0))
    draw.rectangle((16, BANNER_H - BAR_H - 6, width - 16, BANNER_H - 6), fill=(60, 70, 90))
    if fill > 0:
        draw.rectangle((16, BANNER_H - BAR_H - 6, 16 + fill, BANNER_H - 6), fill=(90, 200, 120))
    return np.asarray(canvas)


class CaptureWindow:
    """A glfw window showing ``compose``'s picture. ``show`` returns False once the person
    closed the window or pressed Esc (the capture is then cancelled)."""

    def __init__(self, width: int = 960, height: int = 600):
        import glfw
        import moderngl

        from app.view_cmd import Overlay, no_display_reason

        reason = no_display_reason()
        if reason:
            raise UserError(reason)
        if not glfw.init():
            raise UserError("cannot open the display")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.RESIZABLE, False)
        self.window = glfw.create_window(width, height, "splatcall: make your avatar", None,
                                         None)
        if not self.window:
            glfw.terminate()
            raise UserError("cannot open an OpenGL 3.3 window on this display")
        glfw.make_context_current(self.window)
        self.ctx = moderngl.create_context(require=330)
        self.overlay = Overlay(self.ctx)
        self.size = glfw.get_framebuffer_size(self.window)
        self.texture = None
        self.cancelled = False
        self.grab = False  # keep what each frame drew in ``grabbed`` (tests, screenshots)
        self.grabbed: np.ndarray | None = None
        glfw.set_key_callback(self.window, self._key)

    def _key(self, window, key, scancode, action, mods) -> None:
        import glfw

        if key == glfw.KEY_ESCAPE and action == glfw.PRESS:
            self.cancelled = True

    def show(self, image: np.ndarray, prompt: str, step: int, steps: int,
             fraction: float) -> bool:
        import glfw

        picture = compose(image, prompt, step, steps, fraction, self.size)
        rgba = np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)])
        if self.texture is None:
            self.texture = self.ctx.texture(self.size, 4, rgba.tobytes())
        else:
            self.texture.write(rgba.tobytes())
        self.ctx.screen.use()
        self.ctx.clear(0.0, 0.0, 0.0, 1.0)
        self.overlay.draw_texture(self.ctx.screen, self.texture, self.size)
        if self.grab:
            self.grabbed = self.read_screen()
        glfw.swap_buffers(self.window)
        glfw.poll_events()
        if glfw.window_should_close(self.window):
            self.cancelled = True
        return not self.cancelled

    def read_screen(self) -> np.ndarray:
        """(H, W, 3) uint8 of the window's frame being drawn (read before the swap)."""
        w, h = self.size
        data = self.ctx.screen.read(components=3)
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1]

    def close(self) -> None:
        import glfw

        if self.texture is not None:
            self.texture.release()
        glfw.destroy_window(self.window)
        glfw.terminate()
