"""`python -m train.prepare` and `train.dataset.PreparedClips` on synthetic videos written as real
mp4 files: a red rectangle (the "person") over a gradient, one corrupt file, precomputed masks,
poses and depth, and the real SAM2 (micro) and Sapiens (traced TorchScript) paths.

Sizes: sources are 64×96 ("walk", 12 frames, moving right), 64×64 ("jump", 40 frames, bobbing)
and 64×64 ("short", 4 frames); prepared at short side 48 and every 2nd frame, so walk is 6
frames of 48×72 and jump 20 of 48×48.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from train import prepare, store
from train.dataset import PreparedClips, collate

RED = (220, 30, 30)
SOURCES = {"walk": (64, 96, 12), "jump": (64, 64, 40), "short": (64, 64, 4)}  # H, W, frames
SIZE = 48  # prepared short side; the scale from the sources is 0.75


def rect(video: str, frame: int) -> tuple[int, int, int, int]:
    """The person's box (x0, y0, x1, y1) on a source frame."""
    if video == "walk":
        return 8 + 4 * frame, 12, 32 + 4 * frame, 52
    return 20, 8 + frame % 8, 44, 48 + frame % 8


def person_mask(video: str, frame: int) -> np.ndarray:
    h, w, _ = SOURCES[video]
    x0, y0, x1, y1 = rect(video, frame)
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def frame_rgb(video: str, frame: int) -> np.ndarray:
    h, w, _ = SOURCES[video]
    ys, xs = np.mgrid[0:h, 0:w]
    image = np.stack([np.full((h, w), 30), 60 + 100 * ys // h, 120 + 100 * xs // w], axis=-1).astype(np.uint8)
    image[person_mask(video, frame)] = RED
    return image


def pose(video: str, frame: int) -> dict:
    """An OpenPose-18 body symmetric about the box's vertical centre line, in source pixels."""
    h, w, _ = SOURCES[video]
    x0, y0, x1, _ = rect(video, frame)
    cx = (x0 + x1) / 2
    points = [(0, 4), (0, 10), (-6, 10), (-9, 18), (-9, 26), (6, 10), (9, 18), (9, 26), (-4, 24), (-4, 32),
              (-4, 38), (4, 24), (4, 32), (4, 38), (-2, 3), (2, 3), (-4, 4), (4, 4)]
    body = [v for dx, dy in points for v in (cx + dx, y0 + dy, 1.0)]
    return {"people": [{"pose_keypoints_2d": body, "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None,
                        "face_keypoints_2d": None}], "canvas_height": h, "canvas_width": w}


def write_mp4(path: Path, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for f in frames:
        writer.write(np.ascontiguousarray((np.repeat(f[..., None], 3, -1) if f.ndim == 2 else f)[..., ::-1]))
    writer.release()


def write_pngs(folder: Path, masks: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for i, m in enumerate(masks):
        cv2.imwrite(str(folder / f"mask_{i}.png"), m.astype(np.uint8) * 255)  # natural order: 2 before 10


def resized(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    for sub in ("videos", "masks", "objects", "poses", "depth"):
        (root / sub).mkdir()
    for video, (h, w, count) in SOURCES.items():
        write_mp4(root / "videos" / f"{video}.mp4", [frame_rgb(video, i) for i in range(count)])
        (root / "poses" / f"{video}.json").write_text(json.dumps([pose(video, i) for i in range(count)]))
        masks = [person_mask(video, i) for i in range(count)]
        if video == "walk":  # one as a (lossy) mask video, the others as PNG folders
            write_mp4(root / "masks" / "walk.mp4", [m.astype(np.uint8) * 255 for m in masks])
        else:
            write_pngs(root / "masks" / video, masks)
    square = np.zeros((64, 96), bool)
    square[40:50, 36:46] = True  # beside the person, inside every crop below
    write_pngs(root / "objects" / "walk", [square] * SOURCES["walk"][2])
    ys = np.arange(64, dtype=np.float32)[:, None] / 64
    np.save(root / "depth" / "walk.npy", np.broadcast_to(ys, (12, 64, 96)).copy())  # larger = lower = nearer
    (root / "videos" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    return root


def precomputed_args(inputs: Path, out: Path) -> list[str]:
    return [str(inputs / "videos"), str(out), "--size", str(SIZE), "--every", "2", "--masks", str(inputs / "masks"),
            "--object-masks", str(inputs / "objects"), "--poses", str(inputs / "poses"),
            "--depth", str(inputs / "depth")]


@pytest.fixture(scope="module")
def prepared(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    assert prepare.main(precomputed_args(inputs, out)) == 0
    return out


# --- prepare --------------------------------------------------------------------------------


def test_layout_holds_every_good_video_and_skips_the_corrupt_one(prepared):
    complete = sorted(p.name for p in prepared.iterdir() if (p / store.META).is_file())
    assert complete == ["jump", "short", "walk"]
    assert not (prepared / "broken").exists()
    log = (prepared / prepare.LOG_NAME).read_text()
    assert "broken: skipped: could not open broken.mp4" in log
    assert "1 failed" in log

    meta = json.loads((prepared / "walk" / store.META).read_text())
    assert (meta["frames"], meta["height"], meta["width"]) == (6, 48, 72)
    assert meta["source_indices"] == [0, 2, 4, 6, 8, 10] and meta["source"]["frames"] == 12
    assert set(meta["annotations"]) == {"character_mask", "object_mask", "pose", "depth"}
    assert meta["annotations"]["depth"]["convention"] == "inverse"
    jump = json.loads((prepared / "jump" / store.META).read_text())
    assert set(jump["annotations"]) == {"character_mask", "pose"}  # no object masks or depth given for it

    decoded = store.read_frames(prepared / "walk", meta["frames_file"], range(6))
    assert decoded.shape == (6, 48, 72, 3) and decoded.dtype == np.uint8
    assert store.stored_shape(prepared / "walk" / store.CHARACTER_MASK) == (6, 48, 72)
    assert len(json.loads((prepared / "walk" / store.POSE).read_text())) == 6


def test_stored_masks_are_the_source_frames_kept(prepared):
    """Masks are taken at the kept source frames (every 2nd) and resized like the frames. The PNG
    masks of jump match exactly; walk's mask video is lossy mp4v, so IoU > 0.9 (a 1-px edge error
    on the 30×18 box would give 0.83)."""
    jump = store.read_masks(prepared / "jump" / store.CHARACTER_MASK, range(20))
    for k in range(20):
        assert np.array_equal(jump[k], resized(person_mask("jump", 2 * k), 48, 48))
    walk = store.read_masks(prepared / "walk" / store.CHARACTER_MASK, range(6))
    for k in range(6):
        want = resized(person_mask("walk", 2 * k), 48, 72)
        assert (walk[k] & want).sum() / (walk[k] | want).sum() > 0.9


def test_stored_depth_is_nearness_per_frame(prepared):
    near = store.read_depth(prepared / "walk" / store.DEPTH, range(6))
    assert near.shape == (6, 48, 72) and near.min() >= 0 and near.max() <= 1
    # "inverse" depth grows downwards, so the bottom is near: bright, normalised to reach 0 and 1.
    assert np.all(near[:, -1].mean(1) > 0.95) and np.all(near[:, 0].mean(1) < 0.05)


def test_a_crashed_video_is_redone_and_complete_ones_are_skipped(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = precomputed_args(inputs, out)
    real = store.write_masks

    def crash_on_jump(path, masks):
        if path.parent.name == "jump":
            raise RuntimeError("simulated crash half-way through a video")
        real(path, masks)

    monkeypatch.setattr(store, "write_masks", crash_on_jump)
    assert prepare.main(args) == 0
    assert (out / "jump" / store.FRAMES_VIDEO).is_file() and not (out / "jump" / store.META).exists()
    assert "simulated crash" in (out / prepare.LOG_NAME).read_text()
    monkeypatch.setattr(store, "write_masks", real)

    stamps = {v: (out / v / store.META).stat().st_mtime_ns for v in ("walk", "short")}
    assert prepare.main(args) == 0
    assert (out / "jump" / store.META).is_file()
    assert {v: (out / v / store.META).stat().st_mtime_ns for v in stamps} == stamps
    assert (out / prepare.LOG_NAME).read_text().count("already complete (meta.json present)") == 2

    (out / "walk" / store.META).unlink()  # a video whose meta.json is gone is prepared again
    short = (out / "short" / store.META).stat().st_mtime_ns
    assert prepare.main(args) == 0
    assert (out / "walk" / store.META).is_file()
    assert (out / "short" / store.META).stat().st_mtime_ns == short


def test_bad_options_stop_before_any_video(inputs, tmp_path):
    out = tmp_path / "out"
    assert prepare.main([str(inputs / "videos"), str(out), "--poses", str(inputs / "poses"),
                         "--sapiens-pose", str(tmp_path / "x.pt2")]) == 2
    assert prepare.main([str(inputs / "videos"), str(out), "--boxes", str(tmp_path / "b.json")]) == 2
    assert prepare.main([str(inputs / "videos"), str(out), "--size", "50"]) == 2
    assert not any(p.is_dir() for p in out.iterdir())


@pytest.fixture(scope="module")
def sam2_files(tmp_path_factory):
    pytest.importorskip("sam2")
    from sam2_micro import write_micro_checkpoint

    return write_micro_checkpoint(tmp_path_factory.mktemp("sam2"))


def test_sam2_masks_from_given_and_centre_boxes(inputs, sam2_files, tmp_path):
    """Random micro weights: the masks mean nothing, so this checks what prepare controls — the
    prompts it derives, and that masks of the right shape are stored for the character and,
    where boxes are given, the objects."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the micro model's ops are tiny; threads only add synchronisation
    try:
        boxes = tmp_path / "boxes.json"
        boxes.write_text(json.dumps({"walk": [8, 12, 32, 52]}))
        objects = tmp_path / "objects.json"
        objects.write_text(json.dumps({"walk": [[70, 40, 80, 50], [0.0, 0.0, 0.25, 0.25]]}))
        out = tmp_path / "out"
        assert prepare.main([str(inputs / "videos"), str(out), "--size", str(SIZE), "--every", "2",
                             "--sam2", str(sam2_files["pt"]), "--sam2-config", str(sam2_files["yaml"]),
                             "--boxes", str(boxes), "--object-boxes", str(objects),
                             "--poses", str(inputs / "poses")]) == 0
    finally:
        torch.set_num_threads(threads)
    walk = json.loads((out / "walk" / store.META).read_text())["annotations"]
    assert walk["character_mask"]["method"] == "sam2" and walk["character_mask"]["prompt"] == "boxes"
    assert walk["character_mask"]["box"] == [6.0, 9.0, 24.0, 39.0]  # source pixels × 0.75
    assert walk["object_mask"]["boxes"] == [[52.5, 30.0, 60.0, 37.5], [0.0, 0.0, 18.0, 12.0]]  # pixels, fractions
    jump = json.loads((out / "jump" / store.META).read_text())["annotations"]
    assert jump["character_mask"]["prompt"] == "centre" and "object_mask" not in jump
    assert jump["character_mask"]["box"] == [12.0, 2.4, 36.0, 45.6]  # CENTRE_BOX of 48×48
    assert store.stored_shape(out / "walk" / store.CHARACTER_MASK) == (6, 48, 72)
    assert store.stored_shape(out / "walk" / store.OBJECT_MASK) == (6, 48, 72)
    assert store.stored_shape(out / "jump" / store.CHARACTER_MASK) == (20, 48, 48)


class RedHeatmaps(nn.Module):
    """Sapiens' pose output shape [B, 17, H/4, W/4]: the red channel pooled, so every keypoint
    lands on the red person."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x[:, :1], 4).repeat(1, 17, 1, 1)


class RedDepth(nn.Module):
    """Sapiens' depth output [B, 1, H/2, W/2]: the red channel, so the person is *far*."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x[:, :1], 2)


def test_sapiens_pose_and_depth_through_torchscript(inputs, tmp_path):
    files = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, module in (("pose", RedHeatmaps()), ("depth", RedDepth())):
            files[name] = tmp_path / f"{name}_torchscript.pt2"
            torch.jit.trace(module, torch.zeros(1, 3, 64, 48)).save(str(files[name]))
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "walk.mp4").write_bytes((inputs / "videos" / "walk.mp4").read_bytes())
    out = tmp_path / "out"
    assert prepare.main([str(videos), str(out), "--size", str(SIZE), "--every", "2", "--masks", str(inputs / "masks"),
                         "--sapiens-pose", str(files["pose"]), "--sapiens-depth", str(files["depth"])]) == 0
    meta = json.loads((out / "walk" / store.META).read_text())
    assert meta["annotations"]["pose"]["boxes"] == "character mask"
    assert meta["annotations"]["depth"]["convention"] == "depth"
    poses = json.loads((out / "walk" / store.POSE).read_text())
    masks = store.read_masks(out / "walk" / store.CHARACTER_MASK, range(6))
    for frame, mask in zip(poses, masks):
        body = np.asarray(frame["people"][0]["pose_keypoints_2d"]).reshape(-1, 3)
        x, y = body[0, :2].round().astype(int)  # the nose: the heatmap peak, on the red box
        assert mask[np.clip(y, 0, 47), np.clip(x, 0, 71)]
    near = store.read_depth(out / "walk" / store.DEPTH, range(6))
    # Sapiens depth is "larger = farther"; red is large, so the person must come out dark (far).
    assert all(n[m].mean() < n[~m].mean() for n, m in zip(near, masks))


def test_dwpose_keypoints_in_the_character_mask_box(inputs, tmp_path):
    """A DWPose pose model that puts every keypoint on the reddest pixel (tests/test_dwpose.py's
    `dot_file`); with character masks the detector is never needed, so the folder holds none."""
    from test_dwpose import dot_file

    models = tmp_path / "dwpose"
    models.mkdir()
    dot_file(models / "dw-ll_ucoco_384.onnx")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "walk.mp4").write_bytes((inputs / "videos" / "walk.mp4").read_bytes())
    out = tmp_path / "out"
    assert prepare.main([str(videos), str(out), "--size", str(SIZE), "--every", "2", "--masks", str(inputs / "masks"),
                         "--dwpose", str(models)]) == 0
    meta = json.loads((out / "walk" / store.META).read_text())
    assert meta["annotations"]["pose"] == {"method": "dwpose", "model": "dw-ll_ucoco_384.onnx", "detector": None,
                                           "boxes": "character mask", "file": store.POSE}
    poses = json.loads((out / "walk" / store.POSE).read_text())
    masks = store.read_masks(out / "walk" / store.CHARACTER_MASK, range(6))
    assert len(poses) == len(masks) == 6
    for frame, mask in zip(poses, masks):
        (person,) = frame["people"]
        body = np.asarray(person["pose_keypoints_2d"]).reshape(-1, 3)
        x, y = body[0, :2].round().astype(int)  # the nose: on the red person
        assert mask[np.clip(y, 0, 47), np.clip(x, 0, 71)]


def test_dwpose_needs_its_pose_file_and_is_one_pose_source(inputs, tmp_path, capsys):
    empty = tmp_path / "dwpose"
    empty.mkdir()
    args = [str(inputs / "videos"), str(tmp_path / "out"), "--masks", str(inputs / "masks")]
    assert prepare.main(args + ["--dwpose", str(empty)]) == 2
    assert "dw-ll_ucoco_384.onnx" in capsys.readouterr().err
    assert prepare.main(args + ["--dwpose", str(empty), "--poses", str(empty)]) == 2
    assert "--dwpose and --poses" in capsys.readouterr().err


# --- dataset --------------------------------------------------------------------------------


def test_clips_have_the_documented_keys_shapes_and_ranges(prepared):
    clips = PreparedClips(prepared, clip_length=4, size=(32, 24), stride=1, seed=0)
    assert "short" in clips.skipped and "2 frames" in clips.skipped["short"]
    for i in range(len(clips)):
        s = clips[i]
        assert set(s) == {"frames", "character_mask", "object_mask", "skeleton", "depth", "has_depth",
                          "has_objects", "video_id", "start"}
        shapes = {"frames": (4, 3, 32, 24), "character_mask": (4, 32, 24), "object_mask": (4, 32, 24),
                  "skeleton": (4, 3, 32, 24), "depth": (4, 32, 24)}
        for key, shape in shapes.items():
            assert s[key].shape == shape and s[key].dtype == torch.float32, key
            assert s[key].min() >= 0 and s[key].max() <= 1, key
        for key in ("character_mask", "object_mask"):
            assert torch.all((s[key] == 0) | (s[key] == 1)), key
        walk = s["video_id"] == "walk"
        assert s["has_depth"] is walk and s["has_objects"] is walk and isinstance(s["start"], int)
        assert (s["depth"].abs().sum() > 0) == walk and (s["object_mask"].sum() > 0) == walk


def centre_x(mask: torch.Tensor) -> float:
    """The mean column of a `[H, W]` 0/1 mask."""
    return float((mask.sum(0) * torch.arange(mask.shape[1])).sum() / mask.sum())


def test_every_annotation_is_cropped_like_the_frames(prepared):
    """Walk (48×72) is scaled to 32×48 and cropped 12 px from the left, jump (48×48) to 32×32 and
    cropped 4 px: inside the mask the frames are the person's red, and the skeleton's centre line
    (symmetric about the person's) is within 1.5 px of the mask's."""
    clips = PreparedClips(prepared, clip_length=4, size=(32, 24))
    for i in range(len(clips)):
        s = clips[i]
        inside = s["character_mask"].bool()
        red = s["frames"].permute(1, 0, 2, 3)[:, inside]  # [3, pixels]
        assert red[0].mean() > 0.7 and red[1].mean() < 0.3
        for mask, skeleton in zip(s["character_mask"], s["skeleton"]):
            on = (skeleton.amax(0) > 0.1).float()
            assert abs(centre_x(on) - centre_x(mask)) < 1.5
        if s["video_id"] == "walk":
            assert torch.all(s["depth"][:, -4:].mean((1, 2)) > s["depth"][:, :4].mean((1, 2)))


def test_clip_starts_are_fixed_by_seed_and_tile_without_one(prepared):
    tiled = PreparedClips(prepared, clip_length=4, size=(16, 16))
    assert [(tiled.videos[v]["video_id"], s) for v, s in tiled.clips] == (
        [("jump", s) for s in range(0, 17, 4)] + [("walk", 0)])
    a = PreparedClips(prepared, clip_length=4, size=(16, 16), seed=3, clips_per_video=3)
    b = PreparedClips(prepared, clip_length=4, size=(16, 16), seed=3, clips_per_video=3)
    c = PreparedClips(prepared, clip_length=4, size=(16, 16), seed=4, clips_per_video=3)
    assert a.clips == b.clips and a.clips != c.clips and len(a) == 6
    assert all(0 <= s <= 16 for _, s in a.clips)
    first, again = a[1], b[1]
    assert all(torch.equal(first[k], again[k]) if isinstance(first[k], torch.Tensor) else first[k] == again[k]
               for k in first)
    assert first["start"] == a.clips[1][1]
    # stride 2: a clip spans 7 frames, too long for walk's 6; its frames are every 2nd frame.
    strided = PreparedClips(prepared, clip_length=4, size=(16, 16), stride=2)
    assert [(strided.videos[v]["video_id"], s) for v, s in strided.clips] == [("jump", 0), ("jump", 7)]
    assert "walk" in strided.skipped
    long = PreparedClips(prepared, clip_length=7, size=(16, 16))
    torch.testing.assert_close(strided[1]["frames"], long[1]["frames"][::2], rtol=0, atol=0)


def test_seeking_into_the_frames_video_matches_decoding_from_the_start(prepared):
    everything = store.read_frames(prepared / "jump", store.FRAMES_VIDEO, range(20))
    for indices in ([5, 6, 7, 8], [13, 15, 17, 19], [0, 1]):
        assert np.array_equal(store.read_frames(prepared / "jump", store.FRAMES_VIDEO, indices), everything[indices])


def test_collate_stacks_tensors_and_lists_strings(prepared):
    clips = PreparedClips(prepared, clip_length=4, size=(16, 16))
    batch = collate([clips[0], clips[len(clips) - 1]])
    assert batch["frames"].shape == (2, 4, 3, 16, 16) and batch["depth"].shape == (2, 4, 16, 16)
    assert batch["video_id"] == ["jump", "walk"]
    assert batch["has_depth"].tolist() == [False, True] and batch["start"].dtype == torch.int64
