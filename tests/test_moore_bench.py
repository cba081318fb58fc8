"""`tools.moore_bench` (issue 12's side-by-side, run on a GPU machine by bench/gpu_check.sh) keeps working
against the current pipeline: our low-VRAM side (the plain side's code path plus `offload="model"`),
measured in this process on the tiny weights, fills every row of its table. Moore's side needs a Moore
checkout, which CI does not have; the tool's own CPU run (bench/README.md) covers it."""

from __future__ import annotations

import json

from tools.moore_bench import table
from tools.moore_bench_sides import measure


def test_low_vram_side_reports_cold_warm_and_long_calls_and_fills_the_table(tiny_weights, capsys):
    spec = {"side": "aa2-lowvram", "preset": "tiny", "checkout": "", "device": "cpu", "dtype": "fp32",
            "folder": str(tiny_weights / "animateanyone2" / "aa2-tiny-moore"),
            "vae": str(tiny_weights / "vae" / "aa2-tiny-vae.safetensors"),
            "clip": str(tiny_weights / "clip_vision" / "aa2-tiny-clip-vision.safetensors"),
            "size": [64, 64], "frames": 2, "long_frames": [4], "clip_length": 2, "steps": 2, "cfg": 3.5,
            "threads": 0, "vae_chunk": 0, "flops": False}
    measure(spec)
    results = [line for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 4  # after the load and after each call: a side stopped early keeps what it did
    result = json.loads(results[-1][len("RESULT "):])
    assert [(c["label"], c["frames"]) for c in result["calls"]] == [("first", 2), ("warm", 2), ("long", 4)]
    assert all(c["steps_seen"] >= 2 and c["total_s"] > 0 and c["vram_peak"] is None for c in result["calls"])

    rows = table([{**spec, **result, "status": "ok"}], frames=2).splitlines()[2:]
    empty = [row for row in rows if row.endswith("| - |") and "VRAM" not in row]  # no VRAM on the CPU
    assert len(rows) == 8 and not empty, rows
