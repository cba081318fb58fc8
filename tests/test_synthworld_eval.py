"""SynthWorld evaluation: region scores, the silhouette estimator, and `python -m train.synthworld_eval`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aa2.errors import AA2InputError
from train.metrics import (character_band, environment_region, estimate_silhouette, mask_iou, outline_agreement, psnr,
                           region_psnr, scaled_radius)

METRICS = ("psnr", "ssim", "lpips", "psnr_environment", "psnr_character", "psnr_band", "silhouette_iou")


def test_region_psnr_counts_only_the_region_and_is_inf_for_an_exact_region():
    target = torch.zeros(2, 3, 8, 8)
    generated = target.clone()
    generated[:, :, :, 4:] = 0.1  # wrong on the right half only
    left = torch.zeros(2, 8, 8, dtype=torch.bool)
    left[:, :, :4] = True
    assert torch.isinf(region_psnr(generated, target, left)).all()  # exact where it is scored
    # right half: every value off by 0.1 -> MSE 0.01 -> 20 dB, whatever the left half holds
    assert torch.allclose(region_psnr(generated, target, ~left), torch.full((2,), 20.0, dtype=torch.float64))
    # the whole region is the whole frame: equal to the frame's PSNR
    everything = torch.ones(2, 8, 8, dtype=torch.bool)
    assert torch.allclose(region_psnr(generated, target, everything), psnr(generated, target))


def test_region_psnr_is_nan_for_an_empty_region():
    frames = torch.rand(1, 3, 8, 8)
    assert torch.isnan(region_psnr(frames, frames * 0.5, torch.zeros(1, 8, 8))).all()


def test_mask_iou_is_one_for_a_match_zero_for_disjoint_and_nan_when_both_are_empty():
    a = torch.zeros(4, 6, 6, dtype=torch.bool)
    b = torch.zeros(4, 6, 6, dtype=torch.bool)
    a[0, :3], b[0, :3] = True, True  # identical
    a[1, :3], b[1, 3:] = True, True  # disjoint
    a[2, :, :2], b[2, :, :4] = True, True  # a inside b, half its size
    iou = mask_iou(a, b)
    assert iou[0] == 1.0 and iou[1] == 0.0 and iou[2] == pytest.approx(0.5)
    assert math.isnan(iou[3])  # nothing in either


def test_outline_agreement_says_whose_outline_was_drawn_where_the_two_differ():
    driving = torch.zeros(4, 8, 8, dtype=torch.bool)
    driving[:, 2:6, 2:4] = True  # A: a thin figure
    target = torch.zeros(4, 8, 8, dtype=torch.bool)
    target[:, 2:6, 2:6] = True  # B: the same figure twice as wide
    target[3] = driving[3]  # frame 3: the two outlines agree
    drawn = torch.stack([driving[0], target[1], torch.zeros(8, 8, dtype=torch.bool), driving[3]])
    agreement = outline_agreement(drawn, driving, target)
    assert agreement[0] == 1.0  # A's outline exactly: full leakage
    assert agreement[1] == 0.0  # B's own outline
    assert agreement[2] == 1.0  # nothing drawn sides with A where B alone has a figure
    assert math.isnan(agreement[3])  # nothing disputed
    with pytest.raises(AA2InputError, match="three masks of one shape"):
        outline_agreement(drawn[:, :4], driving, target)


def test_band_straddles_the_outline_and_environment_keeps_away_from_it():
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, 10:22, 10:22] = True
    band = character_band(mask, outer=4, inner=2)[0]
    assert band[10, 16] and band[11, 16] and band[9, 16] and band[6, 16]  # on, just inside, just outside, 4 px out
    assert not band[12, 16] and not band[16, 16]  # deep inside
    assert not band[5, 16]  # beyond 4 px
    environment = environment_region(mask, 4)[0]
    assert environment[5, 16] and not environment[6, 16] and not environment[16, 16]
    assert scaled_radius(4, (64, 64)) == 4 and scaled_radius(4, (128, 256)) == 8 and scaled_radius(2, (16, 16)) == 1


def test_silhouette_recovers_a_figure_drawn_on_a_known_background():
    generator = torch.Generator().manual_seed(0)
    background = torch.rand(3, 32, 32, generator=generator) * 0.4 + 0.3  # textured, mid tones
    figure = torch.zeros(32, 32, dtype=torch.bool)
    figure[8:24, 12:20] = True  # torso
    figure[10, 4:12] = True  # a one-pixel arm, thinner than the 3x3 opening
    frame = background.clone()
    frame[:, figure] = torch.tensor([0.95, 0.05, 0.05]).unsqueeze(1)  # far from any background colour
    noisy = frame + (torch.rand(3, 32, 32, generator=generator) - 0.5) * 0.1  # below the 0.12 threshold
    noisy[:, 28, 28] = 1.0  # one speckle pixel far above it
    found = estimate_silhouette(noisy[None], background)[0]
    assert torch.equal(found, figure)  # the arm kept (reconstruction), the speckle dropped (opening)
    box = torch.zeros(1, 32, 32, dtype=torch.bool)
    box[0, 20:24, 12:20] = True
    excluded = estimate_silhouette(noisy[None], background, exclude=box)[0]
    assert torch.equal(excluded, figure & ~box[0])
    assert not estimate_silhouette(background[None], background).any()  # the clean scene shows nobody


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    from train.synthworld import main

    root = tmp_path_factory.mktemp("heldout")
    assert main([str(root), "--videos", "2", "--frames", "4", "--size", "64", "--split", "heldout",
                 "--cross-identity"]) == 0
    return root


def _run(tiny_weights, heldout, out, *extra):
    from train.synthworld_eval import main

    checkpoint = tiny_weights / "animateanyone2" / "aa2-tiny.safetensors"
    code = main(["--checkpoint", str(checkpoint), "--data", str(heldout), "--out", str(out), "--steps", "1",
                 "--device", "cpu", *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def test_eval_writes_finite_scores_for_every_metric_and_clip(tiny_weights, heldout, tmp_path, capsys):
    result = _run(tiny_weights, heldout, tmp_path / "eval", "--cross-identity")
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("synthworld_eval: 2 clips") and "silhouette_iou" in line[0]
    settings = result["settings"]
    assert {k: settings[k] for k in ("steps", "cfg", "seed", "formulation", "cross_identity", "composite")} == {
        "steps": 1, "cfg": 2.5, "seed": 0, "formulation": "agnostic", "cross_identity": True, "composite": False}
    assert settings["checkpoint"].endswith("aa2-tiny.safetensors")
    assert len(result["clips"]) == 2 and {c["motion"] for c in result["clips"]} == set(result["by_motion"])
    for scores in [result["mean"], result["vae_ceiling"]] + [c[k] for c in result["clips"] for k in ("scores", "vae_ceiling")]:
        assert set(scores) == set(METRICS)
        assert scores["lpips"] is None  # no weights given
        for name in METRICS[:2] + METRICS[3:]:
            assert isinstance(scores[name], float) and math.isfinite(scores[name]), (name, scores[name])
        assert 0.0 <= scores["silhouette_iou"] <= 1.0
    assert "lpips" in result["skipped"]
    # the estimator on the true frames: B's silhouette is found against the clean background
    assert result["estimator_on_truth"]["silhouette_iou"] > 0.6
    # shape leakage: whose outline the render drew where A's and B's differ; B's true frames
    # through the VAE side with B (agreement near 0), and the two true outlines differ
    for outline in [result["outline"]] + [c["outline"] for c in result["clips"]]:
        assert set(outline) == {"outline_agreement", "silhouette_iou_driving", "ceiling_outline_agreement",
                                "driving_ceiling_outline_agreement", "leakage", "driving_target_iou"}
        assert all(0.0 <= value <= 1.0 for name, value in outline.items() if name != "leakage"), outline
    assert result["outline"]["driving_target_iou"] < 0.95


def test_a_runs_leakage_sits_between_the_mean_ends_of_the_scale():
    from train.synthworld_eval import _outline_mean

    def clip(render, low, high):
        return {"outline": {"outline_agreement": render, "ceiling_outline_agreement": low,
                            "driving_ceiling_outline_agreement": high, "leakage": None}}

    # clip ratios 0.5 and 0.0 (their mean 0.25); between the mean ends (0.35, 0.65) the mean 0.45 sits at 1/3
    assert _outline_mean([clip(0.5, 0.3, 0.7), clip(0.4, 0.4, 0.6)])["leakage"] == pytest.approx(1 / 3)
    assert _outline_mean([clip(0.5, 0.6, 0.6)])["leakage"] is None  # the ends do not part


def test_outline_scores_tell_a_render_of_the_driving_figure_from_one_of_the_target(heldout):
    """On true frames: A's own frames (what full leakage would draw) side with A, B's with B."""
    import dataclasses

    from train.synthworld_eval import clip_extras, open_heldout, outline_scores

    clips = open_heldout(heldout, None, None)
    _, truth_b, _ = clip_extras(clips, 0, cross_identity=True)
    truth_b = dataclasses.replace(truth_b, scene=truth_b.background)
    sample_a = clips[0]
    a_mask = sample_a["character_mask"] > 0.5
    as_a = outline_scores(sample_a["frames"], truth_b.frames, sample_a["frames"], truth_b, a_mask)
    assert as_a["outline_agreement"] > 0.8 and as_a["silhouette_iou_driving"] > 0.8
    assert as_a["ceiling_outline_agreement"] < 0.2  # B's true frames follow B
    assert as_a["leakage"] == pytest.approx(1.0)  # the render is A's frames: the driving end of the scale
    as_b = outline_scores(truth_b.frames, truth_b.frames, sample_a["frames"], truth_b, a_mask)
    assert as_b["outline_agreement"] < 0.2 and as_b["leakage"] == pytest.approx(0.0)
    assert as_b["silhouette_iou_driving"] < as_a["silhouette_iou_driving"]
    halfway = torch.where(torch.arange(truth_b.frames.shape[-1]) < truth_b.frames.shape[-1] // 2,
                          sample_a["frames"], truth_b.frames)  # left half A's frame, right half B's
    assert 0.1 < outline_scores(halfway, truth_b.frames, sample_a["frames"], truth_b, a_mask)["leakage"] < 0.9


def test_outline_scores_are_only_written_for_cross_identity(tiny_weights, heldout, tmp_path):
    result = _run(tiny_weights, heldout, tmp_path / "own")
    assert "outline" not in result and all("outline" not in c for c in result["clips"])


def test_scores_record_the_annotations_the_weights_could_not_take(tiny_weights, heldout, tmp_path, capsys):
    """Moore-converted weights have no depth branch: every clip's depth is left out, and metrics.json
    says so beside the scores (before, only the log did); full weights leave nothing out."""
    from aa2.cli import main as cli

    moore = tmp_path / "moore.safetensors"
    assert cli(["convert", str(tiny_weights / "animateanyone2" / "aa2-tiny-moore"), str(moore),
                "--vae", str(tiny_weights / "vae" / "aa2-tiny-vae.safetensors"),
                "--image-encoder", str(tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors")]) == 0
    capsys.readouterr()
    from train.synthworld_eval import main

    assert main(["--checkpoint", str(moore), "--data", str(heldout), "--out", str(tmp_path / "moore-scores"),
                 "--steps", "1", "--device", "cpu", "--limit", "1"]) == 0
    dropped = json.loads((tmp_path / "moore-scores" / "metrics.json").read_text())["dropped"]
    assert dropped["clips"]["depth"] == 1 and dropped["why"].startswith("left out")
    assert "note: left out" in capsys.readouterr().err
    assert _run(tiny_weights, heldout, tmp_path / "full", "--limit", "1")["dropped"] == {}


def test_composite_keeps_the_driving_frame_outside_the_mask(tiny_weights, heldout, tmp_path):
    result = _run(tiny_weights, heldout, tmp_path / "composite", "--composite", "--environment-mask", "precise",
                  "--limit", "1")
    # a checkpoint with environment input keeps it; only an AA1-style one samples with it off
    assert result["settings"]["model"]["use_environment"] is True
    assert result["settings"]["composite"] and result["settings"]["sampling"]["environment"] != "off"
    # outside the (dilated) true mask every pixel is the driving frame's, so the environment is exact
    assert result["mean"]["psnr_environment"] == "inf"
    assert math.isfinite(result["mean"]["psnr_character"])


def test_render_takes_a_reference_and_an_environment_formulation(tiny_model, heldout):
    from aa2.conditioning.masks import shape_agnostic_mask
    from train.render import animation_inputs
    from train.synthworld_eval import clip_extras, open_heldout

    clips = open_heldout(heldout, None, None)
    sample = clips[0]
    default = animation_inputs(tiny_model, sample).inputs
    assert torch.equal(default.reference, sample["frames"][0])  # train.evaluate's protocol, unchanged
    assert torch.equal(default.mask, shape_agnostic_mask(sample["character_mask"]))
    reference, truth, _ = clip_extras(clips, 0, cross_identity=True)
    precise = animation_inputs(tiny_model, sample, reference=reference, formulation="precise").inputs
    assert torch.equal(precise.reference, reference) and not torch.equal(reference, sample["frames"][0])
    assert torch.equal(precise.mask.bool(), sample["character_mask"].bool())
    assert not torch.equal(truth.frames, sample["frames"])  # B's frames are the ground truth
    # a model trained on portrait references gets B as a portrait (the crop itself: tests/test_augment.py)
    framed, _, _ = clip_extras(clips, 0, cross_identity=True, framing="character")
    assert framed.shape == reference.shape and float((framed - reference).abs().mean()) > 0.05
    from train.synthworld_eval import evaluate
    with pytest.raises(AA2InputError, match="--reference-framing is one of frame, character"):
        evaluate("never-loaded.safetensors", heldout, "never-written", framing="portrait")


def test_silhouette_is_taken_against_the_scene_the_vae_shows_when_given():
    from aa2.metrics import Truth, score_clip

    generator = torch.Generator().manual_seed(0)
    background = torch.rand(3, 32, 32, generator=generator)  # a texture a small VAE cannot keep
    scene = background.mean(dim=(1, 2), keepdim=True).expand(3, 32, 32).clone()  # what it keeps: the mean
    character = torch.zeros(2, 32, 32, dtype=torch.bool)
    character[:, 8:24, 12:20] = True
    render = torch.where(character[:, None], torch.tensor([1.0, 0.0, 0.0])[:, None, None], scene)
    truth = Truth(render, character, torch.zeros_like(character), background)
    against_background = score_clip(render, truth)["silhouette_iou"]
    against_scene = score_clip(render, Truth(render, character, torch.zeros_like(character), background, scene))
    assert against_scene["silhouette_iou"] == pytest.approx(1.0)
    assert against_background < 0.5  # the lost texture reads as "character" everywhere
