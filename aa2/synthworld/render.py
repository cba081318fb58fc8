"""SynthWorld's camera and rasteriser: world points to pixels and nearness, parts composited by depth.

The camera is static and orthographic with a slight downward tilt (a point nearer the camera is
drawn a little lower, so box tops and the floor read as seen from above). World units are the
character's standing height; the ground is `Y = 0`, `Y` grows downward and `Z` toward the camera.

Every visible thing of a frame is a `Part`: a filled shape (capsule, polygon, disc, or the visible
faces of a cuboid) with one nearness. `composite` paints parts farthest first onto the clean
background (a z-buffer with one depth per part, so painter's order and the z-buffer agree), and
returns the frame, the per-pixel nearness and which part each pixel shows. Because masks,
depth and colours all come from the same part masks, they are consistent by construction; no
anti-aliasing, so a mask pixel is exactly a pixel whose colour came from the part.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CHARACTER, OBJECT = "character", "object"
# Nearness of the character's pelvis and how fast nearness grows with Z (world units). Parts are
# clipped to [PART_NEAR_MIN, 1) and the background to <= BACKGROUND_NEAR_MAX, so nothing in the
# background is ever nearer than the character or an object.
BASE_NEAR, NEAR_PER_Z = 0.7, 0.35
PART_NEAR_MIN, BACKGROUND_NEAR_MAX = 0.52, 0.5
TILT = 0.2  # screen rows per world unit of Z (toward the camera draws lower)
VIEW = np.array([0.0, -TILT, 1.0])  # toward the camera: the direction that projects to one pixel


@dataclass(frozen=True)
class Camera:
    """Pixels of a `size × size` frame: world X = 0 at column `cx`, the ground at row `ground`,
    `scale` pixels per world unit (the character's height)."""

    size: int
    cx: float
    ground: float
    scale: float

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points `[N, 3]` → pixel (u, v) `[N, 2]` and nearness `[N]`."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        uv = np.stack([self.cx + self.scale * p[:, 0], self.ground + self.scale * (p[:, 1] + TILT * p[:, 2])], 1)
        return uv, nearness_of(p[:, 2])


def nearness_of(z: np.ndarray | float) -> np.ndarray:
    return np.clip(BASE_NEAR + NEAR_PER_Z * np.asarray(z, dtype=np.float64), PART_NEAR_MIN, 0.995)


@dataclass
class Part:
    """One shape of a frame: its pixels, their colours (`[H, W, 3]` uint8 or one RGB), one nearness,
    `name` (a key of the character's `PART_NAMES`, or an object part) and `kind` (character/object)."""

    name: str
    kind: str
    mask: np.ndarray  # bool [H, W]
    colour: np.ndarray | tuple[int, int, int]
    near: float


def composite(parts: list[Part], background: np.ndarray, background_near: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint `parts` farthest first over `background` (uint8 `[H, W, 3]`).

    Returns frame uint8 `[H, W, 3]`, nearness float32 `[H, W]` and the index into `parts` that each
    pixel shows, int16 `[H, W]` (-1: background). Ties in nearness keep list order (later on top).
    A part pixel whose colour equals the background there exactly is moved by one level, so "differs
    from the clean background" recovers the masks from the frames.
    """
    frame = background.copy()
    near = background_near.astype(np.float32).copy()
    shown = np.full(background.shape[:2], -1, np.int16)
    for index in sorted(range(len(parts)), key=lambda i: parts[i].near):
        part = parts[index]
        m = part.mask
        frame[m] = part.colour[m] if isinstance(part.colour, np.ndarray) else part.colour
        near[m] = part.near
        shown[m] = index
    same = (shown >= 0) & (frame == background).all(-1)
    frame[same, 0] ^= 1
    return frame, near, shown


# --- shapes (bool masks of a size × size frame) --------------------------------------------


def blank(size: int) -> np.ndarray:
    return np.zeros((size, size), np.uint8)


def capsule(size: int, a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
    """A thick segment with round ends from pixel a to b, `width` pixels across (at least 2)."""
    canvas = blank(size)
    radius = max(1.0, width / 2)
    d = np.asarray(b, float) - np.asarray(a, float)
    length = float(np.hypot(*d))
    if length > 1e-6:
        n = np.array([-d[1], d[0]]) / length * radius
        quad = np.array([a + n, b + n, b - n, a - n])
        cv2.fillConvexPoly(canvas, _int(quad), 1)
    r = int(round(radius))
    cv2.circle(canvas, _pt(a), r, 1, -1)
    cv2.circle(canvas, _pt(b), r, 1, -1)
    return canvas.astype(bool)


def disc(size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    canvas = blank(size)
    cv2.circle(canvas, _pt(centre), max(1, int(round(radius))), 1, -1)
    return canvas.astype(bool)


def hull(size: int, points: np.ndarray) -> np.ndarray:
    """The filled convex hull of pixel points `[N, 2]`."""
    canvas = blank(size)
    cv2.fillConvexPoly(canvas, cv2.convexHull(_int(points)), 1)
    return canvas.astype(bool)


def cuboid(camera: Camera, centre: np.ndarray, half: np.ndarray, yaw: float, colour: tuple[int, int, int],
           name: str, kind: str = OBJECT) -> Part:
    """A box of half-extents `half` (along its own x, y, z) turned by `yaw` about the vertical,
    centred at world `centre`; its faces toward the camera shaded by their direction."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    corners = centre + rotate(signs * half, yaw)
    uv, near = camera.project(corners)
    size = camera.size
    mask = hull(size, uv)
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = colour
    # Each face: its corners (indices into `signs`), outward normal in the box's frame, and a shade.
    faces = (([4, 5, 7, 6], (1, 0, 0), 0.75), ([0, 1, 3, 2], (-1, 0, 0), 0.75), ([0, 1, 5, 4], (0, -1, 0), 1.15),
             ([1, 3, 7, 5], (0, 0, 1), 0.95), ([0, 2, 6, 4], (0, 0, -1), 0.95), ([2, 3, 7, 6], (0, 1, 0), 0.6))
    for indices, normal, shade in faces:
        if float(rotate(np.array(normal, float), yaw) @ VIEW) <= 1e-9:  # faces away from the camera
            continue
        face = blank(size)
        cv2.fillConvexPoly(face, cv2.convexHull(_int(uv[indices])), 1)
        image[face.astype(bool)] = np.clip(np.array(colour) * shade, 0, 255).astype(np.uint8)
    return Part(name, kind, mask, image, float(near.mean()))


def rotate(points: np.ndarray, yaw: float) -> np.ndarray:
    """Body-frame points `[..., 3]` (left, down, forward) → world (X, Y, Z) for a body facing `yaw`
    (0: toward the camera; +90°: toward +X, screen right)."""
    p = np.asarray(points, dtype=np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([p[..., 0] * c + p[..., 2] * s, p[..., 1], -p[..., 0] * s + p[..., 2] * c], -1)


def _int(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, float)).astype(np.int32).reshape(-1, 2)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))
