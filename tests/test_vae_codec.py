"""Frames per VAE call (aa2.pipeline.vae_codec): automatic from free memory on a GPU, one on the CPU,
halved and retried when the device runs out, never changing the frames themselves."""

import pytest
import torch
from diffusers import AutoencoderKL

from aa2.errors import AA2InputError
from aa2.pipeline.vae_codec import AUTO, decode_latents, encode_frames, frame_bytes, frames_per_call

CPU, GPU = torch.device("cpu"), torch.device("cuda")
GIB = 2**30


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, norm_num_groups=4,
                         latent_channels=4).eval()


class CallLog:
    """Wraps the VAE's decode/encode to record each call's batch and to run out of memory above
    `limit` frames, as a GPU would."""

    def __init__(self, vae, monkeypatch, limit: int | None = None):
        self.batches: list[int] = []
        for name in ("decode", "encode"):
            original = getattr(vae, name)

            def call(x, *args, _original=original, **kwargs):
                self.batches.append(x.shape[0])
                if limit is not None and x.shape[0] > limit:
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
                return _original(x, *args, **kwargs)

            monkeypatch.setattr(vae, name, call)


def test_sd15_frame_estimate_matches_the_cpu_measurement():
    # bench/README.md: each extra 256x256 fp32 frame per call raised the CPU peak by ~0.46 GB
    sd15 = type("Config", (), {"config": type("C", (), {"block_out_channels": [128, 256, 512, 512]})})()
    estimate = frame_bytes(sd15, 256, 256, torch.float32)
    assert 0.46e9 <= estimate <= 0.6e9  # at or a little above what was measured: a safe side
    assert frame_bytes(sd15, 768, 512, torch.float16) == estimate * 6 // 2  # pixels x6, half the bytes


def test_automatic_chunk_is_one_frame_on_the_cpu_and_what_fits_on_a_gpu():
    per_frame = GIB
    assert frames_per_call(AUTO, 16, per_frame, CPU) == 1  # no free-memory figure off CUDA
    assert frames_per_call(AUTO, 16, per_frame, GPU, lambda d: 10 * GIB) == 8  # 80 % of 10 GiB
    assert frames_per_call(AUTO, 16, per_frame, GPU, lambda d: 100 * GIB) == 16  # never more than there are
    assert frames_per_call(AUTO, 16, per_frame, GPU, lambda d: GIB // 2) == 1  # at least one
    assert frames_per_call(3, 16, per_frame, GPU, lambda d: 100 * GIB) == 3  # a number the user chose is kept
    with pytest.raises(AA2InputError, match="0 for automatic"):
        frames_per_call(-1, 16, per_frame, CPU)


def test_out_of_memory_halves_an_automatic_chunk_and_keeps_the_frames(vae, monkeypatch):
    torch.manual_seed(1)
    latents = torch.randn(1, 4, 10, 4, 4)
    with torch.no_grad():
        reference = decode_latents(vae, latents, chunk=1)
        log = CallLog(vae, monkeypatch, limit=3)
        plenty = lambda device: 1000 * GIB  # the estimate says all 10 fit; the "device" takes only 3
        frames = decode_latents(vae, latents, chunk=AUTO, free_bytes=plenty)
    assert log.batches == [10, 5, 2, 2, 2, 2, 2]  # halved until a call fits, then kept
    torch.testing.assert_close(frames, reference, atol=1e-5, rtol=0)  # batch size changes CPU summation order


def test_out_of_memory_with_a_chosen_chunk_is_raised_as_it_is(vae, monkeypatch):
    CallLog(vae, monkeypatch, limit=1)
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
        encode_frames(vae, torch.rand(4, 3, 32, 32), chunk=2)


def test_encoding_in_automatic_chunks_gives_the_same_latents(vae, monkeypatch):
    frames = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        one = encode_frames(vae, frames, chunk=1)
        log = CallLog(vae, monkeypatch)
        auto = encode_frames(vae, frames, chunk=AUTO, free_bytes=lambda device: 1000 * GIB)
    assert log.batches == [6]
    torch.testing.assert_close(auto, one, atol=1e-5, rtol=0)


def test_low_vram_mode_keeps_one_frame_per_call_unless_told_otherwise():
    from aa2.pipeline.inputs import SamplingSettings

    assert SamplingSettings().frames_per_vae_call == AUTO  # whole model on the GPU: fill what is free
    assert SamplingSettings(offload="model").frames_per_vae_call == 1  # the lowest peak was asked for
    assert SamplingSettings(offload="model", vae_chunk=4).frames_per_vae_call == 4


def test_the_gpu_budget_is_what_the_run_already_peaked_at_and_freed(monkeypatch):
    from aa2.pipeline import vae_codec

    cuda = torch.cuda
    monkeypatch.setattr(cuda, "mem_get_info", lambda device: (60 * GIB, 80 * GIB))
    monkeypatch.setattr(cuda, "memory_reserved", lambda device: 9 * GIB)
    monkeypatch.setattr(cuda, "memory_allocated", lambda device: 5 * GIB)  # the weights, between phases
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda device: 8 * GIB)  # the denoising's peak
    assert vae_codec.free_device_bytes(GPU) == 3 * GIB  # not 64 GiB: batching frames must not raise the peak
    monkeypatch.setattr(cuda, "mem_get_info", lambda device: (0, 80 * GIB))  # another process took the card
    monkeypatch.setattr(cuda, "memory_reserved", lambda device: 6 * GIB)
    assert vae_codec.free_device_bytes(GPU) == 1 * GIB  # then only torch's own cache (6 - 5 GiB) is left
    assert vae_codec.free_device_bytes(CPU) is None
