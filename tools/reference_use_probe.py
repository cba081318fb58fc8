"""Does a trained checkpoint use its reference image? (SynthWorld issue; bench/README.md, "Why it does not look")

    PYTHONPATH=. python tools/reference_use_probe.py CKPT HELDOUT_DIR N [frame|character]

Renders the first N held-out clips twice, driven by character A's video: once with A's own reference
and once with the cross-identity character B's. Prints per clip, then averaged: the motion, A's
character-region PSNR with A's reference and with B's (both against A's truth), the mean absolute
change inside A's figure between the two renders, and the PSNR between A's and B's true figures
(how far a model that follows its reference would move). The last argument is how the model was
trained to see its reference (`data.reference_framing`).
"""

from __future__ import annotations

import statistics
import sys

import torch

from aa2.metrics import quantize_8bit
from aa2.pipeline.inputs import SamplingSettings
from aa2.weights.sources import ModelSources, load_model
from train.render import render_clip
from train.synthworld_eval import clip_extras, open_heldout

SETTINGS = SamplingSettings(cfg=2.5, steps=20)  # synthworld_eval's defaults


def region_psnr(frames: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> float:
    """PSNR of `frames` against `truth` ([F, 3, H, W], 0..1) inside `region` [F, H, W]."""
    inside = region[:, None].expand_as(frames)
    return float(-10 * ((frames - truth) ** 2)[inside].mean().log10())


def probe_clip(model, clips, index: int, framing: str) -> tuple[str, float, float, float, float]:
    own_reference, own_truth, motion = clip_extras(clips, index, False, framing)
    other_reference, other_truth, _ = clip_extras(clips, index, True, framing)
    sample = clips[index]
    with_own = quantize_8bit(render_clip(model, sample, SETTINGS, reference=own_reference).float())
    with_other = quantize_8bit(render_clip(model, sample, SETTINGS, reference=other_reference).float())
    truth = quantize_8bit(own_truth.frames)
    figure = own_truth.character.bool()
    change = float((with_own - with_other)[figure[:, None].expand_as(with_own)].abs().mean())
    return (motion, region_psnr(with_own, truth, figure), region_psnr(with_other, truth, figure), change,
            region_psnr(quantize_8bit(other_truth.frames), truth, figure))


def main(argv: list[str]) -> None:
    checkpoint, data, count = argv[0], argv[1], int(argv[2])
    framing = argv[3] if len(argv) > 3 else "frame"
    model = load_model(ModelSources.from_path(checkpoint))
    clips = open_heldout(data, None, None)
    rows = []
    for index in range(count):
        rows.append(probe_clip(model, clips, index, framing))
        print(rows[-1], flush=True)
    means = [statistics.mean(row[k] for row in rows) for k in (1, 2, 3, 4)]
    print("mean own-ref char psnr %.2f, B-ref char psnr vs A truth %.2f, mean |own-B| in char %.4f, "
          "truth A vs truth B char psnr %.2f" % tuple(means))


if __name__ == "__main__":
    main(sys.argv[1:])
