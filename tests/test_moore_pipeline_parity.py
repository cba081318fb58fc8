"""A whole animation from a Moore-AnimateAnyone folder matches Moore-AnimateAnyone's own `Pose2VideoPipeline`.

`tests/fixtures/moore_pipeline_golden/` holds what Moore's pipeline rendered (commit in `manifest.json`),
recorded by `tools/moore_golden_pipeline.py` in float64: reference image and 4 pose frames in, CLIP,
VAE, cfg 3.5, DDIM under `inference_v2.yaml`'s scheduler, decoded frames out, from fixed initial latents.
Cases: a square (128x128) and a portrait (128x64) reference at 1 and 4 steps through
`pipeline_pose2vid_long.py` (what Moore's scripts/pose2vid.py and app.py run, CLIP squash), and the
portrait through `pipeline_pose2vid.py` (CLIPImageProcessor's centre crop, our `clip_crop="center"`).
Here `animate` — what `python -m aa2 animate` and the sampling nodes call — renders the same inputs
from the same weights, loaded as a user's download is: the four `.pth` files, an LDM VAE file, a
clip_vision file.

Tolerances, all measured at one thread. float32, as users run it: decoded frames within 1e-4 (measured
1.2e-5 to 2.7e-5; 3.2e-5 at two threads), final latents (|max| ~4) within 3e-4 (measured 1.9e-5 to
7e-5; 9.1e-5 at two threads). That is float32 rounding, the same size as Moore's own: its float32 run
differs from its float64 run by 9e-6 (frames) and 4e-5 (latents) on the square at 4 steps. float64:
frames within 1.5e-5 (measured 7.9e-6 to 8.5e-6, almost all the fixture's uint16 quantisation of 7.7e-6),
latents within 1e-5 (measured 2.5e-6 to 6.4e-6 since samplers run through the one registry, 2.4e-6 to
3.7e-6 before: our sampler keeps latents in float32 by design).

What differs, and is left out of the comparison, with its measured size:
* Moore copies the ReferenceNet bank to float16 in every run (`ReferenceAttentionControl.update`'s
  default dtype), float32 included. That is Moore's rounding, not the method: the golden keeps the bank
  in the run's dtype. The cast alone moves Moore's frames by 4.2e-4 (square) and 1.7e-3 (portrait) at
  4 steps (`fp16_bank_effect` in the manifest).
* A reference at another size than the output is resized by Moore with PIL's Lanczos on uint8
  (`VaeImageProcessor`), by us with a float antialiased bilinear (`aa2.pipeline.reference`). The golden's
  references are at the output size, where neither resizes. Measured on a smooth image: 0.018 to 0.026
  max, 0.002 mean on the resized pixels (192 or 96 to 128); the tiny random net magnifies that to 0.13
  to 0.21 in its frames, a real model far less.
* Not a 64x64 square: the tiny UNet's deepest level is then 1x1 and, with guidance, a norm group's
  variance falls near GroupNorm's eps at some step; Moore's own float64 run moves by 7e-5 when its
  initial latents move by 1e-9, and by 0.54 between its float32 and float64 runs. A property of the
  tiny widths, not of either pipeline.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aa2.pipeline.animate import animate
from aa2.pipeline.inputs import AnimationInputs, SamplingSettings
from aa2.weights.clip_vision import write_clip_vision_file
from aa2.weights.ldm import write_vae_file
from aa2.weights.sources import ModelSources, load_model

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "moore_pipeline_golden"
PER_CALL = REPO / "tests" / "fixtures" / "moore_golden"
FLOAT32 = {"frames": 1e-4, "latents": 3e-4}
FLOAT64 = {"frames": 1.5e-5, "latents": 1e-5}


def _tool():
    """tools/moore_golden_pipeline.py, which imports tools/moore_golden.py as `tools.moore_golden`."""
    sys.path.insert(0, str(REPO))  # tools/ is no installed package; the path is restored once it is imported
    try:
        return importlib.import_module("tools.moore_golden_pipeline")
    finally:
        sys.path.remove(str(REPO))


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "golden.safetensors")


@pytest.fixture(scope="module")
def inputs(tool, manifest):
    made = tool.pipeline_inputs(manifest["about"]["input_seed"])
    assert tool.inputs_digest(made) == manifest["about"]["inputs_sha256"], (
        "the rebuilt inputs are not the ones the golden was rendered from: re-record with tools/moore_golden_pipeline.py"
    )
    return made


@pytest.fixture(scope="module")
def model32(tool, manifest, tmp_path_factory):
    """Moore's four files (the per-call golden's weights), a tiny LDM VAE file and clip_vision file."""
    from tools import moore_golden

    per_call = json.loads((PER_CALL / "manifest.json").read_text())
    weights = moore_golden.golden_weights(per_call["files"], per_call["about"]["weight_seed"])
    assert moore_golden.weights_digest(weights) == manifest["about"]["moore_weights_sha256"]
    extra = tool.vae_clip_weights(manifest["files"], manifest["about"]["vae_clip_seed"])
    assert moore_golden.weights_digest(extra, files=tool.VAE_CLIP_FILES) == manifest["about"]["vae_clip_sha256"]
    root = tmp_path_factory.mktemp("moore_pipeline")
    folder = moore_golden.write_folder(root / "moore-tiny", weights)
    vae = write_vae_file(root / "vae.safetensors", extra["vae"])
    clip = write_clip_vision_file(root / "clip_vision.safetensors", extra["image_encoder"])
    return load_model(ModelSources.from_path(folder).replace(vae=vae, image_encoder=clip))


def _render(tool, model, case, inputs):
    x = inputs[case.reference]
    animation = AnimationInputs(reference=x["reference"].float() / 255, pose=x["pose"].float() / 255)
    settings = SamplingSettings(steps=case.steps, cfg=tool.CFG, clip_crop=case.clip_crop)
    return animate(model, animation, settings, latents=x["latents"])


def _differences(tool, result, golden, name) -> tuple[float, float]:
    frames = result.frames[list(tool.STORED_FRAMES)].double()
    theirs = tool.dequantise_frames(golden[f"{name}.frames"])
    assert frames.shape == theirs.shape
    return (float((frames - theirs).abs().max()),
            float((result.latents.double() - golden[f"{name}.latents"].double()).abs().max()))


CASES = _tool().CASES


@pytest.mark.parametrize("name", list(CASES))
def test_animate_renders_moore_pipeline_frames_in_float32(tool, model32, inputs, golden, name):
    frames, latents = _differences(tool, _render(tool, model32, CASES[name], inputs), golden, name)
    assert frames <= FLOAT32["frames"], f"{name}: decoded frames differ by {frames:.2e}"
    assert latents <= FLOAT32["latents"], f"{name}: final latents differ by {latents:.2e}"


@pytest.mark.parametrize("name", ["square_4", "portrait_4"])
def test_float64_difference_is_the_fixture_quantisation(tool, model32, inputs, golden, name):
    model64 = model32.double()
    try:
        frames, latents = _differences(tool, _render(tool, model64, CASES[name], inputs), golden, name)
    finally:
        model32.float()
    assert frames <= FLOAT64["frames"] and latents <= FLOAT64["latents"], (name, frames, latents)


def test_comparison_is_not_vacuous(tool, model32, inputs, golden):
    """One step fewer, or the other CLIP crop, is far outside the tolerance; and the frames are not clamped flat."""
    case = CASES["portrait_center_4"]
    other_crop = _render(tool, model32, type(case)(case.reference, case.steps, "long"), inputs)
    assert _differences(tool, other_crop, golden, "portrait_center_4")[0] > 100 * FLOAT32["frames"]
    fewer = _render(tool, model32, type(case)(case.reference, 3, case.pipeline), inputs)
    assert _differences(tool, fewer, golden, "portrait_center_4")[0] > 100 * FLOAT32["frames"]
    frames = tool.dequantise_frames(golden["portrait_center_4.frames"])
    assert float(((frames > 0) & (frames < 1)).double().mean()) > 0.8
