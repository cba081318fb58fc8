"""Record Moore-AnimateAnyone's whole `Pose2VideoPipeline` as a golden fixture (a maintainer tool; CI never runs it).

`tools/moore_golden.py` proves one DenoisingNet call; this proves the animation a user gets: reference
image and pose frames in, decoded frames out, through CLIP, the VAE, guidance and every DDIM step.
`tests/test_moore_pipeline_parity.py` runs our `animate` (what `python -m aa2 animate` and the nodes
call) on the same inputs and compares the frames.

Run it from the repository root with a checkout of Moore-AnimateAnyone (commit a914ef3 was used):

    git clone https://github.com/MooreThreads/Moore-AnimateAnyone /path/to/Moore-AnimateAnyone
    OMP_NUM_THREADS=1 .ci-venv/bin/python -m tools.moore_golden_pipeline /path/to/Moore-AnimateAnyone \
        [--out tests/fixtures/moore_pipeline_golden]

What it does:

1. Weights. The four Moore files are `tools/moore_golden.py`'s (its manifest, its integer-made values),
   so this golden rests on the per-call one. The VAE and the CLIP vision tower are the tiny shapes
   (`aa2.config.tiny()`), filled the same way from their own key manifest, stored here; the test writes
   them in the formats users download (an LDM VAE file, a ComfyUI clip_vision file).
2. Inputs, made from integers so every machine rebuilds them exactly (`pipeline_inputs`): uint8
   reference and pose images, and initial latents `k / 64`. Moore's pipeline draws its own noise, so
   `prepare_latents` is given ours (their method's own `latents=` argument; nothing else changes).
3. Runs (`CASES`): a square (128x128) and a portrait (128x64, H x W) reference at 1 and 4 DDIM steps, cfg
   3.5, 4 frames, through `src/pipelines/pipeline_pose2vid_long.py`, the pipeline Moore's
   `scripts/pose2vid.py` and `app.py` sample with; and the portrait once more through
   `pipeline_pose2vid.py` (their training-time validation), whose CLIP input is `CLIPImageProcessor`'s
   own centre crop. Scheduler: `DDIMScheduler(**noise_scheduler_kwargs)` of `inference_v2.yaml`.
   In float64 (float32 weights and inputs, upcast exactly), so the golden carries no float32 rounding.
4. Stores the first and last decoded frames `[2, H, W, 3]` as uint16 `round(x * 65535)` (they are
   clamped to 0..1; quantisation error <= 7.7e-6) and all frames' final latents as float32: 0.7 MB.

Three adaptations, each local to this process and named in the fixture's manifest:
* `tools.moore_golden._alias_moved_names`: diffusers 0.24 names that have moved (aliases only).
* Moore's reader copies the ReferenceNet bank to float16 (`update(writer, dtype=torch.float16)`, the
  default the pipeline uses) even in a float32 run. That is their rounding, not the method's: the
  golden keeps the bank in the run's dtype, and the tool measures what the cast does (stored as
  `fp16_bank_effect` in the manifest; the test's docstring states it).
* `pipeline_pose2vid_long.py` hard-codes CLIP ViT-L's input size, `ref_image.resize((224, 224))`; the
  tiny CLIP takes 32x32. The reference image is handed in as a PIL image whose `resize` turns exactly
  that size into the tiny CLIP's: the same whole-image squash, at the size the encoder takes. The
  pipelines' `CLIPImageProcessor()` is likewise sized to 32, and is transformers' PIL implementation
  (Moore ran transformers 4.30, before the torchvision one existed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange

from tools.moore_golden import (
    StateDict, _import_moore, _moore_commit, build_moore_models, golden_weights,
    weights_digest,
)

VAE_CLIP_FILES = ("vae", "image_encoder")
VAE_CLIP_SEED = 20240530
INPUT_SEED = 11
FRAMES = 4
CFG = 3.5
MOORE_GOLDEN = Path("tests/fixtures/moore_golden")


@dataclass(frozen=True)
class Case:
    reference: str  # "square" | "portrait": which input set
    steps: int
    pipeline: str  # "long" (scripts/pose2vid.py, app.py) | "short" (training-time validation)

    @property
    def clip_crop(self) -> str:
        """Our name for how this pipeline shows the reference to CLIP (aa2.models.image_encoder)."""
        return "squash" if self.pipeline == "long" else "center"


# (H, W); aa2 takes multiples of 64. Not a 64x64 square: there the tiny UNet's deepest level is 1x1, a norm
# group holds two values per frame, and with guidance their variance falls near GroupNorm's eps at some step:
# Moore's own float64 run then moves by 7e-5 when its initial latents move by 1e-9, and by 0.54 between its
# float32 and float64 runs (4 steps). At 128 the deepest level is 2x2 and the run is stable (a 1e-6 nudge: 1e-5).
SIZES = {"square": (128, 128), "portrait": (128, 64)}
# Decoded frames stored: the first and the last. The VAE decodes frame by frame, so two frames show it as well
# as four, and all four frames' final latents are stored besides; four frames of both sizes would pass 1 MB.
STORED_FRAMES = (0, 3)
CASES = {
    "square_1": Case("square", 1, "long"),
    "square_4": Case("square", 4, "long"),
    "portrait_1": Case("portrait", 1, "long"),
    "portrait_4": Case("portrait", 4, "long"),
    "portrait_center_4": Case("portrait", 4, "short"),
}


# ------------------------------------------------------------------ weights and inputs (also used by the test)


def vae_clip_manifest() -> dict[str, dict[str, list[int]]]:
    """Key names and shapes of the tiny VAE (diffusers names) and CLIP vision tower (transformers names)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from aa2.config import tiny

    config = tiny()
    vae = AutoencoderKL(**config.vae.diffusers_config())
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder.transformers_config()))
    return {name: {k: list(v.shape) for k, v in sorted(module.state_dict().items())}
            for name, module in (("vae", vae), ("image_encoder", encoder))}


def vae_clip_weights(manifest: dict[str, dict[str, list[int]]], seed: int = VAE_CLIP_SEED) -> dict[str, StateDict]:
    return golden_weights(manifest, seed, files=VAE_CLIP_FILES)


def pipeline_inputs(seed: int = INPUT_SEED) -> dict[str, dict[str, torch.Tensor]]:
    """Per reference shape: `reference [3, H, W]` and `pose [F, 3, H, W]` uint8, `latents [1, 4, F, H/8, W/8]`.

    Integers only (`torch.randint`, the Mersenne Twister), so every machine makes the same values.
    Latents are `k / 64`, k in [-128, 128): exact floats of variance ~1.3, close enough to unit noise.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for name, (height, width) in SIZES.items():
        inputs[name] = {
            "reference": torch.randint(0, 256, (3, height, width), generator=generator).to(torch.uint8),
            "pose": torch.randint(0, 256, (FRAMES, 3, height, width), generator=generator).to(torch.uint8),
            "latents": torch.randint(-128, 128, (1, 4, FRAMES, height // 8, width // 8), generator=generator)
            .to(torch.float32) / 64,
        }
    return inputs


def inputs_digest(inputs: dict[str, dict[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(inputs):
        for key in sorted(inputs[name]):
            tensor = inputs[name][key].contiguous()
            digest.update(f"{name}:{key}:{list(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def quantise_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames in 0..1 -> uint16 steps of 1/65535 (half the bytes of float32, error <= 7.7e-6)."""
    return frames.double().clamp(0, 1).mul(65535).round().to(torch.int32).to(torch.uint16)


def dequantise_frames(stored: torch.Tensor) -> torch.Tensor:
    return stored.to(torch.int32).double() / 65535


# ------------------------------------------------------------------ Moore's side


def _pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(rearrange(image, "c h w -> h w c").numpy())


def _clip_sized(image, clip_size: int):
    """`image`, whose `resize((224, 224))` (pipeline_pose2vid_long's hard-coded ViT-L size) makes `clip_size`."""
    from PIL import Image

    class ClipSized(Image.Image):
        def resize(self, size, *args, **kwargs):
            if tuple(size) == (224, 224):
                size = (clip_size, clip_size)
            return super().resize(size, *args, **kwargs)

    sized = image.copy()
    sized.__class__ = ClipSized
    return sized


def _pipeline_class(moore_pipeline_module, latents: torch.Tensor):
    """Moore's `Pose2VideoPipeline`, starting from `latents` instead of its own draw."""

    class FixedLatents(moore_pipeline_module.Pose2VideoPipeline):
        def prepare_latents(self, *args, **kwargs):
            return super().prepare_latents(*args, **{**kwargs, "latents": latents})

    return FixedLatents


def _bank_in_run_dtype(control):
    class BankInRunDtype(control):
        def update(self, writer, dtype=None):
            super().update(writer, dtype=dtype or next(writer.unet.parameters()).dtype)

    return BankInRunDtype


def build_vae_and_clip(weights: dict[str, StateDict]):
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from aa2.config import tiny

    config = tiny()
    vae = AutoencoderKL(**config.vae.diffusers_config())
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder.transformers_config()))
    vae.load_state_dict(weights["vae"], strict=True)
    encoder.load_state_dict(weights["image_encoder"], strict=True)
    return vae.eval(), encoder.eval()


def clip_processor(size: int):
    """transformers' PIL CLIPImageProcessor (what Moore ran), sized for the tiny CLIP."""
    try:
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:  # transformers 4: the PIL one is the only one
        from transformers import CLIPImageProcessor as processor_class
    return processor_class(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def run_moore(checkout: Path, models: dict, case: Case, inputs: dict[str, torch.Tensor], fp16_bank: bool = False):
    """Moore's pipeline on one case: frames `[F, H, W, 3]` in 0..1 and the final latents (float64)."""
    import importlib

    import yaml
    from diffusers import DDIMScheduler

    module = importlib.import_module("src.pipelines.pipeline_pose2vid_long" if case.pipeline == "long"
                                     else "src.pipelines.pipeline_pose2vid")
    inference = yaml.safe_load((checkout / "configs" / "inference" / "inference_v2.yaml").read_text())
    height, width = SIZES[case.reference]
    clip_size = models["image_encoder"].config.image_size
    original_control = module.ReferenceAttentionControl
    if not fp16_bank:
        module.ReferenceAttentionControl = _bank_in_run_dtype(original_control)
    final = {}
    try:
        pipe = _pipeline_class(module, inputs["latents"].to(models["vae"].dtype))(
            vae=models["vae"], image_encoder=models["image_encoder"], reference_unet=models["reference_unet"],
            denoising_unet=models["denoising_unet"], pose_guider=models["pose_guider"],
            scheduler=DDIMScheduler(**inference["noise_scheduler_kwargs"]),
        )
        pipe.set_progress_bar_config(disable=True)
        pipe.clip_image_processor = clip_processor(clip_size)
        reference = _pil(inputs["reference"])
        if case.pipeline == "long":
            reference = _clip_sized(reference, clip_size)
        decode = pipe.decode_latents

        def keep_latents(latents):  # the frames' latents, for diagnosing a difference before the VAE
            final["latents"] = latents.clone()
            return decode(latents)

        pipe.decode_latents = keep_latents
        video = pipe(reference, [_pil(p) for p in inputs["pose"]], width, height, FRAMES, case.steps, CFG,
                     output_type="tensor").videos
    finally:
        module.ReferenceAttentionControl = original_control
    return rearrange(video[0], "c f h w -> f h w c"), final["latents"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("moore", type=Path, help="path to a Moore-AnimateAnyone checkout")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/moore_pipeline_golden"))
    args = parser.parse_args(argv)

    import diffusers
    import transformers
    from safetensors.torch import save_file

    checkout = args.moore.resolve()
    moore = _import_moore(checkout)
    per_call = json.loads((MOORE_GOLDEN / "manifest.json").read_text())
    weights = golden_weights(per_call["files"], per_call["about"]["weight_seed"])
    if weights_digest(weights) != per_call["about"]["weights_sha256"]:
        sys.exit("the Moore weights differ from tests/fixtures/moore_golden's: re-record that one first")
    reference_unet, denoising_unet, pose_guider = build_moore_models(moore, checkout, weights)
    manifest = vae_clip_manifest()
    extra = vae_clip_weights(manifest)
    vae, image_encoder = build_vae_and_clip(extra)
    models = {name: model.double() for name, model in (
        ("reference_unet", reference_unet), ("denoising_unet", denoising_unet), ("pose_guider", pose_guider),
        ("vae", vae), ("image_encoder", image_encoder))}
    inputs = pipeline_inputs()

    tensors, saturated, bank_effect = {}, {}, {}
    for name, case in CASES.items():
        frames, latents = run_moore(checkout, models, case, inputs[case.reference])
        tensors[f"{name}.frames"] = quantise_frames(frames[list(STORED_FRAMES)]).contiguous()
        tensors[f"{name}.latents"] = latents.float().contiguous()
        saturated[name] = round(float(((frames <= 0) | (frames >= 1)).double().mean()), 4)
        if case.steps == 4 and case.pipeline == "long":  # what Moore's float16 bank alone changes
            rounded, _ = run_moore(checkout, models, case, inputs[case.reference], fp16_bank=True)
            bank_effect[name] = float((rounded - frames).abs().max())
        print(f"{name}: frames mean {frames.mean():.4f}, saturated {saturated[name]:.1%}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, args.out / "golden.safetensors")
    about = {
        "what": "Moore-AnimateAnyone's Pose2VideoPipeline end to end on tiny weights; see tools/moore_golden_pipeline.py",
        "moore_commit": _moore_commit(checkout),
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "diffusers_aliases": moore[4],
        "clip_processor": type(clip_processor(32)).__name__,
        "moore_weights_sha256": per_call["about"]["weights_sha256"],
        "vae_clip_seed": VAE_CLIP_SEED,
        "vae_clip_sha256": weights_digest(extra, files=VAE_CLIP_FILES),
        "input_seed": INPUT_SEED,
        "inputs_sha256": inputs_digest(inputs),
        "frames": FRAMES,
        "stored_frames": list(STORED_FRAMES),
        "cfg": CFG,
        "cases": {name: {"reference": c.reference, "size": SIZES[c.reference], "steps": c.steps,
                         "pipeline": c.pipeline, "clip_crop": c.clip_crop} for name, c in CASES.items()},
        "dtype": "float64 (float32 weights and inputs, upcast); frames stored as uint16 / 65535",
        "saturated_fraction": saturated,
        "fp16_bank_effect": bank_effect,
    }
    (args.out / "manifest.json").write_text(json.dumps({"about": about, "files": manifest}, indent=1) + "\n")
    print(json.dumps(about, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
