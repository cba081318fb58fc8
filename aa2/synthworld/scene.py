"""SynthWorld scenes: procedural backgrounds seen by a static camera, with their nearness.

A scene is a room (wall with a texture, floor of planks, tiles or carpet, furniture: shelves,
tables, plants, lamps, windows, pictures) or an outdoor place (sky, hills, trees, bushes, fences
on grass, sand or pavement). Everything in it lies behind the character's plane: its nearness is at
most `render.BACKGROUND_NEAR_MAX`, the floor nearing toward the bottom of the frame, props a little
nearer than the floor at their foot. The camera places the character's ground line below the
horizon.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

from .render import BACKGROUND_NEAR_MAX, Camera


@dataclass(frozen=True)
class Scene:
    kind: str  # "room" or "outdoor"
    background: np.ndarray  # uint8 [H, W, 3]
    near: np.ndarray  # float32 [H, W], nearness 0..BACKGROUND_NEAR_MAX
    camera: Camera


def make_scene(rng: np.random.Generator, size: int) -> Scene:
    """A scene of `size × size` pixels drawn from `rng`, and the camera the character is seen by."""
    horizon = int(rng.uniform(0.38, 0.6) * size)
    ground = rng.uniform(0.84, 0.92) * size
    camera = Camera(size=size, cx=size / 2, ground=float(ground), scale=float(rng.uniform(0.5, 0.6) * size))
    rows = np.arange(size, dtype=np.float64)[:, None]
    floor_near = 0.15 + 0.3 * np.clip((rows - horizon) / max(1, size - horizon), 0, 1)
    image = np.zeros((size, size, 3), np.float64)
    near = np.where(rows < horizon, 0.0, floor_near).repeat(size, 1)
    kind = "room" if rng.random() < 0.55 else "outdoor"
    if kind == "room":
        _wall(rng, image, horizon)
        near[:horizon] = 0.12
    else:
        _sky(rng, image, horizon)
    _floor(rng, image, horizon, kind)
    image = _grain(rng, image)
    props = _room_props if kind == "room" else _outdoor_props
    props(rng, image, near, horizon, floor_near[:, 0])
    return Scene(kind, np.ascontiguousarray(image), np.clip(near, 0, BACKGROUND_NEAR_MAX).astype(np.float32), camera)


def _rgb(rng: np.random.Generator, hue=(0.0, 1.0), saturation=(0.1, 0.5), value=(0.5, 0.9)) -> np.ndarray:
    return 255 * np.array(colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*saturation), rng.uniform(*value)))


def _wall(rng, image, horizon):
    size = image.shape[1]
    base, second = _rgb(rng), _rgb(rng)
    image[:horizon] = base
    style = rng.integers(4)
    cols = np.arange(size)
    if style == 1:  # wallpaper stripes
        period = max(3, int(rng.uniform(0.05, 0.12) * size))
        image[:horizon, (cols // period) % 2 == 1] = base * 0.85 + second * 0.15
    elif style == 2:  # bricks
        brick_h = max(2, size // 24)
        for top in range(0, horizon, brick_h):
            image[top, :] = base * 0.7
            offset = (top // brick_h % 2) * brick_h
            image[top:top + brick_h, (cols + offset) % (2 * brick_h) == 0] = base * 0.7
    elif style == 3:  # wainscot: a darker lower third
        image[int(horizon * 0.66):horizon] = second * 0.8
        image[int(horizon * 0.66)] = second * 0.5


def _sky(rng, image, horizon):
    size = image.shape[1]
    top, low = _rgb(rng, (0.53, 0.64), (0.35, 0.7), (0.75, 1.0)), _rgb(rng, (0.5, 0.62), (0.05, 0.3), (0.85, 1.0))
    t = (np.arange(horizon) / max(1, horizon))[:, None, None]
    image[:horizon] = top * (1 - t) + low * t
    if rng.random() < 0.6:
        sun = (int(rng.uniform(0.1, 0.9) * size), int(rng.uniform(0.05, 0.3) * horizon))
        cv2.circle(image, sun, max(2, size // 16), (250, 225, 120), -1)
    for _ in range(rng.integers(0, 4)):  # clouds
        x, y = int(rng.uniform(0, 1) * size), int(rng.uniform(0.1, 0.6) * horizon)
        cv2.ellipse(image, (x, y), (max(2, size // 10), max(1, size // 28)), 0, 0, 360, (245, 245, 250), -1)
    hills = _rgb(rng, (0.2, 0.45), (0.2, 0.5), (0.35, 0.6))
    xs = np.arange(size)
    height = horizon - size * (0.05 + 0.06 * (1 + np.sin(xs / size * rng.uniform(4, 10) + rng.uniform(0, 6))))
    for x in xs:
        image[int(max(0, height[x])):horizon, x] = hills


def _floor(rng, image, horizon, kind):
    size = image.shape[0]
    if kind == "room":
        base = _rgb(rng, (0.03, 0.12), (0.3, 0.6), (0.35, 0.75)) if rng.random() < 0.6 else _rgb(rng)
    else:
        base = (_rgb(rng, (0.22, 0.35), (0.4, 0.7), (0.4, 0.7)), _rgb(rng, (0.1, 0.15), (0.2, 0.4), (0.7, 0.9)),
                _rgb(rng, (0, 1), (0.0, 0.08), (0.4, 0.6)))[rng.integers(3)]
    depth = (np.arange(horizon, size) - horizon + 1.0) / (size - horizon)  # 0 far .. 1 near
    image[horizon:] = base * (0.8 + 0.25 * depth)[:, None, None]
    style = rng.integers(3)
    if style == 0:  # planks or paving: lines spaced by perspective
        for k in range(1, 12):
            row = horizon + int((size - horizon) * (k / 11) ** 1.6)
            if row < size:
                image[row] = base * 0.7
    elif style == 1:  # tiles: rows as above and columns converging on the centre
        for k in range(1, 9):
            row = horizon + int((size - horizon) * (k / 8) ** 1.6)
            if row < size:
                image[row] = base * 0.75
        for k in range(-8, 9):
            x0, x1 = size / 2 + k * size / 16, size / 2 + k * size / 5
            cv2.line(image, (int(x0), horizon), (int(x1), size), tuple((base * 0.75).tolist()), 1)


def _grain(rng, image):
    size = image.shape[0]
    rng = np.random.default_rng(rng.integers(2**63))  # its own stream: the layout drawn after it is the same at every size
    noise = cv2.GaussianBlur(rng.normal(0, 6, (size, size, 1)).astype(np.float32), (3, 3), 0)[..., None]
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _room_props(rng, image, near, horizon, floor_near):
    size = image.shape[0]
    for _ in range(rng.integers(1, 3)):  # windows and pictures on the wall
        w, h = int(rng.uniform(0.12, 0.25) * size), int(rng.uniform(0.1, 0.3) * horizon)
        x, y = int(rng.uniform(0, size - w)), int(rng.uniform(0.1, 0.5) * horizon)
        cv2.rectangle(image, (x, y), (x + w, y + h), tuple(_rgb(rng, value=(0.2, 0.5)).tolist()), -1)
        inside = tuple(_rgb(rng, (0.52, 0.62), (0.2, 0.5), (0.8, 1.0)).tolist() if rng.random() < 0.5 else
                       _rgb(rng, saturation=(0.3, 0.8)).tolist())
        cv2.rectangle(image, (x + 1, y + 1), (x + w - 1, y + h - 1), inside, -1)
    for _ in range(rng.integers(1, 4)):  # furniture standing on the floor
        foot = int(horizon + rng.uniform(0.02, 0.25) * (size - horizon))
        x = int(rng.uniform(-0.05, 0.95) * size)
        colour = _rgb(rng, (0.02, 0.12), (0.3, 0.7), (0.25, 0.65)) if rng.random() < 0.7 else _rgb(rng)
        kind = rng.integers(4)
        region = np.zeros((size, size), np.uint8)
        if kind == 0:  # bookshelf with books
            w, h = int(rng.uniform(0.15, 0.3) * size), int(rng.uniform(0.35, 0.6) * size)
            cv2.rectangle(image, (x, foot - h), (x + w, foot), colour.tolist(), -1)
            cv2.rectangle(region, (x, foot - h), (x + w, foot), 1, -1)
            shelf = max(3, h // 4)
            for top in range(foot - h + 1, foot - 1, shelf):
                bx = x + 1
                while bx < x + w - 1:
                    bw = int(rng.integers(1, 3))
                    cv2.rectangle(image, (bx, top + 1), (min(bx + bw, x + w - 1) - 1, top + shelf - 1),
                                  _rgb(rng, saturation=(0.4, 0.9)).tolist(), -1)
                    bx += bw
        elif kind == 1:  # table
            w, h = int(rng.uniform(0.2, 0.35) * size), int(rng.uniform(0.12, 0.2) * size)
            leg = max(1, size // 48)
            for rect in ((x, foot - h, x + w, foot - h + max(1, size // 32)), (x + 1, foot - h, x + 1 + leg, foot),
                         (x + w - 1 - leg, foot - h, x + w - 1, foot)):
                cv2.rectangle(image, rect[:2], rect[2:], colour.tolist(), -1)
                cv2.rectangle(region, rect[:2], rect[2:], 1, -1)
        elif kind == 2:  # potted plant
            r = int(rng.uniform(0.05, 0.09) * size)
            cv2.rectangle(image, (x - r // 2, foot - r), (x + r // 2, foot), (150, 80, 50), -1)
            cv2.circle(image, (x, foot - r - r), r, _rgb(rng, (0.25, 0.4), (0.4, 0.8), (0.3, 0.6)).tolist(), -1)
            cv2.rectangle(region, (x - r // 2, foot - r), (x + r // 2, foot), 1, -1)
            cv2.circle(region, (x, foot - r - r), r, 1, -1)
        else:  # floor lamp
            h = int(rng.uniform(0.3, 0.5) * size)
            cv2.line(image, (x, foot), (x, foot - h), (60, 60, 60), max(1, size // 64))
            shade = np.array([[x - size // 20, foot - h], [x + size // 20, foot - h], [x + size // 32, foot - h - size // 16],
                              [x - size // 32, foot - h - size // 16]], np.int32)
            cv2.fillConvexPoly(image, shade, _rgb(rng, (0.1, 0.17), (0.2, 0.5), (0.85, 1.0)).tolist())
            cv2.line(region, (x, foot), (x, foot - h), 1, max(1, size // 64))
            cv2.fillConvexPoly(region, shade, 1)
        near[region.astype(bool)] = floor_near[min(foot, size - 1)] + 0.01


def _outdoor_props(rng, image, near, horizon, floor_near):
    size = image.shape[0]
    for _ in range(rng.integers(1, 4)):
        foot = int(horizon + rng.uniform(0.0, 0.2) * (size - horizon))
        x = int(rng.uniform(0, 1) * size)
        region = np.zeros((size, size), np.uint8)
        kind = rng.integers(3)
        if kind == 0:  # tree
            h, r = int(rng.uniform(0.2, 0.4) * size), int(rng.uniform(0.06, 0.12) * size)
            trunk = max(1, size // 40)
            cv2.rectangle(image, (x - trunk, foot - h), (x + trunk, foot), (100, 70, 40), -1)
            cv2.circle(image, (x, foot - h), r, _rgb(rng, (0.22, 0.4), (0.4, 0.8), (0.25, 0.55)).tolist(), -1)
            cv2.rectangle(region, (x - trunk, foot - h), (x + trunk, foot), 1, -1)
            cv2.circle(region, (x, foot - h), r, 1, -1)
        elif kind == 1:  # bush
            r = int(rng.uniform(0.04, 0.08) * size)
            cv2.ellipse(image, (x, foot - r // 2), (r * 2, r), 0, 180, 360, _rgb(rng, (0.22, 0.4), (0.4, 0.8),
                                                                               (0.3, 0.6)).tolist(), -1)
            cv2.ellipse(region, (x, foot - r // 2), (r * 2, r), 0, 180, 360, 1, -1)
        else:  # fence
            w, h = int(rng.uniform(0.2, 0.45) * size), int(rng.uniform(0.06, 0.12) * size)
            colour = _rgb(rng, (0.05, 0.12), (0.1, 0.5), (0.5, 0.95)).tolist()
            for px in range(x, x + w, max(2, size // 20)):
                cv2.line(image, (px, foot), (px, foot - h), colour, 1)
                cv2.line(region, (px, foot), (px, foot - h), 1, 1)
            for row in (foot - h // 3, foot - 2 * h // 3):
                cv2.line(image, (x, row), (x + w, row), colour, 1)
                cv2.line(region, (x, row), (x + w, row), 1, 1)
        near[region.astype(bool)] = floor_near[min(foot, size - 1)] + 0.01
