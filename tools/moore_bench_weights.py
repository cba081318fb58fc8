"""Random weights in Moore-AnimateAnyone's four-file layout, for `tools.moore_bench` (written once, reused).

    python -m tools.moore_bench_weights FOLDER [--preset sd15] [--device cuda]

`sd15`: SD1.5 + AnimateDiff v2 + CLIP ViT-L/14 shapes (about 10 GB in fp32, as Moore's released files
are): `denoising_unet.pth` (noise-only `conv_in`, Animate Anyone 1), `reference_unet.pth`,
`pose_guider.pth`, `motion_module.pth`, beside a VAE (`vae.safetensors`, LDM keys) and a CLIP vision
file (`clip_vision.safetensors`). A `complete-initialised` file (`MARKER`), written last, marks a whole folder.

The values are each module's own initialisation (`aa2.weights.tiny.random_parts(perturb=False)`), with
the pose guider's zero-initialised output made random so the pose counts. Not the tests' perturbed
weights: their noise of 0.05 on every weight grows activations ~1.8x per SD1.5-wide layer, and fp16
overflows (our pipeline then stops with "sampling diverged"; Moore's computes NaNs at full cost).
`--device cuda` builds the modules on the GPU, where that initialisation takes
seconds instead of a minute on a few CPU cores; the values then differ from a CPU-made folder's (another
random generator), which a cost benchmark does not mind. Runs in its own process when `tools.moore_bench`
asks, so the ~11 GB it holds are given back before any side is measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

MOORE_FILES = ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "motion_module.pth")
VAE_FILE, CLIP_FILE = "vae.safetensors", "clip_vision.safetensors"
# Written last, so a folder that has it is whole. Renamed when the values changed (from the perturbed
# weights, which overflow fp16) so that an older folder is written again rather than reused.
MARKER = "complete-initialised"


def tiny_folder(root: Path) -> tuple[Path, Path, Path]:
    """`(moore folder, vae file, clip vision file)` of the tiny preset under `root`, written if absent:
    the Moore folder `make_tiny_weights` writes, with its VAE and CLIP vision files."""
    base = root / "tiny"
    folder = base / "animateanyone2" / "aa2-tiny-moore"
    if not (folder / MOORE_FILES[0]).is_file():
        from aa2.weights.tiny import make_tiny_weights

        make_tiny_weights(base)
    return folder, base / "vae" / "aa2-tiny-vae.safetensors", base / "clip_vision" / "aa2-tiny-clip-vision.safetensors"


def write_random_moore_folder(folder: Path, preset: str, seed: int = 0, device: str = "cpu") -> float:
    """Write `preset`'s random weights into `folder` (module docstring); return the seconds it took.

    Written from `random_parts` state dicts directly (no model is assembled), so the SD1.5 shapes fit
    in about 11 GB of memory (on `device` while they are made, on the CPU while they are saved).
    """
    from aa2.config import sd15, tiny
    from aa2.models.pose_modulation import PoseGuider
    from aa2.weights.animatediff import motion_module_to_original
    from aa2.weights.clip_vision import write_clip_vision_file
    from aa2.weights.ldm import write_vae_file
    from aa2.weights.tiny import random_parts

    def on_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    config = (sd15() if preset == "sd15" else tiny()).replace(fusion="full", use_environment=False,
                                                                use_object_guider=False)
    start = time.perf_counter()
    with torch.device(device):  # modules made and initialised there
        parts = random_parts(config, seed, perturb=False)
        torch.manual_seed(seed + 2)
        guider = PoseGuider(config.pose.conditioning_channels, config.pose.block_out_channels,
                            config.unet.block_out_channels[0])
        with torch.no_grad():
            for parameter in guider.parameters():  # its conv_out starts at zero; random, so the pose counts
                if not parameter.any():
                    parameter.normal_(0, 0.01)
    made_s = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    denoising = on_cpu(parts.denoising_unet)
    denoising["conv_in.weight"] = denoising["conv_in.weight"][:, :4].contiguous()  # Animate Anyone 1: noise only
    torch.save(denoising, folder / MOORE_FILES[0])
    del denoising, parts.denoising_unet
    reference = on_cpu({k: v for k, v in parts.reference_unet.items()
                        if not k.startswith(("conv_norm_out.", "conv_out."))})
    torch.save(reference, folder / MOORE_FILES[1])
    del reference, parts.reference_unet
    torch.save(on_cpu(guider.state_dict()), folder / MOORE_FILES[2])
    motion = {k: v.clone() for k, v in on_cpu(motion_module_to_original(parts.motion)).items()}  # own storages
    torch.save(motion, folder / MOORE_FILES[3])
    write_vae_file(folder / VAE_FILE, on_cpu(parts.vae))
    write_clip_vision_file(folder / CLIP_FILE, on_cpu(parts.image_encoder))
    total_s = time.perf_counter() - start
    (folder / MARKER).write_text(f"random {preset} weights (modules' own initialisation), seed {seed}, "
                                   f"made on {device}\n")
    print(f"random {preset} weights: made on {device} in {made_s:.1f} s, written in {total_s - made_s:.1f} s "
          f"({sum(f.stat().st_size for f in folder.iterdir()) / 1e9:.2f} GB)", file=sys.stderr, flush=True)
    return total_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.moore_bench_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--preset", default="sd15", choices=["sd15", "tiny"])
    parser.add_argument("--device", default="cpu", help="where the random modules are made (cuda: seconds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.folder / MARKER).is_file():
        print(f"{args.folder}: complete, reused", file=sys.stderr)
        return 0
    write_random_moore_folder(args.folder, args.preset, args.seed, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
