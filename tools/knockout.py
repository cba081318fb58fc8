"""What does a trained part contribute? Copy a pack checkpoint with that part's output silenced.

    PYTHONPATH=. python tools/knockout.py [--suffix END] CKPT OUT NAME_PREFIX [NAME_PREFIX ...]

Every tensor whose name starts with one of the prefixes (and ends with END) is set to zero in the copy; everything else,
and the file's metadata, is kept. Score CKPT and OUT on the same clips (`train.synthworld_eval`) and the
difference is what those tensors do in the trained model, without training a model that lacks them
(a trained-without ablation is `bench/synthworld_ablations.sh`). Pick tensors whose zero silences a
residual branch, for example:

    denoising_net.pose_modulation.depth_attention.to_out        # depth-wise pose modulation adds nothing
    --suffix .gate ... denoising_net.spatial_blend.layers.      # every blend gate shut: no spatial blending

Prints each zeroed tensor with its largest magnitude before. Refuses a prefix that names nothing and an
OUT that is CKPT.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file


def knockout(source: Path, out: Path, prefixes: list[str], *, suffix: str = "") -> list[tuple[str, float]]:
    """Write `source` to `out` with the tensors named `prefix...suffix` zeroed; returns (name, largest
    magnitude before) for each zeroed tensor."""
    if out.exists() and out.samefile(source):
        raise SystemExit(f"OUT {out} is the checkpoint itself: give another path, the original is kept")
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    zeroed = []
    for prefix in prefixes:
        names = [name for name in tensors if name.startswith(prefix) and name.endswith(suffix)]
        if not names:
            raise SystemExit(f"no tensor of {source} starts with {prefix!r}{f' and ends with {suffix!r}' if suffix else ''}")
        for name in names:
            zeroed.append((name, float(tensors[name].float().abs().max())))
            tensors[name] = tensors[name].new_zeros(tensors[name].shape)
    save_file(tensors, str(out), metadata=metadata)
    return zeroed


def main(argv: list[str]) -> int:
    suffix = ""
    if argv[:1] == ["--suffix"] and len(argv) > 1:
        suffix, argv = argv[1], argv[2:]
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    for name, before in knockout(Path(argv[0]), Path(argv[1]), argv[2:], suffix=suffix):
        print(f"zeroed {name} (largest magnitude {before:.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
