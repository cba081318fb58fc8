"""Print SynthWorld score tables (markdown) from the `metrics.json` files `bench/synthworld.sh` writes.

    python bench/synthworld_table.py runs/synthworld [runs/sw-aa1 runs/sw-precise ...]
    python bench/synthworld_table.py --paired runs/abl/aa2/scores/trained runs/abl/no_depth/scores/trained ...
    python bench/synthworld_table.py --motions push,carry,sit --paired BASE OTHER ...   # those clips only
    python bench/synthworld_table.py --seeds runs/abl,runs/abl-seed1 --paired aa2/scores/trained aa1/scores/trained

`--paired BASE OTHER...` compares score folders clip by clip (the same held-out clips, the same
noise): for each metric the mean of OTHER - BASE over the clips, a 95 % bootstrap interval of that
mean (clips resampled, 10,000 times, seeded) and how many clips OTHER wins. The interval says
whether a difference stands out of the clip-to-clip spread; it says nothing about another seed's
training. `--seeds ROOT,ROOT...` (one folder of runs per training seed; BASE and OTHER relative to each)
averages each clip's difference over the seeds before the bootstrap, and counts the seeds whose own
mean difference has the sign of the overall one.

One row per `RUN/scores/<name>/metrics.json`, labelled `RUN:name`, with the settings that made it, the
render's scores and, in the last row of each run, the VAE ceiling (the ground truth through the same
checkpoint's VAE: no render can beat it on PSNR).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

COLUMNS = ("psnr", "ssim", "psnr_environment", "psnr_character", "psnr_band", "silhouette_iou")
# cross-identity rows only: whose outline the render drew where A's and B's differ (1 = A's: leakage)
OUTLINE = ("outline_agreement", "leakage", "silhouette_iou_driving")


def rows(run: Path) -> list[tuple[str, dict, dict]]:
    found = []
    for path in sorted((run / "scores").glob("*/metrics.json")):
        data = json.loads(path.read_text())
        found.append((f"{run.name}:{path.parent.name}", data["settings"], data))
    return found


def outline(data: dict) -> dict:
    """A cross-identity run's outline scores, `leakage` placed between the mean ends of its scale
    (as train.synthworld_eval writes it now; files written before took the mean of clip ratios)."""
    found = dict(data.get("outline", {}))
    ends = [found.get(k) for k in ("outline_agreement", "ceiling_outline_agreement", "driving_ceiling_outline_agreement")]
    if None not in ends and ends[2] > ends[1]:
        found["leakage"] = (ends[0] - ends[1]) / (ends[2] - ends[1])
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
                         + " | ".join(cell(outline(data).get(c)) for c in OUTLINE) + " |")
            ceiling = ceiling or data.get("vae_ceiling")
    if ceiling:
        lines.append("| VAE ceiling | | | | " + " | ".join(cell(ceiling.get(c)) for c in COLUMNS) + " |"
                     + " |" * len(OUTLINE))
    return "\n".join(lines)


def per_clip(folder: Path, key: str = "scores", motions: set[str] | None = None) -> dict[str, dict]:
    """Clip name -> that clip's scores (`key`: "scores", or "outline" for cross-identity runs),
    only the clips of `motions` when given."""
    data = json.loads((folder / "metrics.json").read_text())
    return {clip["clip"]: clip.get(key, {}) for clip in data["clips"] if motions is None or clip.get("motion") in motions}


def clip_differences(base: dict[str, dict], other: dict[str, dict], metric: str) -> dict[str, float]:
    """Clip name -> other - base for `metric`, over the clips both score finitely."""
    found = {}
    for clip, scores in base.items():
        a, b = scores.get(metric), other.get(clip, {}).get(metric)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isfinite(a) and math.isfinite(b):
            found[clip] = b - a
    return found


def bootstrap_mean(differences: list[float], *, resamples: int = 10_000,
                   seed: int = 0) -> tuple[float, float, float, int, int] | None:
    """(mean, 2.5 % and 97.5 % bootstrap bounds of the mean, how many are above zero, how many);
    None for an empty list."""
    if not differences:
        return None
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(resamples))
    return (sum(differences) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1],
            sum(d > 0 for d in differences), n)


def paired_difference(base: dict[str, dict], other: dict[str, dict], metric: str, *, resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float, int, int] | None:
    """(mean of other - base, 2.5 % and 97.5 % bootstrap bounds of that mean, clips where other is
    higher, clips compared) over the clips both score finitely; None when none do."""
    return bootstrap_mean(list(clip_differences(base, other, metric).values()), resamples=resamples, seed=seed)


def seed_averaged_difference(pairs: list[tuple[dict[str, dict], dict[str, dict]]],
                             metric: str) -> tuple[tuple[float, float, float, int, int], int, int] | None:
    """Over several training seeds' (base, other) score pairs: each clip's difference averaged over
    the seeds, then bootstrapped over clips as `paired_difference` does; with how many seeds' own mean
    difference has the sign of the overall mean, out of how many. None when a seed scores no clip."""
    per_seed = [clip_differences(base, other, metric) for base, other in pairs]
    if not per_seed or not all(per_seed):
        return None
    shared = sorted(set.intersection(*(set(d) for d in per_seed)))
    averaged = [sum(d[clip] for d in per_seed) / len(per_seed) for clip in shared]
    found = bootstrap_mean(averaged)
    if found is None:
        return None
    seed_means = [sum(d.values()) / len(d) for d in per_seed]
    agreeing = sum((m > 0) == (found[0] > 0) and m != 0 for m in seed_means)
    return found, agreeing, len(per_seed)


def _interval(found: tuple[float, float, float, int, int] | None) -> str:
    return "–" if found is None else f"{found[0]:+.3f} [{found[1]:+.3f}, {found[2]:+.3f}] {found[3]}/{found[4]}"


def paired_table(base: Path, others: list[Path], motions: set[str] | None = None) -> str:
    only = f", {'/'.join(sorted(motions))} clips only" if motions else ""
    lines = [f"Paired against {base}{only} (mean difference [95 % bootstrap interval], clips higher / clips):", "",
             "| scores | " + " | ".join(COLUMNS + OUTLINE) + " |", "|" + " --- |" * (1 + len(COLUMNS) + len(OUTLINE))]
    for other in others:
        cells = []
        for keys, key in ((COLUMNS, "scores"), (OUTLINE, "outline")):
            a, b = per_clip(base, key, motions), per_clip(other, key, motions)
            for metric in keys:
                cells.append(_interval(paired_difference(a, b, metric)))
        lines.append(f"| {other} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(roots: list[Path], base: str, others: list[str], motions: set[str] | None = None) -> str:
    """`base` and each of `others` (score folders relative to every root, one root per training seed)
    compared clip by clip within each seed, then each clip's difference averaged over the seeds."""
    only = f", {'/'.join(sorted(motions))} clips only" if motions else ""
    lines = [f"Paired against {base} in each of {', '.join(map(str, roots))}{only}: each clip's difference "
             "averaged over the seeds, mean [95 % bootstrap interval over clips] clips higher / clips; "
             "seeds whose own mean has the same sign / seeds:", "",
             "| scores | " + " | ".join(COLUMNS + OUTLINE) + " |", "|" + " --- |" * (1 + len(COLUMNS) + len(OUTLINE))]
    for other in others:
        cells = []
        for keys, key in ((COLUMNS, "scores"), (OUTLINE, "outline")):
            pairs = [(per_clip(root / base, key, motions), per_clip(root / other, key, motions)) for root in roots]
            for metric in keys:
                found = seed_averaged_difference(pairs, metric)
                cells.append("–" if found is None else f"{_interval(found[0])}; {found[1]}/{found[2]} seeds")
        lines.append(f"| {other} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    motions = None
    if args[:1] == ["--motions"] and len(args) > 1:
        motions, args = set(args[1].split(",")), args[2:]
    roots = None
    if args[:1] == ["--seeds"] and len(args) > 1:
        roots, args = [Path(r) for r in args[1].split(",")], args[2:]
    if args[:1] == ["--paired"]:
        if len(args) < 3:
            print(__doc__, file=sys.stderr)
            return 2
        folders = [root / a for root in roots for a in args[1:]] if roots else [Path(a) for a in args[1:]]
        missing = [str(f) for f in folders if not (f / "metrics.json").is_file()]
        if missing:
            print(f"no metrics.json in {', '.join(missing)}: give score folders (RUN/scores/NAME)", file=sys.stderr)
            return 2
        if roots:
            print(seeds_table(roots, args[1], args[2:], motions))
        else:
            print(paired_table(Path(args[1]), [Path(a) for a in args[2:]], motions))
        return 0
    runs = [Path(a) for a in args]
    if not runs:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
