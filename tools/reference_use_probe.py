"""Does a trained checkpoint use its reference image? (SynthWorld issue; bench/README.md, "Why it does not look")

    PYTHONPATH=. python tools/reference_use_probe.py CKPT HELDOUT_DIR N [frame|character]

Renders the first N held-out clips with the clip's own reference (character A) and with the cross-identity
character B's, both driven by A's video, and prints per clip: motion, A's character-region PSNR with A's
reference, with B's (both against A's truth), the mean absolute change inside A's figure, and the PSNR
between A's and B's true figures (what a model that follows its reference would move by).
The last argument is how the model was trained to see its reference (data.reference_framing).
"""
import dataclasses, sys, torch
from aa2.weights.sources import ModelSources, load_model
from aa2.pipeline.inputs import SamplingSettings
from aa2.metrics import quantize_8bit
from train.synthworld_eval import open_heldout, clip_extras
from train.render import render_clip

ck, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
FRAMING = sys.argv[4] if len(sys.argv) > 4 else "frame"
model = load_model(ModelSources.from_path(ck))
clips = open_heldout(data, None, None)
settings = SamplingSettings(cfg=2.5, steps=20)
def char_psnr(r, truth_frames, mask):
    m = mask[:, None].expand_as(r)
    e = ((r - truth_frames) ** 2)[m].mean()
    return float(-10 * e.log10())
rows = []
for i in range(n):
    s = clips[i]
    ref_a, truth_a, motion = clip_extras(clips, i, False, FRAMING)
    ref_b, truth_b, _ = clip_extras(clips, i, True, FRAMING)
    tf = quantize_8bit(truth_a.frames)
    ra = quantize_8bit(render_clip(model, s, settings, reference=ref_a).float())
    rb = quantize_8bit(render_clip(model, s, settings, reference=ref_b).float())
    mask = truth_a.character.bool()
    rows.append((motion, char_psnr(ra, tf, mask), char_psnr(rb, tf, mask), float((ra - rb)[mask[:, None].expand_as(ra)].abs().mean()),
                 char_psnr(quantize_8bit(truth_b.frames), tf, mask)))
    print(rows[-1], flush=True)
import statistics as st
print("mean own-ref char psnr %.2f, B-ref char psnr vs A truth %.2f, mean |own-B| in char %.4f, truth A vs truth B char psnr %.2f" %
      tuple(st.mean(r[k] for r in rows) for k in (1, 2, 3, 4)))
