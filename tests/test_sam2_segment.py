"""SAM2 segmentation through the real `sam2` video predictor, with a micro model built here.

The micro model keeps SAM2's structure (Hiera trunk with a global-attention block, FPN neck,
memory attention and encoder, SAM heads) at ~0.64 M parameters and 64-px input. Its random
weights are saved as Meta's `.pt` ({"model": sd}) and as `.safetensors`, and loaded only through
`load_sam2`. Random weights make masks meaningless, so the tests assert structure: shapes, object
independence, determinism, bounded memory equal to unbounded, and the one thing SAM2 defines
exactly: a mask prompt is returned as the mask on its own frame.

One change to the random weights: the object-score head's last layer is set to always answer
"object present". Otherwise SAM2 replaces every mask logit with the constant NO_OBJ_SCORE when a
random head says "absent", and every comparison would compare constants.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aa2.conditioning.sam2_segment import (
    EXPECTED_FILES,
    SIZES,
    VERSIONS,
    ObjectPrompt,
    bundled_config,
    config_from_filename,
    config_from_state_dict,
    load_sam2,
    memory_horizon,
    normalize_masks,
    object_frames,
    segment_video,
)
from aa2.errors import AA2InputError, AA2WeightsError

from sam2_micro import IMAGE_SIZE as SIZE
from sam2_micro import micro_config  # the ~0.64 M-parameter SAM2 shared with the data-preparation tests


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The micro model's ops are tiny: with several threads, synchronisation costs more than the
    work (10-30× slower on a busy 2-core machine). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def micro_files(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("sam2")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root = tmp_path_factory.mktemp("sam2")
    config = micro_config()
    torch.manual_seed(0)
    model = instantiate(OmegaConf.create(config)["model"], _recursive_=True)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    head = "sam_mask_decoder.pred_obj_score_head.layers.2"
    sd[f"{head}.weight"].zero_()
    sd[f"{head}.bias"].fill_(10.0)  # "object present" on every frame
    torch.save({"model": sd}, root / "micro.pt")
    save_file(sd, str(root / "micro.safetensors"))
    (root / "micro.yaml").write_text(OmegaConf.to_yaml(config))
    return {"pt": root / "micro.pt", "safetensors": root / "micro.safetensors",
            "yaml": root / "micro.yaml", "root": root}


@pytest.fixture(scope="session")
def micro(micro_files):
    return load_sam2(micro_files["pt"], config=micro_files["yaml"])


def video(frames: int = 6, height: int = 40, width: int = 56, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(frames, 3, height, width, generator=g)


def box_mask(height: int = 40, width: int = 56) -> torch.Tensor:
    mask = torch.zeros(height, width)
    mask[8:32, 12:36] = 1
    return mask


A = ObjectPrompt(positive=[(14.0, 12.0)])
B = ObjectPrompt(box=(30.0, 5.0, 54.0, 35.0), negative=[(2.0, 2.0)])


# --- config picking -------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [
    ("sam2.1_hiera_tiny.pt", "sam2.1/sam2.1_hiera_t"),
    ("sam2.1_hiera_small.pt", "sam2.1/sam2.1_hiera_s"),
    ("sam2.1_hiera_base_plus.pt", "sam2.1/sam2.1_hiera_b+"),
    ("sam2.1_hiera_large.pt", "sam2.1/sam2.1_hiera_l"),
    ("sam2_hiera_tiny.pt", "sam2/sam2_hiera_t"),
    ("sam2_hiera_large.safetensors", "sam2/sam2_hiera_l"),
    ("sam2.1_hiera_base_plus-fp16.safetensors", "sam2.1/sam2.1_hiera_b+"),
    ("sam2_1_hiera_small-bf16.safetensors", "sam2.1/sam2.1_hiera_s"),
    ("sam2_hiera_b+.pt", "sam2/sam2_hiera_b+"),
    ("SAM2.1-hiera-Large.safetensors", "sam2.1/sam2.1_hiera_l"),
    ("my_segmenter.pt", None),
])
def test_config_is_picked_from_the_file_name(name, expected):
    assert config_from_filename(name) == expected


def test_expected_file_names_each_name_their_own_config():
    picked = [config_from_filename(n) for n in EXPECTED_FILES]
    assert picked == [bundled_config(v, s) for v in VERSIONS for s in SIZES]


def test_shape_table_agrees_with_every_bundled_config():
    """config_from_state_dict reads sizes off shapes; the bundled yamls are the truth."""
    pytest.importorskip("sam2")
    import inspect

    from omegaconf import OmegaConf
    from sam2.modeling.backbones.hieradet import Hiera

    defaults = inspect.signature(Hiera).parameters  # b+ leaves its stages to Hiera's default
    for version in VERSIONS:
        for size in SIZES:
            name = bundled_config(version, size)
            model = OmegaConf.load(str(resources.files("sam2") / "configs" / f"{name}.yaml")).model
            trunk = model.image_encoder.trunk
            width = trunk.get("embed_dim", defaults["embed_dim"].default)
            depth = sum(trunk.get("stages", defaults["stages"].default))
            fake = {"image_encoder.trunk.patch_embed.proj.weight": torch.empty(width, 3, 7, 7)}
            fake |= {f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.empty(1)
                     for i in range(depth)}
            if model.get("no_obj_embed_spatial", False):
                fake["no_obj_embed_spatial"] = torch.empty(1, 64)
            assert config_from_state_dict(fake) == name


# --- loading --------------------------------------------------------------------------------


def test_missing_file_names_the_folder_and_the_expected_files(tmp_path):
    with pytest.raises(AA2WeightsError) as info:
        load_sam2(tmp_path / "sam2.1_hiera_large.pt")
    message = str(info.value)
    assert str(tmp_path) in message and "sam2.1_hiera_tiny.pt" in message
    with pytest.raises(AA2WeightsError, match="No SAM2 checkpoint in"):
        load_sam2(tmp_path)  # an empty models/sam2 folder


def test_pt_and_safetensors_load_the_same_weights(micro_files, micro):
    other = load_sam2(micro_files["safetensors"], config=micro_files["yaml"])
    a, b = micro.predictor.state_dict(), other.predictor.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert micro.path == micro_files["pt"] and micro.image_size == SIZE


def test_a_folder_with_one_checkpoint_loads_it(micro_files, tmp_path):
    (tmp_path / "sam2_micro.safetensors").write_bytes(micro_files["safetensors"].read_bytes())
    model = load_sam2(tmp_path, config=micro_files["yaml"])
    assert model.path.name == "sam2_micro.safetensors"


def test_wrong_files_get_clear_errors(micro_files, tmp_path):
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "sam2_other.pt")
    with pytest.raises(AA2WeightsError, match="not a SAM2 checkpoint"):
        load_sam2(tmp_path / "sam2_other.pt")
    (tmp_path / "sam2_broken.pt").write_bytes(b"not a pickle")
    with pytest.raises(AA2WeightsError, match="sam2_broken.pt .* is not a PyTorch checkpoint"):
        load_sam2(tmp_path / "sam2_broken.pt")
    # The micro weights under a release name: caught from the shapes, before building tiny.
    renamed = tmp_path / "sam2.1_hiera_tiny.pt"
    renamed.write_bytes(micro_files["pt"].read_bytes())
    with pytest.raises(AA2WeightsError, match="none of the bundled SAM2 configs"):
        load_sam2(renamed)
    # An explicit config of another width: the strict load names what does not fit.
    with pytest.raises(AA2WeightsError, match="does not fit"):
        load_sam2(micro_files["pt"], config=micro_config(hidden=16))
    with pytest.raises(AA2InputError, match="Unknown SAM2 config"):
        load_sam2(micro_files["pt"], config="sam3_hiera_t")


# --- segmentation ---------------------------------------------------------------------------


def test_masks_have_one_channel_per_object_and_frame(micro):
    frames = video()
    prompts = [A, B, ObjectPrompt(mask=box_mask())]
    masks = segment_video(micro, frames, prompts, prompt_frame=2)
    assert masks.shape == (3, 6, 40, 56) and masks.dtype == torch.bool


def test_objects_are_tracked_independently_and_deterministically(micro):
    frames = video()
    both = segment_video(micro, frames, [A, B], prompt_frame=1, threshold=None)
    alone_a = segment_video(micro, frames, [A], prompt_frame=1, threshold=None)
    alone_b = segment_video(micro, frames, [B], prompt_frame=1, threshold=None)
    again = segment_video(micro, frames, [A, B], prompt_frame=1, threshold=None)
    # Each object runs as its own SAM2 batch of one: adding the other changes nothing, exactly.
    torch.testing.assert_close(both[0], alone_a[0], rtol=0, atol=0)
    torch.testing.assert_close(both[1], alone_b[0], rtol=0, atol=0)
    torch.testing.assert_close(both, again, rtol=0, atol=0)
    assert not torch.equal(both[0], both[1])  # different prompts, different objects


def test_a_mask_prompt_is_the_mask_on_its_frame(micro):
    """SAM2 passes a mask prompt through (use_mask_input_as_output_without_sam) at low
    resolution (SIZE/4 = 16 px), so the round trip blurs only the edges: IoU > 0.85."""
    mask = box_mask()
    other = torch.zeros_like(mask)
    other[20:38, 40:54] = 1
    masks = segment_video(
        micro, video(), [ObjectPrompt(mask=mask), ObjectPrompt(mask=other)], prompt_frame=3
    )
    for got, want in ((masks[0, 3], mask > 0), (masks[1, 3], other > 0)):
        iou = (got & want).sum() / (got | want).sum()
        assert iou > 0.85


def test_propagation_reaches_every_frame_in_both_directions(micro):
    calls = []
    masks = segment_video(micro, video(7), [A], prompt_frame=4, threshold=None,
                          progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 7) for i in range(1, 8)]
    assert torch.isfinite(masks).all()
    # Frames before the prompt come from the reverse pass; they are real predictions, not zeros.
    assert all(masks[0, f].abs().sum() > 0 for f in range(7))


def test_bounded_memory_gives_the_unbounded_masks_and_does_not_grow(micro):
    horizon = memory_horizon(micro.predictor)
    assert horizon == 4  # num_maskmem 3 (+1), obj pointers 3
    peaks = {}
    # The reverse pass is longer than 2 horizons + 2 frames, so the peak is reached in both.
    for count in (16, 24):
        frames = video(count, 24, 32)
        log_bounded, log_full = [], []
        bounded = segment_video(micro, frames, [ObjectPrompt(positive=[(10.0, 10.0)])],
                                prompt_frame=count - 3, threshold=None, _memory_log=log_bounded)
        full = segment_video(micro, frames, [ObjectPrompt(positive=[(10.0, 10.0)])],
                             prompt_frame=count - 3, threshold=None, bounded_memory=False,
                             _memory_log=log_full)
        torch.testing.assert_close(bounded, full, rtol=0, atol=0)
        peaks[count] = max(log_bounded)
        assert max(log_full) == count  # unbounded: every frame's output stays
        # Held: the prompt frame, and frames within the horizon of the current frame or of the
        # prompt frame on either side: at most 3 horizons + 2.
        assert max(log_bounded) <= 3 * horizon + 2
    assert peaks[16] == peaks[24]


def test_one_image_and_bf16(micro_files):
    model = load_sam2(micro_files["pt"], config=micro_files["yaml"], precision="bf16")
    masks = segment_video(model, video(1), [A, B])
    assert masks.shape == (2, 1, 40, 56) and masks.dtype == torch.bool
    with pytest.raises(AA2InputError, match="'fp32', 'bf16' or 'fp16'"):
        load_sam2(micro_files["pt"], config=micro_files["yaml"], precision="fp8")


@pytest.mark.parametrize("precision,tolerance", [("bf16", 0.05), ("fp16", 0.01)])
def test_half_precision_tracks_a_video_close_to_fp32(micro_files, micro, precision, tolerance):
    """sam2 stores mask memories in bf16 whatever the autocast type; fp16 tracking works only because
    they are recast between frames, so a run over many frames (each reading stored memories) checks it.
    Tolerances: the logits' largest gap to fp32 relative to their largest magnitude, which measured
    4e-3..2.3e-2 in bf16 and 5e-4..2.6e-3 in fp16 over two micro models (bf16 keeps 8 mantissa bits, fp16 11)."""
    frames = video(7)
    want = segment_video(micro, frames, [A, B], prompt_frame=2, threshold=None)
    half = load_sam2(micro_files["pt"], config=micro_files["yaml"], precision=precision)
    got = segment_video(half, frames, [A, B], prompt_frame=2, threshold=None)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert float((got - want).abs().max()) <= tolerance * float(want.abs().max())


def test_the_video_loader_is_restored_after_a_run(micro):
    import sam2.sam2_video_predictor as module

    original = module.load_video_frames
    segment_video(micro, video(2), [A])
    assert module.load_video_frames is original


@pytest.mark.parametrize("prompt,match", [
    (ObjectPrompt(), "nothing that says where"),
    (ObjectPrompt(negative=[(3.0, 3.0)]), "nothing that says where"),
    (ObjectPrompt(positive=[(60.0, 3.0)]), r"outside the 56×40 \(width × height\) frame"),
    (ObjectPrompt(positive=[(3.0, -1.0)]), "outside"),
    (ObjectPrompt(box=(20.0, 5.0, 10.0, 30.0)), "x0 < x1"),
    (ObjectPrompt(mask=box_mask(), positive=[(3.0, 3.0)]), "both a mask and clicks"),
    (ObjectPrompt(mask=torch.ones(20, 28)), r"\[40, 56\]"),
    (ObjectPrompt(mask=torch.zeros(40, 56)), "empty"),
])
def test_bad_prompts_are_refused_before_running(prompt, match):
    # No model is needed: the prompts are checked first (a None model would fail later).
    with pytest.raises(AA2InputError, match=match):
        segment_video(None, video(2), [prompt])


def test_bad_frames_and_prompt_frame_are_refused():
    with pytest.raises(AA2InputError, match="channels-last"):
        segment_video(None, torch.rand(2, 40, 56, 3), [A])
    with pytest.raises(AA2InputError, match="prompt_frame"):
        segment_video(None, video(2), [A], prompt_frame=2)
    with pytest.raises(AA2InputError, match="No object"):
        segment_video(None, video(2), [])


# --- masks from elsewhere, object images ----------------------------------------------------


def test_normalize_masks_accepts_every_layout_and_broadcasts_one_mask():
    frames = video(4, 40, 56)
    single = box_mask()
    for given in (single, single[None], single[None, None], (single * 255).to(torch.uint8),
                  single.bool()):
        out = normalize_masks(given, frames)
        assert out.shape == (4, 40, 56) and out.dtype == torch.float32
        assert torch.equal(out, single.expand(4, -1, -1))


def test_normalize_masks_resizes_a_mask_of_the_same_aspect():
    """A 2× mask brought down to the frames: the box edges fall on even pixels, so the
    antialiased bilinear resize lands exactly on the half-size box (away from edges ±1 px)."""
    frames = video(2, 40, 56)
    big = torch.zeros(2, 80, 112)
    big[:, 16:64, 24:72] = 1
    out = normalize_masks(big, frames)
    assert out.shape == (2, 40, 56)
    assert torch.equal(out >= 0.5, box_mask().bool().expand(2, -1, -1))


@pytest.mark.parametrize("mask,match", [
    (torch.zeros(3, 40, 56), "3 frames but the video has 4"),
    (torch.zeros(4, 40, 80), "different crop"),
    (torch.full((4, 40, 56), 255.0), "0..1"),
    (torch.zeros(4, 2, 40, 56), "must be"),
])
def test_normalize_masks_errors(mask, match):
    with pytest.raises(AA2InputError, match=match):
        normalize_masks(mask, video(4, 40, 56))


def test_object_frames_keep_the_object_and_fill_the_rest():
    frames = video(3)
    first, second = box_mask(), torch.zeros(40, 56)
    second[30:40, 40:56] = 1
    masks = torch.stack([first, second])[:, None].expand(2, 3, -1, -1)  # [O, F, H, W]
    out = object_frames(frames, masks, fill=0.25)
    inside = (first + second > 0).expand(3, -1, -1)[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(out[inside], frames[inside])
    assert torch.all(out[~inside] == 0.25)
    # One object given as [F, H, W] is the same as a stack of one.
    assert torch.equal(object_frames(frames, masks[0]), object_frames(frames, masks[:1]))
