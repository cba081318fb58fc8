"""Low-VRAM mode (`offload="model"`): the same render, one part of the model on the device at a time.

There is no GPU here, so the compute and the offload device are both the CPU: the moves are real
`.to()` calls that change nothing, and where each part *is* comes from the placement's own record,
reported through `on_move`. The GPU figures (peak memory, the time the moves cost) are bench/'s.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel

from aa2.config import sd15
from aa2.errors import AA2Cancelled, AA2InputError
from aa2.models.object_guider import ObjectGuider
from aa2.models.pose_modulation import PoseModulation
from aa2.models.reference_attention import drop_unread_layers, spatial_self_attention_paths
from aa2.models.spatial_blend import SpatialBlend
from aa2.pipeline.animate import animate
from aa2.pipeline.inputs import SamplingSettings
from aa2.pipeline.offload import PARTS, PHASE_PART, choose_offload, part_bytes, working_bytes
from aa2.pipeline.weight_footprint import footprint_table, weight_footprint
from test_cli_animate import _argv, scene  # noqa: F401  (fixture: the demo scene as a user's files)
from test_nodes_sampling import H, W, _image, _run, hosted, nodes, pose  # noqa: F401  (fixtures)
from test_pipeline import FAST, _inputs

OFFLOADED = dataclasses.replace(FAST, offload="model")


@pytest.fixture(scope="module")
def plain_render(tiny_model):
    return animate(tiny_model, _inputs(), FAST)


class PartWatch:
    """Where the placement says each part is, and a check at every module call of every part that
    the running part is on the device and no other is."""

    def __init__(self, model) -> None:
        self.model, self.on_device, self.moves, self.calls = model, {}, [], {part: 0 for part in PARTS}
        self.misplaced: list[str] = []
        self.handles = [module.register_forward_pre_hook(self._checker(part))
                        for part in PARTS for module in getattr(model, part).modules()]

    def __call__(self, part: str, onto_device: bool) -> None:
        self.on_device[part] = onto_device
        self.moves.append((part, onto_device))

    def _checker(self, part: str):
        def check(module, args):
            self.calls[part] += 1
            resident = sorted(p for p, on in self.on_device.items() if on)
            if resident != [part]:
                self.misplaced.append(f"{part} ran while {resident} were on the device")
        return check

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.fixture
def watch(tiny_model):
    watcher = PartWatch(tiny_model)
    yield watcher
    watcher.remove()


def _parked(watch: PartWatch) -> bool:
    return set(watch.on_device) == set(PARTS) and not any(watch.on_device.values())


# ---------------------------------------------------------------------------------- the render


def test_offloaded_render_equals_the_plain_render_bit_for_bit(tiny_model, plain_render):
    offloaded = animate(tiny_model, _inputs(), OFFLOADED, device="cpu")
    assert torch.equal(offloaded.frames, plain_render.frames)  # same device both ways: exact
    assert torch.equal(offloaded.latents, plain_render.latents)


def test_each_part_is_on_the_device_only_while_its_phase_runs(tiny_model, watch):
    animate(tiny_model, _inputs(), OFFLOADED, device="cpu", on_move=watch)
    assert watch.misplaced == []
    assert all(watch.calls[part] > 0 for part in PARTS)  # every part ran, and was checked each time
    clips = 2  # 10 frames in clips of 6 with one motion frame
    denoiser_moves = [on for part, on in watch.moves if part == "denoising_net"]
    assert denoiser_moves == [False] + [True, False] * clips  # in and out once per clip, never per step
    assert [on for part, on in watch.moves if part == "reference_net"] == [False, True, False]  # once per video
    assert _parked(watch)  # and every part rests off the device afterwards


def test_without_offload_nothing_moves(tiny_model, watch, plain_render):
    result = animate(tiny_model, _inputs(), FAST, on_move=watch)
    assert watch.moves == [] and torch.equal(result.frames, plain_render.frames)


def test_a_raising_sampler_leaves_every_part_parked_and_the_model_usable(tiny_model, watch, plain_render):
    def broken_sampler(model, x, sigmas, **kwargs):
        model(x, sigmas[0] * x.new_ones(1))
        raise RuntimeError("sampler bug")

    with pytest.raises(RuntimeError, match="sampler bug"):
        animate(tiny_model, _inputs(), OFFLOADED, device="cpu", sampler=broken_sampler, on_move=watch)
    assert _parked(watch) and watch.misplaced == []
    assert tiny_model.reference_attention.readers and all(
        r.reference is None for r in tiny_model.reference_attention.readers.values())  # the bank is unbound
    again = animate(tiny_model, _inputs(), OFFLOADED, device="cpu", on_move=watch)
    assert torch.equal(again.frames, plain_render.frames)


def test_a_cancel_leaves_every_part_parked(tiny_model, watch):
    steps = []

    def cancel_at_second_step() -> bool:
        steps.append(1)
        return len(steps) > 1

    with pytest.raises(AA2Cancelled):
        animate(tiny_model, _inputs(), OFFLOADED, device="cpu", cancel=cancel_at_second_step, on_move=watch)
    assert _parked(watch) and ("denoising_net", True) in watch.moves


def test_an_unknown_offload_mode_is_refused_before_any_work():
    with pytest.raises(AA2InputError, match="offload must be one of none, model"):
        SamplingSettings(offload="layers").check()


# ---------------------------------------------------------------------------------- the memory model


@pytest.fixture(scope="module")
def sd15_fp16():
    return weight_footprint(sd15(), torch.float16)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sd15_weight_footprint_matches_independently_counted_parameters(sd15_fp16):
    config = sd15()
    with torch.device("meta"):  # each part built on its own from diffusers and aa2's modules, not assembled
        unet = UNet2DConditionModel(**config.unet.diffusers_config(config.denoising_in_channels))
        adapter = MotionAdapter(**config.motion.adapter_config(config.unet))
        extras = [PoseModulation(config.pose, 320), ObjectGuider(config.unet), SpatialBlend(config.unet, 2)]
        reference = UNet2DConditionModel(**config.unet.diffusers_config())
    unread = drop_unread_layers(reference, spatial_self_attention_paths(reference, config.fusion)[-1])
    assert unread  # the ReferenceNet's tail after its last banked attention is not loaded

    positional_tables = sum(b.numel() for b in adapter.buffers())  # the motion modules' sinusoids, cast too
    denoising = _count(unet) + _count(adapter) + positional_tables + sum(_count(m) for m in extras)
    sd15_unet, sd15_vae, clip_l14_vision_with_projection = 859_520_964, 83_653_863, 303_966_208  # published counts
    assert _count(unet) == sd15_unet + 5 * 320 * 9  # conv_in widened by environment (4) + mask (1)
    parts = sd15_fp16["parts"]
    assert parts["denoising_net"] == 2 * denoising
    assert parts["reference_net"] == 2 * _count(reference) < 2 * sd15_unet
    assert parts["vae"] == 2 * sd15_vae
    assert parts["image_encoder"] == 2 * clip_l14_vision_with_projection + 8 * 257  # + int64 position ids
    assert set(sd15_fp16["none"].values()) == {sum(parts.values())}
    assert sd15_fp16["model"] == {phase: parts[part] for phase, part in PHASE_PART.items()}
    assert max(sd15_fp16["model"].values()) == parts["denoising_net"] < 0.6 * sum(parts.values())
    assert "| **peak** | | **5,215** | **2,841** |" in footprint_table(sd15())


def test_the_meta_count_is_what_a_loaded_model_holds(tiny_model):
    from aa2.config import tiny

    assert weight_footprint(tiny(), torch.float32)["parts"] == part_bytes(tiny_model)


def test_auto_picks_model_offload_only_when_the_whole_model_does_not_fit():
    parts = {"denoising_net": 60, "reference_net": 30, "vae": 5, "image_encoder": 10}
    assert choose_offload(None, parts, 20) == "none"  # no host to ask: as before
    assert choose_offload(125, parts, 20) == "none"
    assert choose_offload(124, parts, 20) == "model"
    assert working_bytes(16, 768, 512, torch.float32) == 2 * working_bytes(16, 768, 512, torch.float16)
    assert working_bytes(32, 768, 512, torch.float16) == 2 * working_bytes(16, 768, 512, torch.float16)


# ---------------------------------------------------------------------------------- the CLI and the nodes


def test_cli_low_vram_flag_renders_with_model_offload_from_the_cpu(scene, tiny_weights, tmp_path, monkeypatch):
    from aa2.cli import main
    from aa2.pipeline import animate as pipeline

    _, files = scene
    checkpoint = str(tiny_weights / "animateanyone2" / "aa2-tiny.safetensors")
    calls = []

    def recording_animate(model, inputs, settings, **kwargs):
        result = pipeline_animate(model, inputs, settings, **kwargs)
        calls.append((settings.offload, str(kwargs["device"]), result.frames))
        return result

    pipeline_animate = pipeline.animate
    monkeypatch.setattr(pipeline, "animate", recording_animate)  # the command looks it up at call time
    for extra in ([], ["--low-vram"]):
        argv = _argv(files, checkpoint, tmp_path / f"out{len(extra)}.mp4", "--steps", "1", "--clip-length", "4",
                     "--device", "cpu", *extra)
        assert main(argv) == 0
    (plain_mode, plain_device, plain), (low_mode, low_device, low) = calls
    assert (plain_mode, low_mode) == ("none", "model") and plain_device == low_device == "cpu"
    assert torch.equal(plain, low)


def test_node_offload_option_reaches_the_pipeline_and_changes_nothing_in_the_output(nodes, hosted, pose, monkeypatch):
    sampling = nodes.nodes_sampling
    seen = []
    real = sampling.animate

    def recording_animate(model, inputs, settings, **kwargs):
        seen.append((settings.offload, kwargs["device"], kwargs["offload_device"]))
        return real(model, inputs, settings, **kwargs)

    monkeypatch.setattr(sampling, "animate", recording_animate)
    sampler = sampling.AA2Sampler()
    auto = _run(sampler, hosted, pose)
    model_mode = _run(sampler, hosted, pose, offload="model")
    assert seen == [("none", None, hosted.offload_device),  # auto without a host: as before
                    ("model", hosted.load_device, hosted.offload_device)]
    assert torch.equal(auto[0], model_mode[0])
    encoder = sampling.AA2EncodeReference()
    references = [encoder.encode(hosted, _image(1, seed=4), W, H, offload=mode)[0] for mode in ("none", "model")]
    assert all(torch.equal(references[0].bank[k], references[1].bank[k]) for k in references[0].bank)


def test_auto_under_a_host_asks_its_free_memory_and_makes_room(pack, hosted, monkeypatch):
    from types import SimpleNamespace

    host = pack.nodes.host
    parts = part_bytes(hosted.model)
    asked = []
    fake = SimpleNamespace(current_loaded_models=[], free=0,
                           free_memory=lambda needed, device: asked.append(needed),
                           get_free_memory=lambda device: fake.free,
                           load_models_gpu=lambda patchers, force_full_load: None)
    monkeypatch.setattr(host, "model_management", fake)
    gpu = dataclasses.replace(hosted, load_device=torch.device("cuda"), patcher=object())  # never moved here
    fake.free = sum(parts.values()) + 99
    assert gpu.for_render("auto", 100)[1] == "model"
    assert asked == [sum(parts.values()) + 100, max(parts.values()) + 100]  # room for all, then for one part
    fake.free += 1
    assert gpu.for_render("auto", 100)[1] == "none"
    assert dataclasses.replace(gpu, load_device=torch.device("cpu")).for_render("auto", 100)[1] == "none"
    assert gpu.for_render("model", 0) == (hosted.model, "model")
    with pytest.raises(Exception, match="offload must be auto, none, model"):
        gpu.for_render("layers", 0)
