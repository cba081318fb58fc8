"""SynthWorld (`aa2.synthworld`, `python -m train.synthworld`): the procedural world whose ground truth
small AA2 models are trained and evaluated against. These tests check that the ground truth is true:
deterministic from a seed, masks and depth consistent with the pixels drawn, keypoints that aa2's
skeleton renderer draws on the figure, and files that training reads as prepared data."""

from __future__ import annotations

import ast

import cv2
import numpy as np
import pytest

from aa2.conditioning.skeleton import read_pose_keypoints, render_skeleton
from aa2.synthworld import (HELDOUT_SEED_BASE, INTERACTIONS, MOTIONS, frame_parts, make_clip, split_motions,
                            split_of, split_seeds)
from aa2.synthworld.character import keypoints
from conftest import REPO

FRAMES, SIZE = 8, 64


@pytest.fixture(scope="module")
def clips():
    """One 8-frame 64×64 clip per motion, with its cross-identity rendering."""
    return {m: make_clip(11 + i, frames=FRAMES, size=SIZE, motion=m) for i, m in enumerate(MOTIONS)}


def test_same_seed_gives_identical_clips_and_another_seed_a_different_one():
    a, b = make_clip(4, frames=4, size=SIZE), make_clip(4, frames=4, size=SIZE)
    for name in ("frames", "character_mask", "depth", "background", "reference"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.cross.frames, b.cross.frames)
    assert a.pose_keypoints() == b.pose_keypoints()
    c = make_clip(5, frames=4, size=SIZE, motion=a.motion)
    assert not np.array_equal(a.background, c.background)
    assert not np.array_equal(a.character_mask, c.character_mask)


@pytest.mark.parametrize("which", ["main", "cross"])
def test_masks_are_exactly_the_pixels_that_differ_from_the_clean_background(clips, which):
    for motion, clip in clips.items():
        r = getattr(clip, which)
        changed = (r.frames != clip.background).any(-1)
        objects = r.object_mask if r.object_mask is not None else np.zeros_like(changed)
        assert (motion in INTERACTIONS) == (r.object_mask is not None) == bool(objects.any()), motion
        assert not (r.character_mask & objects).any(), motion
        assert np.array_equal(r.character_mask, changed & ~objects), motion
        assert np.array_equal(objects, changed & objects), motion
        assert r.character_mask.any(axis=(1, 2)).all(), f"{motion}: a frame without the character"


def test_depth_is_the_nearest_part_and_that_part_is_what_is_seen_where_limbs_cross(clips):
    """Re-rasterise every part of every frame on its own: where parts overlap, the clip's nearness and
    colour must be those of the nearest one. Crossing limbs (the turn's arms, the walk's legs) must
    occur in both orders, or the test proves nothing."""
    orders = set()
    for motion in ("turn", "walk", "carry"):
        clip = clips[motion]
        for f in range(FRAMES):
            parts = frame_parts(clip.scene, clip.main.character, clip.performance, f)
            near = np.stack([np.where(p.mask, p.near, -1.0) for p in parts])
            covered = (near >= 0).any(0)
            nearest = near.max(0)
            assert np.allclose(clip.depth[f][covered], nearest[covered], atol=1e-6), (motion, f)
            assert np.array_equal(clip.depth[f][~covered], clip.background_depth[~covered])
            for i, a in enumerate(parts):
                for b in parts[i + 1:]:
                    both = a.mask & b.mask
                    limbs = all(p.name.endswith(("arm", "forearm", "thigh", "shin")) for p in (a, b))
                    if not both.any() or a.near == b.near or not limbs or a.name[:4] == b.name[:4]:
                        continue
                    front = a if a.near > b.near else b
                    seen = both & (near.max(0) == front.near)  # pixels no third part covers from nearer
                    colour = front.colour[seen] if isinstance(front.colour, np.ndarray) else np.array(front.colour)
                    assert (np.abs(clip.frames[f][seen].astype(int) - colour.astype(int)) <= 1).all(), (motion, f)
                    orders.add((front.name, (b if front is a else a).name))
    pairs = {frozenset(p) for p in orders}
    assert any((x, y) in orders and (y, x) in orders for x, y in map(tuple, pairs)), orders


def test_objects_cover_the_figure_where_they_are_nearer_and_move_with_the_hands(clips):
    for motion in INTERACTIONS:
        clip = clips[motion]
        occluded = 0
        for f in range(FRAMES):
            parts = frame_parts(clip.scene, clip.main.character, clip.performance, f)
            body = [p for p in parts if p.kind == "character"]
            for obj in (p for p in parts if p.kind == "object"):
                for p in body:
                    overlap = obj.mask & p.mask
                    nearer = obj if obj.near > p.near else p
                    mask = clip.object_mask[f] if nearer is obj else clip.character_mask[f]
                    hidden = overlap & (clip.depth[f] == np.float32(nearer.near))
                    assert mask[hidden].all(), (motion, f, obj.name, p.name)
                    occluded += int((overlap & ~clip.character_mask[f]).sum()) if nearer is obj else 0
        assert occluded > 0, f"{motion}: the object never hides any of the figure"
    for motion in ("push", "carry"):  # the box follows the hands: centroid shift ≈ wrist shift (pixels)
        clip = clips[motion]
        wrists = np.array([p.people[0].body[[4, 7], :2].mean(0) for p in clip.poses])
        centres = np.array([np.argwhere(m)[:, ::-1].mean(0) for m in clip.object_mask])
        assert np.abs((centres - centres[0]) - (wrists - wrists[0])).max() < 2.5, motion
        near_hand = [cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8))[int(round(y)), int(round(x))]
                     for m, (x, y) in zip(clip.object_mask, wrists)]
        assert all(near_hand), motion


def test_keypoints_round_trip_and_aa2s_skeleton_is_drawn_on_the_figure(clips):
    for motion, clip in clips.items():
        data = clip.pose_keypoints()
        back = read_pose_keypoints(data)
        for frame, original in zip(back, clip.poses):
            assert np.allclose(frame.people[0].body, original.people[0].body), motion
        skeleton = render_skeleton(data, SIZE, SIZE, stick_width=1).numpy().max(1) > 0  # [F, H, W]
        figure = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for m in clip.character_mask])
        inside = (skeleton & figure).sum() / skeleton.sum()
        assert inside > 0.9, f"{motion}: only {inside:.0%} of the skeleton lies on the figure"


def test_cross_identity_has_the_same_motion_and_background_but_another_look(clips):
    ious = []
    for motion, clip in clips.items():
        main, cross = clip.main, clip.cross
        assert main.character.bones == cross.character.bones and main.character.look != cross.character.look
        for state, pose in zip(clip.performance.states, clip.poses):
            assert np.array_equal(keypoints(cross.character, state, clip.scene.camera), pose.people[0].body)
        either = main.character_mask | cross.character_mask
        if main.object_mask is not None:
            either |= main.object_mask | cross.object_mask
        assert np.array_equal(main.frames[~either], cross.frames[~either]), motion
        silhouettes = main.character_mask | cross.character_mask
        ious.append((main.character_mask & cross.character_mask).sum() / silhouettes.sum())
        assert ious[-1] < 0.92, f"{motion}: silhouettes nearly identical (IoU {ious[-1]:.2f})"
        both = main.character_mask & cross.character_mask
        assert np.abs(main.frames[both].astype(int) - cross.frames[both].astype(int)).mean() > 20, motion
    assert np.mean(ious) < 0.85, ious  # shape leakage must be measurable: B's silhouette is not A's


def test_128_pixel_clips_show_a_figure_of_plausible_height():
    clip = make_clip(2, frames=2, size=128, motion="walk", cross_identity=False)
    rows = np.flatnonzero(clip.character_mask[0].any(1))
    assert 0.4 * 128 < rows[-1] - rows[0] < 0.75 * 128
    assert clip.reference.shape == (128, 128, 3) and clip.main.reference_mask.sum() > 200


def test_splits_never_share_seeds_and_can_hold_out_motions():
    train, held = split_seeds("train", 5), split_seeds("heldout", 5)
    assert not set(train) & set(held) and all(split_of(s) == "heldout" for s in held)
    assert held[0] == HELDOUT_SEED_BASE and all(split_of(s) == "train" for s in train)
    assert "turn" not in split_motions("train", ["turn"]) and "turn" in split_motions("heldout", ["turn"])
    with pytest.raises(ValueError):
        split_motions("train", ["fly"])


def test_writer_output_reads_as_prepared_clips_and_resumes(tmp_path, capsys):
    import torch

    from train import store
    from train.dataset import PreparedClips
    from train.synthworld import main

    out = tmp_path / "synth"
    args = [str(out), "--videos", "4", "--frames", "6", "--size", "64", "--seed", "0", "--cross-identity"]
    assert main(args) == 0
    folders = sorted(p for p in out.iterdir())
    assert [p.name for p in folders] == ["sw_0000000_walk", "sw_0000001_wave", "sw_0000002_turn", "sw_0000003_push"]
    data = PreparedClips(out, clip_length=6, size=(64, 64))
    assert len(data) == 4 and not data.skipped
    item = data[3]
    clip = make_clip(3, frames=6, size=64, motion="push")
    assert item["frames"].shape == (6, 3, 64, 64) and item["skeleton"].shape == (6, 3, 64, 64)
    assert torch.equal(item["frames"], torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(item["character_mask"].bool(), torch.from_numpy(clip.character_mask))
    assert torch.equal(item["object_mask"].bool(), torch.from_numpy(clip.object_mask))
    assert item["has_depth"] and item["has_objects"] and not data[0]["has_objects"]
    meta = store.read_json(folders[3] / store.META)
    for name in ("background", "reference", "reference_mask", "reference_pose"):
        assert (folders[3] / meta["synthworld"]["files"][name]).is_file(), name
    for name, path in meta["synthworld"]["files"]["cross"].items():
        assert (folders[3] / path).exists(), name
    background = cv2.imread(str(folders[3] / "background.png"))[..., ::-1]
    assert np.array_equal(background, clip.background)
    cross = store.read_frames(folders[3] / "cross", "frames", range(6))
    assert np.array_equal(cross, clip.cross.frames)
    assert np.array_equal(store.read_masks(folders[3] / "cross" / store.CHARACTER_MASK, range(6)),
                          clip.cross.character_mask)
    stamp = (folders[0] / store.META).stat().st_mtime_ns
    assert main(args) == 0 and (folders[0] / store.META).stat().st_mtime_ns == stamp
    assert "0 written, 4 already complete" in capsys.readouterr().err


def test_aa2_synthworld_never_imports_train():
    for path in (REPO / "aa2" / "synthworld").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] != "train", path
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "train" for a in node.names), path
