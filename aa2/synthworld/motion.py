"""SynthWorld motions: per-frame poses of a skeleton, and the object it interacts with.

`MOTIONS`: walk, wave, turn (a full turn with the arms crossing and uncrossing in front of the
chest, so forearms pass in front of and behind each other and the torso), and the interactions:
push (a box on the floor, moved by the hands on its back face), carry (a box held between the
hands) and sit (onto a chair; the feet stay planted and the pelvis comes down onto the seat).
Objects are placed from the hands every frame, so they move with the hand contact by
construction; their parts are cuboids whose nearness decides where they cover the figure.

A motion depends only on the character's `Bones`, so a cross-identity character with the same
bones performs it with the same keypoints and the same object path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .character import BodyState, Bones, Character, joints
from .render import rotate

MOTIONS = ("walk", "wave", "turn", "push", "carry", "sit")
INTERACTIONS = ("push", "carry", "sit")


@dataclass(frozen=True)
class Box:
    """One cuboid of an object: world centre, half extents along its own axes, facing, colour."""

    name: str
    centre: np.ndarray
    half: np.ndarray
    yaw: float
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Performance:
    """A motion over a clip: one `BodyState` per frame and the object's boxes per frame (empty lists
    when the motion has no object)."""

    motion: str
    states: list[BodyState]
    objects: list[list[Box]]


def perform(motion: str, rng: np.random.Generator, bones: Bones, frames: int) -> Performance:
    """Draw one performance of `motion` (its speed, direction, facing and amplitudes from `rng`)."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown SynthWorld motion {motion!r}; choose one of {MOTIONS}")
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    side = 1.0 if rng.random() < 0.5 else -1.0
    states, objects = _MOTIONS[motion](rng, bones, t, side)
    return Performance(motion, states, objects if objects is not None else [[] for _ in t])


def standing(yaw: float = 0.0) -> BodyState:
    """The reference pose: upright, arms a little away from the body."""
    return BodyState((0.0, 0.0), yaw, arms={s: (0.05, 0.3, 0.1) for s in ("right", "left")},
                     legs={s: (0.0, 0.06, 0.0) for s in ("right", "left")})


def _gait(phase: float, amp: float, knee: float, arm_amp: float, arm=None):
    legs = {}
    arms = {}
    for name, offset in (("right", 0.0), ("left", np.pi)):
        p = phase + offset
        legs[name] = (amp * np.sin(p), 0.04, knee * max(0.0, np.cos(p)) + 0.05)
        arms[name] = arm or (-arm_amp * np.sin(p), 0.08, 0.25 + 0.2 * max(0.0, np.sin(-p)))
    return legs, arms


def _path(rng, t, yaw, distance, ahead: float = 0.0):
    """Root positions walking `distance` along the facing, centred in the frame (shifted back by
    `ahead` world units for an object carried in front)."""
    heading = rotate(np.array([0.0, 0.0, 1.0]), yaw)
    start = -heading * distance / 2 - heading * ahead / 2
    start[0] += rng.uniform(-0.12, 0.12)
    return [tuple((start + heading * distance * v)[[0, 2]]) for v in t]


def _walk(rng, bones, t, side, amp=None, knee=0.6, yaw=None, arm=None, lean=0.0, ahead=0.0):
    amp = amp if amp is not None else rng.uniform(0.3, 0.45)
    yaw = yaw if yaw is not None else side * rng.uniform(1.05, 1.5)
    cycles = rng.uniform(0.8, 1.5)
    phase0 = rng.uniform(0, 2 * np.pi)
    leg = bones.thigh + bones.shin
    distance = min(0.6, 4 * leg * np.sin(amp) * cycles * 0.6)
    roots = _path(rng, t, yaw, distance, ahead)
    states = []
    for v, root in zip(t, roots):
        legs, arms = _gait(phase0 + 2 * np.pi * cycles * v, amp, knee, 0.8 * amp, arm)
        states.append(BodyState(root, yaw, arms, legs, lean=lean))
    return states, None


def _wave(rng, bones, t, side):
    yaw = rng.uniform(-0.45, 0.45)
    waving = "right" if rng.random() < 0.5 else "left"
    cycles, lift = rng.uniform(1.5, 3.0), rng.uniform(1.2, 1.5)
    x0, sway = rng.uniform(-0.2, 0.2), rng.uniform(0.0, 0.03)
    states = []
    for v in t:
        arms = {s: (0.05, 0.15, 0.15) for s in ("right", "left")}
        arms[waving] = (0.1, lift, 0.0, 1.15 + 0.5 * np.sin(2 * np.pi * cycles * v))
        legs = {s: (0.0, 0.05, 0.02) for s in ("right", "left")}
        states.append(BodyState((x0 + sway * np.sin(2 * np.pi * v), 0.0), yaw, arms, legs))
    return states, None


def _turn(rng, bones, t, side):
    yaw0, span = rng.uniform(-0.6, 0.6), side * rng.uniform(np.pi, 1.6 * np.pi)
    cycles = rng.uniform(1.0, 2.0)
    x0 = rng.uniform(-0.2, 0.2)
    lift = {"right": rng.uniform(1.1, 1.35), "left": rng.uniform(0.8, 1.05)}  # unequal: no depth ties
    states = []
    for v in t:
        ease = 0.5 - 0.5 * np.cos(np.pi * v)
        swing = 2 * np.pi * cycles * v
        arms = {s: (lift[s], -0.35 + 0.4 * np.sin(swing + k * np.pi / 2), 0.45) for k, s in enumerate(("right", "left"))}
        legs = {s: (0.15 * np.sin(swing + k * np.pi), 0.05, 0.1 + 0.1 * np.cos(swing + k * np.pi))
                for k, s in enumerate(("right", "left"))}
        states.append(BodyState((x0, 0.0), yaw0 + span * ease, arms, legs))
    return states, None


def _push(rng, bones, t, side):
    yaw = side * rng.uniform(0.7, 1.15)
    half = np.array([bones.shoulder + rng.uniform(0.05, 0.1), 0.0, rng.uniform(0.1, 0.16)])
    states, _ = _walk(rng, bones, t, side, amp=rng.uniform(0.25, 0.35), knee=0.5, yaw=yaw,
                      arm=(rng.uniform(0.95, 1.15), 0.1, 0.2), lean=0.12, ahead=2 * half[2] + 0.3)
    colour = _box_colour(rng)
    wrist_height = -np.mean([joints(Character(bones), states[0])[f"{s}_wrist"][1] for s in ("right", "left")])
    half[1] = 0.5 * wrist_height * rng.uniform(0.95, 1.05)  # hands on the top of its back face
    objects = []
    for state in states:
        j = joints(Character(bones), state)
        hands = (j["right_wrist"] + j["left_wrist"]) / 2
        centre = hands + rotate(np.array([0.0, 0.0, half[2] - 0.015]), yaw)
        centre[1] = -half[1]  # on the floor
        objects.append([Box("box", centre, half.copy(), yaw, colour)])
    return states, objects


def _carry(rng, bones, t, side):
    yaw = side * rng.uniform(0.25, 0.8)
    states, _ = _walk(rng, bones, t, side, amp=rng.uniform(0.2, 0.3), knee=0.45, yaw=yaw,
                      arm=(rng.uniform(0.65, 0.85), 0.02, rng.uniform(0.8, 1.0)))
    colour = _box_colour(rng)
    j0 = joints(Character(bones), states[0])
    apart = np.linalg.norm(j0["right_wrist"] - j0["left_wrist"])
    half = np.array([apart / 2 - 0.012, rng.uniform(0.06, 0.1), rng.uniform(0.06, 0.1)])
    objects = []
    for state in states:
        j = joints(Character(bones), state)
        centre = (j["right_wrist"] + j["left_wrist"]) / 2 + [0.0, -0.3 * half[1], 0.0]
        objects.append([Box("box", centre, half.copy(), yaw, colour)])
    return states, objects


def _sit(rng, bones, t, side):
    yaw = side * rng.uniform(0.8, 1.35)
    start, end = rng.uniform(0.1, 0.3), rng.uniform(0.65, 0.85)
    x0 = rng.uniform(-0.15, 0.15)
    character = Character(bones)

    def pose(s: float) -> BodyState:
        arms = {k: (0.3 + 0.45 * s, 0.12, 0.2 + 0.5 * s) for k in ("right", "left")}
        legs = {k: (1.5 * s, 0.06, 1.55 * s) for k in ("right", "left")}
        return BodyState((0.0, 0.0), yaw, arms, legs, lean=0.1 * s + 0.35 * np.sin(np.pi * s))

    def planted(state: BodyState) -> BodyState:
        """The same pose moved so the ankles stay where they stood before sitting."""
        j = joints(character, state)
        moved = anchor - ((j["right_ankle"] + j["left_ankle"]) / 2)[[0, 2]]
        return BodyState((x0 + moved[0], moved[1]), yaw, state.arms, state.legs, state.lean)

    j = joints(character, pose(0.0))
    anchor = ((j["right_ankle"] + j["left_ankle"]) / 2)[[0, 2]]
    ease = np.clip((t - start) / (end - start), 0, 1)
    states = [planted(pose(s * s * (3 - 2 * s))) for s in ease]
    seated = planted(pose(1.0))
    pelvis = joints(character, seated)["pelvis"]
    chair = _chair(rng, pelvis, yaw, bones)
    return states, [chair for _ in t]


def _chair(rng, pelvis, yaw, bones) -> list[Box]:
    """A chair under a seated pelvis: seat, backrest and four legs, facing like the sitter."""
    colour = tuple(int(c) for c in rng.choice([[150, 100, 60], [110, 70, 40], [190, 150, 100], [90, 90, 100]]))
    seat_top = pelvis[1] + 0.035
    half = np.array([bones.hip * 2.2 + 0.02, 0.02, bones.thigh * 0.45])
    back = -0.06  # the seat starts a little behind the pelvis
    seat = pelvis + rotate(np.array([0.0, 0.0, back + half[2]]), yaw)
    seat[1] = seat_top + half[1]
    boxes = [Box("chair_seat", seat, half, yaw, colour)]
    rest = pelvis + rotate(np.array([0.0, 0.0, back - 0.015]), yaw)
    rest[1] = seat_top - 0.14
    boxes.append(Box("chair_back", rest, np.array([half[0], 0.14, 0.015]), yaw, colour))
    leg_half = np.array([0.015, (-seat_top - 2 * half[1]) / 2, 0.015])
    for sx in (-1, 1):
        for sz in (-1, 1):
            offset = rotate(np.array([sx * (half[0] - 0.015), 0.0, sz * (half[2] - 0.015)]), yaw)
            centre = seat + offset
            centre[1] = -leg_half[1]
            boxes.append(Box("chair_leg", centre, leg_half, yaw, colour))
    return boxes


def _box_colour(rng) -> tuple[int, int, int]:
    palette = [(200, 150, 90), (180, 120, 60), (220, 110, 40), (120, 160, 200), (200, 60, 60), (90, 160, 90)]
    return palette[rng.integers(len(palette))]


_MOTIONS = {"walk": _walk, "wave": _wave, "turn": _turn, "push": _push, "carry": _carry, "sit": _sit}
