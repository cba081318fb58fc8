"""bench/synthworld_table.py's paired comparison: per-clip differences and their bootstrap interval."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("synthworld_table", Path(__file__).parents[1] / "bench" / "synthworld_table.py")
synthworld_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(synthworld_table)


def _scores(folder: Path, psnr: list[float], agreement: list[float] | None = None) -> Path:
    folder.mkdir(parents=True)
    clips = [{"clip": f"c{i}", "motion": ("walk", "push")[i % 2], "scores": {"psnr": value, "silhouette_iou": 0.5}}
             for i, value in enumerate(psnr)]
    if agreement is not None:
        for clip, value in zip(clips, agreement):
            clip["outline"] = {"outline_agreement": value}
    (folder / "metrics.json").write_text(json.dumps({"clips": clips}))
    return folder


def test_a_consistent_gain_has_an_interval_above_zero_and_noise_does_not(tmp_path):
    base = synthworld_table.per_clip(_scores(tmp_path / "base", [10.0, 12.0, 14.0, 16.0, 18.0, 20.0]))
    better = synthworld_table.per_clip(_scores(tmp_path / "better", [10.5, 12.4, 14.6, 16.5, 18.4, 20.6]))
    mean, low, high, wins, n = synthworld_table.paired_difference(base, better, "psnr")
    assert mean == pytest.approx(0.5) and 0 < low <= mean <= high and (wins, n) == (6, 6)
    noisy = synthworld_table.per_clip(_scores(tmp_path / "noisy", [11.0, 11.0, 15.0, 15.0, 19.0, 19.0]))
    mean, low, high, wins, n = synthworld_table.paired_difference(base, noisy, "psnr")
    assert mean == pytest.approx(0.0) and low < 0 < high and wins == 3
    assert synthworld_table.paired_difference(base, better, "lpips") is None  # never scored


def test_paired_table_reads_outline_scores_of_cross_identity_runs(tmp_path, capsys):
    base = _scores(tmp_path / "a", [10.0, 11.0], agreement=[0.9, 0.8])
    other = _scores(tmp_path / "b", [10.0, 11.0], agreement=[0.6, 0.5])
    assert synthworld_table.main(["--paired", str(base), str(other)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert "-0.300 [-0.300, -0.300] 0/2" in row and "+0.000" in row


def test_motions_pick_the_clips_compared(tmp_path, capsys):
    base = _scores(tmp_path / "a", [10.0, 11.0, 12.0, 13.0])
    other = _scores(tmp_path / "b", [11.0, 11.0, 13.0, 13.0])  # better on the walk clips (0, 2) only
    assert synthworld_table.main(["--motions", "walk", "--paired", str(base), str(other)]) == 0
    assert "+1.000 [+1.000, +1.000] 2/2" in capsys.readouterr().out
    assert synthworld_table.main(["--motions", "push", "--paired", str(base), str(other)]) == 0
    assert "+0.000 [+0.000, +0.000] 0/2" in capsys.readouterr().out


def test_seeds_average_each_clip_over_seeds_and_count_the_seeds_that_agree(tmp_path, capsys):
    base = [10.0, 11.0, 12.0, 13.0]
    for seed, gain in (("s0", 1.0), ("s1", 0.5), ("s2", -0.3)):  # each clip's seed average: +0.4
        _scores(tmp_path / seed / "base", base)
        _scores(tmp_path / seed / "other", [value + gain for value in base])
    roots = ",".join(str(tmp_path / s) for s in ("s0", "s1", "s2"))
    assert synthworld_table.main(["--seeds", roots, "--paired", "base", "other"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert "+0.400 [+0.400, +0.400] 4/4; 2/3 seeds" in row  # the third seed went the other way
    assert "+0.000 [+0.000, +0.000] 0/4; 0/3 seeds" in row  # silhouette_iou: no difference, no seed agrees


def test_a_folder_without_scores_is_named(tmp_path, capsys):
    base = _scores(tmp_path / "a", [10.0])
    assert synthworld_table.main(["--paired", str(base), str(tmp_path / "nothing")]) == 2
    assert "no metrics.json in " + str(tmp_path / "nothing") in capsys.readouterr().err
