"""SynthWorld characters: articulated figures on the OpenPose 18-keypoint skeleton.

A character is its bones (`Bones`: limb lengths in units of its standing height, which decide the
keypoints) and its look (`Look`: clothing colours and pattern, skin, hair, body bulk, skirt or
trousers, sleeves). A pose (`BodyState`) is a root position, a facing angle and joint angles;
`joints` turns it into 3D joint positions, `keypoints` into COCO-18 pixels, and `character_parts`
into the filled shapes the frame is painted from: limbs are capsules whose nearness is the depth of
their middle (plus a small per-kind bias that settles ties: an arm beside the torso is drawn over
its edge), so limbs cross in front of and behind each other and the torso as the figure turns.

Cross-identity pairs share `Bones` and differ in `Look`: the second character then has exactly the
first one's keypoints, which is what "animate B with A's skeleton" needs as ground truth, while its
silhouette (bulk, skirt, hair) differs.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from .render import CHARACTER, Camera, Part, capsule, disc, hull, nearness_of, rotate

PART_NAMES = (
    "torso", "neck", "head", "hair_back", "skirt", "right_upper_arm", "right_forearm", "left_upper_arm",
    "left_forearm", "right_thigh", "right_shin", "right_foot", "left_thigh", "left_shin", "left_foot",
)
# Nearness bias (world units of Z) per part, for ties between parts at the same depth.
_BIAS = {"torso": 0.0, "neck": -0.01, "head": 0.005, "skirt": 0.004, "arm": 0.012, "leg": -0.005, "foot": -0.004}
_SKIN = ((236, 194, 160), (224, 172, 130), (198, 134, 90), (160, 105, 70), (118, 74, 48), (250, 214, 186))
_HAIR = ((30, 24, 20), (80, 50, 30), (150, 100, 50), (220, 190, 120), (120, 120, 120), (170, 60, 30))


@dataclass(frozen=True)
class Bones:
    """Lengths in units of the standing height (≈ 1 from sole to crown)."""

    thigh: float = 0.245
    shin: float = 0.235
    ankle: float = 0.025  # ankle above the sole
    foot: float = 0.06
    torso: float = 0.30  # pelvis to neck
    neck: float = 0.045
    head: float = 0.068  # radius
    shoulder: float = 0.105  # half width between shoulder joints
    hip: float = 0.07  # half width between hip joints
    upper_arm: float = 0.175
    forearm: float = 0.155


@dataclass(frozen=True)
class Look:
    """Appearance: RGB colours 0..255 and shape choices; widths in units of the standing height."""

    skin: tuple[int, int, int] = _SKIN[0]
    hair: tuple[int, int, int] = _HAIR[0]
    shirt: tuple[int, int, int] = (40, 90, 200)
    shirt_second: tuple[int, int, int] = (230, 230, 230)
    legs: tuple[int, int, int] = (40, 40, 60)
    shoes: tuple[int, int, int] = (20, 20, 20)
    pattern: str = "solid"  # solid | hstripes | vstripes | twotone
    stripe: float = 0.035  # stripe period
    bulk: float = 1.0  # torso and limb width factor
    arm_width: float = 0.045
    leg_width: float = 0.06
    chest_depth: float = 0.06  # torso half depth
    skirt: bool = False
    long_hair: bool = False
    long_sleeves: bool = True
    shorts: bool = False


@dataclass(frozen=True)
class Character:
    bones: Bones = field(default_factory=Bones)
    look: Look = field(default_factory=Look)


@dataclass
class BodyState:
    """One frame's pose. `root`: pelvis in world units (X right, Y down with the ground at 0, Z toward
    the camera); None puts the lower sole on the ground under `root_xz`. `yaw`: facing, radians (0
    toward the camera, +π/2 screen right). Angles in radians: arms and legs as (flex forward, spread
    outward, bend) per side, arms optionally with a fourth, the forearm's extra spread (a wave);
    `lean` tips the torso forward."""

    root_xz: tuple[float, float]
    yaw: float
    arms: dict[str, tuple[float, ...]]
    legs: dict[str, tuple[float, float, float]]
    lean: float = 0.0
    pelvis_height: float | None = None  # None: from ground contact


def random_character(rng: np.random.Generator, bones: Bones | None = None, unlike: Look | None = None) -> Character:
    """A character drawn from `rng`. `bones` fixes the skeleton (cross-identity); `unlike` draws a
    look whose bulk, colours and silhouette choices differ clearly from that one."""
    if bones is None:
        bones = Bones(thigh=rng.uniform(0.23, 0.26), shin=rng.uniform(0.22, 0.25), torso=rng.uniform(0.28, 0.32),
                      head=rng.uniform(0.06, 0.075), shoulder=rng.uniform(0.09, 0.12), hip=rng.uniform(0.06, 0.08),
                      upper_arm=rng.uniform(0.16, 0.19), forearm=rng.uniform(0.14, 0.17))
    if unlike is None:
        bulk = rng.uniform(0.75, 1.6)
        skirt, long_hair = rng.random() < 0.3, rng.random() < 0.35
        avoid = None
    else:  # the far half of the bulk range, the other silhouette choices, another shirt hue
        bulk = rng.uniform(1.35, 1.6) if unlike.bulk < 1.175 else rng.uniform(0.75, 0.9)
        skirt, long_hair = not unlike.skirt, not unlike.long_hair
        avoid = colorsys.rgb_to_hsv(*(np.array(unlike.shirt) / 255))[0]
    look = Look(
        skin=_SKIN[rng.integers(len(_SKIN))], hair=_HAIR[rng.integers(len(_HAIR))],
        shirt=_colour(rng, avoid_hue=avoid), shirt_second=_colour(rng, value=(0.75, 1.0)),
        legs=_colour(rng, saturation=(0.1, 0.6), value=(0.2, 0.7)), shoes=_colour(rng, value=(0.1, 0.4)),
        pattern=("solid", "hstripes", "vstripes", "twotone")[rng.integers(4)], stripe=rng.uniform(0.03, 0.05),
        bulk=bulk, arm_width=0.045 * bulk ** 0.8, leg_width=0.06 * bulk ** 0.8, chest_depth=0.055 * bulk,
        skirt=bool(skirt), long_hair=bool(long_hair), long_sleeves=bool(rng.random() < 0.6),
        shorts=bool(rng.random() < 0.25),
    )
    return Character(bones, look)


def joints(character: Character, state: BodyState) -> dict[str, np.ndarray]:
    """World positions (X, Y, Z) of the skeleton's joints, the head centre and the toes."""
    b = character.bones
    body: dict[str, np.ndarray] = {"pelvis": np.zeros(3)}
    lean = np.array([0.0, -np.cos(state.lean), np.sin(state.lean)])
    body["neck"] = b.torso * lean
    head = body["neck"] + (b.neck + b.head) * lean
    body["head"] = head
    r = b.head
    body.update(nose=head + [0, 0.15 * r, 0.95 * r], right_eye=head + [-0.35 * r, -0.15 * r, 0.85 * r],
                left_eye=head + [0.35 * r, -0.15 * r, 0.85 * r], right_ear=head + [-0.95 * r, 0, 0],
                left_ear=head + [0.95 * r, 0, 0])
    for side, out in (("right", -1.0), ("left", 1.0)):
        flex, spread, bend, *twist = state.arms[side]
        shoulder = body["neck"] + [out * b.shoulder, 0.015, 0]
        elbow = shoulder + b.upper_arm * _direction(flex, spread, out)
        body[f"{side}_shoulder"], body[f"{side}_elbow"] = shoulder, elbow
        body[f"{side}_wrist"] = elbow + b.forearm * _direction(flex + bend, spread + sum(twist), out)
        flex, spread, bend = state.legs[side]
        hip = np.array([out * b.hip, 0.0, 0.0])
        knee = hip + b.thigh * _direction(flex, spread, out)
        ankle = knee + b.shin * _direction(flex - bend, spread, out)
        body[f"{side}_hip"], body[f"{side}_knee"], body[f"{side}_ankle"] = hip, knee, ankle
        body[f"{side}_toe"] = ankle + [0, 0.4 * b.ankle, b.foot]
    names = list(body)
    world = rotate(np.stack([body[n] for n in names]), state.yaw)
    if state.pelvis_height is None:  # the lower sole touches the ground
        height = max(world[names.index(f"{s}_ankle"), 1] for s in ("right", "left")) + b.ankle
    else:
        height = state.pelvis_height
    world += [state.root_xz[0], -height, state.root_xz[1]]
    return dict(zip(names, world))


COCO18 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
          "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
          "right_eye", "left_eye", "right_ear", "left_ear")


def keypoints(character: Character, state: BodyState, camera: Camera) -> np.ndarray:
    """COCO-18 `[18, 3]` (x, y, confidence) in pixels. Face points turned away from the camera (the
    far eye and ear in profile, the face from behind) are missing, written (0, 0, 0) as DWPose writes
    them."""
    j = joints(character, state)
    uv, _ = camera.project(np.stack([j[n] for n in COCO18]))
    conf = np.ones(18)
    r = character.bones.head
    for i, name in enumerate(COCO18):
        if name in ("nose", "right_eye", "left_eye"):
            conf[i] = float(j[name][2] - j["head"][2] > -0.1 * r)
        elif name.endswith("_ear"):
            conf[i] = float(j[name][2] - j["head"][2] > -0.5 * r)
    return np.concatenate([uv, conf[:, None]], 1) * np.where(conf > 0, 1.0, 0.0)[:, None]  # missing: (0, 0, 0)


def character_parts(character: Character, state: BodyState, camera: Camera) -> list[Part]:
    """The figure's filled shapes for one frame (see the module docstring)."""
    b, look = character.bones, character.look
    j = joints(character, state)
    uv, near = camera.project(np.stack(list(j.values())))
    px = dict(zip(j, uv))
    z = {name: p[2] for name, p in j.items()}
    size, s = camera.size, camera.scale
    parts: list[Part] = []

    def add(name: str, mask: np.ndarray, colour, depth: float, bias: str) -> None:
        shade = 0.82 + 0.18 * float(np.clip((depth - z["pelvis"]) / 0.2 + 0.5, 0, 1))  # far limbs darker
        if isinstance(colour, np.ndarray):
            colour = np.clip(colour * shade, 0, 255).astype(np.uint8)
        else:
            colour = tuple(int(min(255, c * shade)) for c in colour)
        parts.append(Part(name, CHARACTER, mask, colour, float(nearness_of(depth + _BIAS[bias]))))

    # Torso: the hull of elliptical cross-sections at shoulder and hip height, so it keeps a width
    # in profile (the shoulder joints then project onto one point).
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    rings = []
    for centre, half_width in ((j["neck"] + [0, 0.03, 0], b.shoulder * look.bulk),
                               (j["pelvis"], b.hip * 1.3 * look.bulk)):
        ring = np.stack([np.cos(angles) * half_width, np.zeros(16), np.sin(angles) * look.chest_depth], 1)
        rings.append(centre + rotate(ring, state.yaw))
    torso_uv, _ = camera.project(np.concatenate(rings))
    add("torso", hull(size, torso_uv), _torso_colours(look, size, px["neck"], px["pelvis"], s),
        z["pelvis"] * 0.5 + z["neck"] * 0.5, "torso")
    add("neck", capsule(size, px["neck"], px["head"], 0.6 * b.head * s), look.skin, z["neck"], "neck")
    add("head", disc(size, px["head"], b.head * s), _head_colours(character, state, px, size, s), z["head"], "head")
    if look.long_hair:
        back = j["head"] + rotate(np.array([0, 0, -b.head]), state.yaw)
        bottom = j["neck"] + [0, 0.08, 0]
        a, c = camera.project(np.stack([j["head"], bottom]))[0]
        add("hair_back", capsule(size, a, c, 2.1 * b.head * s), look.hair, back[2], "neck")
    if look.skirt:
        knees = [j[f"{side}_knee"] for side in ("right", "left")]
        hem = np.stack([rotate(np.array([sx * 2.3 * b.hip * look.bulk, 0, sz * look.chest_depth]), state.yaw)
                        for sx in (-1, 1) for sz in (-1, 1)]) + (np.mean(knees, 0) * 0.7 + j["pelvis"] * 0.3)
        waist = np.concatenate(rings[1:])
        add("skirt", hull(size, camera.project(np.concatenate([waist, hem]))[0]),
            look.shirt_second if look.pattern == "solid" else look.legs, z["pelvis"], "skirt")
    sleeve = look.shirt
    for side in ("right", "left"):
        width = look.arm_width * s
        add(f"{side}_upper_arm", capsule(size, px[f"{side}_shoulder"], px[f"{side}_elbow"], width), sleeve,
            (z[f"{side}_shoulder"] + z[f"{side}_elbow"]) / 2, "arm")
        forearm = capsule(size, px[f"{side}_elbow"], px[f"{side}_wrist"], 0.9 * width)
        colour: np.ndarray | tuple = look.shirt if look.long_sleeves else look.skin
        if look.long_sleeves:  # a bare hand at the end of the sleeve
            hand = disc(size, px[f"{side}_wrist"], 0.55 * width)
            forearm = forearm | hand
            colour = np.empty((size, size, 3), np.uint8)
            colour[:] = look.shirt
            colour[hand] = look.skin
        add(f"{side}_forearm", forearm, colour, (z[f"{side}_elbow"] + z[f"{side}_wrist"]) / 2, "arm")
        width = look.leg_width * s
        thigh_colour = look.skin if look.skirt else look.legs
        add(f"{side}_thigh", capsule(size, px[f"{side}_hip"], px[f"{side}_knee"], width), thigh_colour,
            (z[f"{side}_hip"] + z[f"{side}_knee"]) / 2, "leg")
        add(f"{side}_shin", capsule(size, px[f"{side}_knee"], px[f"{side}_ankle"], 0.85 * width),
            look.skin if (look.skirt or look.shorts) else look.legs, (z[f"{side}_knee"] + z[f"{side}_ankle"]) / 2, "leg")
        add(f"{side}_foot", capsule(size, px[f"{side}_ankle"], px[f"{side}_toe"], 0.8 * width), look.shoes,
            (z[f"{side}_ankle"] + z[f"{side}_toe"]) / 2, "foot")
    return parts


def _direction(flex: float, spread: float, out: float) -> np.ndarray:
    """Unit limb direction in the body frame (left, down, forward): hanging down at 0, swung forward
    by `flex`, then spread sideways (`out` = -1 for the right side, +1 for the left) by `spread`."""
    return np.array([out * np.sin(spread), np.cos(spread) * np.cos(flex), np.cos(spread) * np.sin(flex)])


def _torso_colours(look: Look, size: int, neck: np.ndarray, pelvis: np.ndarray, scale: float) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    period = max(2.0, look.stripe * scale)
    if look.pattern == "hstripes":
        second = ((rows - neck[1]) // (period / 2)) % 2 == 1
    elif look.pattern == "vstripes":
        second = ((cols - neck[0]) // (period / 2)) % 2 == 1
    elif look.pattern == "twotone":
        second = rows > (neck[1] + pelvis[1]) / 2
    else:
        second = np.zeros((size, size), bool)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = look.shirt
    image[second] = look.shirt_second
    return image


def _head_colours(character: Character, state: BodyState, px: dict, size: int, scale: float) -> np.ndarray:
    """Skin with hair on the top and the back of the head (all of it when seen from behind), and
    dark eyes when the head is big enough to show them."""
    look, r = character.look, character.bones.head * scale
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = cols - px["head"][0], rows - px["head"][1]
    sin, cos = np.sin(state.yaw), np.cos(state.yaw)
    hair = (dy < -0.3 * r) | (dx * sin < -(0.2 + cos) * r)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = look.skin
    image[hair] = look.hair
    if r >= 3 and cos > 0.3:
        for eye in ("right_eye", "left_eye"):
            x, y = (int(round(v)) for v in px[eye])
            if 0 <= x < size and 0 <= y < size:
                image[y, x] = (25, 20, 20)
    return image


def _colour(rng: np.random.Generator, saturation=(0.45, 0.95), value=(0.45, 0.95), avoid_hue: float | None = None):
    hue = rng.random()
    if avoid_hue is not None:  # at least a third of the colour wheel away
        hue = (avoid_hue + rng.uniform(1 / 3, 2 / 3)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))
    return tuple(int(round(255 * c)) for c in rgb)
