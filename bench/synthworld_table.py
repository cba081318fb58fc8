"""Print SynthWorld score tables (markdown) from the `metrics.json` files `bench/synthworld.sh` writes.

    python bench/synthworld_table.py runs/synthworld [runs/sw-aa1 runs/sw-precise ...]

One row per `RUN/scores/<name>/metrics.json`, labelled `RUN:name`, with the settings that made it, the
render's scores and, in the last row of each run, the VAE ceiling (the ground truth through the same
checkpoint's VAE: no render can beat it on PSNR).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("psnr", "ssim", "psnr_environment", "psnr_character", "psnr_band", "silhouette_iou")
# cross-identity rows only: whose outline the render drew where A's and B's differ (1 = A's: leakage)
OUTLINE = ("outline_agreement", "silhouette_iou_driving")


def rows(run: Path) -> list[tuple[str, dict, dict]]:
    found = []
    for path in sorted((run / "scores").glob("*/metrics.json")):
        data = json.loads(path.read_text())
        found.append((f"{run.name}:{path.parent.name}", data["settings"], data))
    return found


def cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.3f}" if abs(value) < 2 else f"{value:.2f}"


def table(runs: list[Path]) -> str:
    head = "| row | mask | cross | composite | " + " | ".join(COLUMNS + OUTLINE) + " |"
    lines = [head, "|" + " --- |" * (4 + len(COLUMNS) + len(OUTLINE))]
    ceiling = None
    for run in runs:
        for label, settings, data in rows(run):
            lines.append(f"| {label} | {settings.get('formulation')} | {settings.get('cross_identity')} | "
                         f"{settings.get('composite')} | " + " | ".join(cell(data["mean"].get(c)) for c in COLUMNS) + " | "
                         + " | ".join(cell(data.get("outline", {}).get(c)) for c in OUTLINE) + " |")
            ceiling = ceiling or data.get("vae_ceiling")
    if ceiling:
        lines.append("| VAE ceiling | | | | " + " | ".join(cell(ceiling.get(c)) for c in COLUMNS) + " |"
                     + " |" * len(OUTLINE))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    runs = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not runs:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
