"""Compare the sampler's saved frames with core VAE Decode's; exit 1 if any pixel differs by more
than one 8-bit step (the two decodes round independently to PNG)."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

run = Path(sys.argv[1])
ours = sorted(run.rglob("aa2_sampler_frames_*.png"))
host = sorted(run.rglob("core_vae_decode_*.png"))
if not ours or len(ours) != len(host):
    sys.exit(f"expected the same number of frames from both paths, got {len(ours)} and {len(host)}")
worst = 0
for a, b in zip(ours, host):
    difference = np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int))
    worst = max(worst, int(difference.max()))
    print(f"{a.name} vs {b.name}: max {difference.max()}/255, mean {difference.mean():.2e}")
print(f"{len(ours)} frames, largest difference {worst}/255")
sys.exit(0 if worst <= 1 else 1)
