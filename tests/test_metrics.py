"""Evaluation metrics agree with their reference implementations on the same inputs and weights.

PSNR/SSIM against scikit-image, LPIPS against the `lpips` package (driven without torchvision:
a stand-in `torchvision.models` module hands it the AlexNet/VGG16 layers written out here from
torchvision's definition), the Fréchet distance against scipy's `sqrtm`, and FVD through a tiny
TorchScript detector saved to disk and loaded by the real path.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from einops import rearrange

from aa2.errors import AA2InputError, AA2WeightsError
from train.metrics import (
    LPIPS,
    feature_statistics,
    frechet_distance,
    frechet_video_distance,
    fvd_from_features,
    i3d_features,
    load_i3d,
    load_lpips,
    psnr,
    quantize_8bit,
    ssim,
    video_clips,
)

skimage_metrics = pytest.importorskip("skimage.metrics")

# Both sides compute in float64 with the same formulas; only summation order differs (scipy's
# separable filters vs conv2d), worth ~1e-15. 1e-10 leaves room and still catches any change of
# window, constant, covariance normalisation or crop, each of which moves SSIM by >1e-4.
SSIM_ATOL = 1e-10
PSNR_ATOL = 1e-9  # dB; log10 of the same float64 MSE


def _frames(seed: int, shape=(3, 3, 24, 30)) -> tuple[torch.Tensor, torch.Tensor]:
    """A random target and a noisy, clipped version of it: [F, 3, H, W] float64 in 0..1."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    noisy = (target + 0.15 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return noisy, target


def _structured(shape=(2, 3, 32, 40)) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth gradients, a hard-edged box and a blurred, shifted copy: where SSIM's structure
    term matters (random noise alone mostly exercises the contrast term)."""
    f, _, h, w = shape
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, h, dtype=torch.float64),
        torch.linspace(0, 1, w, dtype=torch.float64),
        indexing="ij",
    )
    target = torch.stack([xx, yy, (xx + yy) / 2])[None].repeat(f, 1, 1, 1)
    target[:, :, 8:20, 10:25] = torch.tensor([0.9, 0.1, 0.4], dtype=torch.float64).view(3, 1, 1)
    target[1] = 1 - target[1]
    blurred = nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    generated = torch.roll(blurred, shifts=(1, 2), dims=(-2, -1)) * 0.9 + 0.05
    return generated, target


def _luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma of a [3, H, W] frame, written out independently of the module under test."""
    return 0.299 * frame[0] + 0.587 * frame[1] + 0.114 * frame[2]


@pytest.mark.parametrize("pair", ["random", "structured"])
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (dict(), dict()),  # DisCo's protocol: scikit-image defaults on gray
        (
            dict(gaussian_weights=True),
            dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
        ),  # Wang et al.
    ],
    ids=["uniform7", "gaussian11"],
)
def test_ssim_matches_scikit_image_gray_and_per_channel(pair, ours, theirs):
    gen, tgt = _frames(0) if pair == "random" else _structured()
    got_gray = ssim(gen, tgt, **ours)
    got_rgb = ssim(gen, tgt, color="rgb", **ours)
    want_gray, want_rgb = [], []
    for g, t in zip(gen.numpy(), tgt.numpy(), strict=True):
        want_gray.append(
            skimage_metrics.structural_similarity(_luma(t), _luma(g), data_range=1.0, **theirs)
        )
        want_rgb.append(
            skimage_metrics.structural_similarity(t, g, channel_axis=0, data_range=1.0, **theirs)
        )
    np.testing.assert_allclose(got_gray.numpy(), want_gray, rtol=0, atol=SSIM_ATOL)
    np.testing.assert_allclose(got_rgb.numpy(), want_rgb, rtol=0, atol=SSIM_ATOL)
    assert got_gray.shape == (gen.shape[0],)


def test_ssim_on_uint8_levels_equals_scikit_image_on_uint8_images():
    """DisCo passed uint8 frames (data_range inferred as 255); quantised 0..1 frames with
    data_range=1 are the same SSIM."""
    gen, tgt = (quantize_8bit(x) for x in _structured())
    got = ssim(gen, tgt, color="rgb")
    for i in range(gen.shape[0]):
        g8 = np.round(gen[i].numpy() * 255).astype(np.uint8)
        t8 = np.round(tgt[i].numpy() * 255).astype(np.uint8)
        want = skimage_metrics.structural_similarity(t8, g8, channel_axis=0)
        assert abs(got[i].item() - want) < SSIM_ATOL


def test_gray_ssim_is_disco_pipeline_of_opencv_gray_then_scikit_image():
    """DisCo: cv2.cvtColor(frame, COLOR_BGR2GRAY), then structural_similarity with defaults.
    OpenCV converts float32 images with the same BT.601 weights and no rounding, so the two
    agree to the float32 precision of the gray image (~1e-8 in SSIM here)."""
    cv2 = pytest.importorskip("cv2")
    gen, tgt = _structured()
    got = ssim(gen, tgt)

    def cv2_gray(frame: torch.Tensor) -> np.ndarray:
        bgr = np.ascontiguousarray(frame.numpy()[::-1].transpose(1, 2, 0)).astype(np.float32)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)

    for i in range(gen.shape[0]):
        want = skimage_metrics.structural_similarity(
            cv2_gray(tgt[i]), cv2_gray(gen[i]), data_range=1.0
        )
        assert abs(got[i].item() - want) < 1e-6  # BT.709 weights would be off by ~1e-2


def test_psnr_matches_scikit_image_and_is_per_frame_over_batches():
    gen, tgt = _frames(2, shape=(2, 4, 3, 16, 16))  # [B, F, 3, H, W]
    got = psnr(gen, tgt)
    assert got.shape == (2, 4)
    for b in range(2):
        for f in range(4):
            want = skimage_metrics.peak_signal_noise_ratio(
                tgt[b, f].numpy(), gen[b, f].numpy(), data_range=1.0
            )
            assert abs(got[b, f].item() - want) < PSNR_ATOL
    # a frame reproduced exactly is +inf, as in scikit-image, and does not disturb its neighbours
    gen[0, 1] = tgt[0, 1]
    again = psnr(gen, tgt)
    assert torch.isinf(again[0, 1]) and torch.isfinite(again[0, 0])


def test_psnr_of_uint8_frames_does_not_wrap_around():
    """The "PSNR*" correction: a difference of -10 levels must count as 10, not 246."""
    tgt = torch.full((1, 3, 8, 8), 20 / 255, dtype=torch.float64)
    gen = torch.full((1, 3, 8, 8), 10 / 255, dtype=torch.float64)
    assert psnr(gen, tgt).item() == pytest.approx(20 * np.log10(255 / 10), abs=1e-9)
    assert psnr(tgt, gen).item() == pytest.approx(psnr(gen, tgt).item(), abs=1e-12)


def test_batched_ssim_equals_per_video_ssim():
    gen, tgt = _frames(3, shape=(2, 3, 3, 16, 16))
    batched = ssim(gen, tgt)
    assert batched.shape == (2, 3)
    torch.testing.assert_close(batched[1], ssim(gen[1], tgt[1]), rtol=0, atol=1e-12)


def test_metrics_reject_mismatched_or_tiny_frames():
    gen, tgt = _frames(4, shape=(2, 3, 16, 16))
    with pytest.raises(AA2InputError, match="differ in shape"):
        psnr(gen, tgt[:1])
    with pytest.raises(AA2InputError, match="window"):
        ssim(gen[..., :6, :6], tgt[..., :6, :6])
    with pytest.raises(AA2InputError, match=r"\[F, 3, H, W\]"):
        ssim(gen[:, :1], tgt[:, :1])


# ----------------------------------------------------------------------------------- LPIPS


def _torchvision_alexnet_features() -> nn.Sequential:
    """torchvision.models.alexnet().features, written out from torchvision's definition."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def _torchvision_vgg16_features() -> nn.Sequential:
    """torchvision.models.vgg16().features (configuration "D", no batch norm)."""
    layers, cin = [], 3
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


class _TorchvisionModel(nn.Module):
    """What torchvision's constructors return, as far as lpips uses it: `.features`."""

    def __init__(self, features: nn.Sequential, seed: int):
        super().__init__()
        self.features = features
        # random but non-degenerate trunk weights, deterministic per seed
        g = torch.Generator().manual_seed(seed)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.data = torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.05


@pytest.fixture(scope="session")
def lpips_reference(tmp_path_factory):
    """The `lpips` package's LPIPS for alex and vgg, its trunk weights saved the way torchvision
    ships them (whole-model state dicts) and its own v0.1 linear-layer files."""
    if (
        importlib.util.find_spec("lpips") is None
    ):  # importing it needs torchvision: stand one in first
        pytest.skip("the lpips package (pip install --no-deps lpips) is the reference")
    root = tmp_path_factory.mktemp("lpips")
    built: dict[str, _TorchvisionModel] = {}

    def alexnet(**_):
        built["alex"] = _TorchvisionModel(_torchvision_alexnet_features(), seed=1)
        return built["alex"]

    def vgg16(**_):
        built["vgg"] = _TorchvisionModel(_torchvision_vgg16_features(), seed=2)
        return built["vgg"]

    fake_models = types.ModuleType("torchvision.models")
    fake_models.alexnet, fake_models.vgg16 = alexnet, vgg16
    fake_tv = types.ModuleType("torchvision")
    fake_tv.models = fake_models
    saved = {k: v for k, v in sys.modules.items() if k == "lpips" or k.startswith("lpips.")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torchvision", fake_tv)
        mp.setitem(sys.modules, "torchvision.models", fake_models)
        for name in saved:
            mp.delitem(sys.modules, name)
        lpips_pkg = importlib.import_module("lpips")
        refs = {
            net: lpips_pkg.LPIPS(net=net, pnet_rand=True, verbose=False) for net in ("alex", "vgg")
        }
        weights_dir = Path(lpips_pkg.__file__).parent / "weights" / "v0.1"
        # leave no module bound to the stand-in torchvision behind
        for name in [k for k in sys.modules if k == "lpips" or k.startswith("lpips.")]:
            del sys.modules[name]
    sys.modules.update(saved)

    files = {}
    for net in ("alex", "vgg"):
        backbone = root / f"{net}_torchvision.pth"
        torch.save(built[net].state_dict(), backbone)  # keys features.N.*, as torchvision's file
        files[net] = (backbone, weights_dir / f"{net}.pth")
    return refs, files


def _lpips_inputs(seed: int, n: int = 3, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    # a perturbed copy keeps distances in the realistic 0.05-0.5 band rather than at the max
    y = (x + 0.2 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("net", ["alex", "vgg"])
@pytest.mark.parametrize("rescale", [True, False], ids=["zero_one_to_pm1", "disco_unscaled"])
def test_lpips_matches_reference_package(lpips_reference, net, rescale):
    refs, files = lpips_reference
    ours = load_lpips(*files[net], rescale=rescale)
    assert ours.net == net  # inferred from the backbone file
    # VGG16 pools 4 times before relu5_3: 32 px leaves it 2x2 and keeps the test fast
    x, y = _lpips_inputs(5, n=2, size=64 if net == "alex" else 32)
    with torch.no_grad():
        want = refs[net](x, y, normalize=rescale).flatten()
        got = ours(x, y)
    # same float32 ops in the same order except for our batched trunk pass: ~1e-7 relative
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert (got > 0).all()
    assert torch.allclose(ours(x, x), torch.zeros(2), atol=1e-7)


def test_lpips_reads_features_only_and_safetensors_files(lpips_reference, tmp_path):
    from safetensors.torch import save_file

    refs, files = lpips_reference
    full = torch.load(files["alex"][0], weights_only=True)
    features_only = {k.removeprefix("features."): v for k, v in full.items()}
    save_file(features_only, str(tmp_path / "alex_features.safetensors"))
    lin = torch.load(files["alex"][1], map_location="cpu", weights_only=True)
    save_file(lin, str(tmp_path / "alex_lin.safetensors"))
    ours = load_lpips(tmp_path / "alex_features.safetensors", tmp_path / "alex_lin.safetensors")
    x, y = _lpips_inputs(6, n=2)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(x, y), refs["alex"](x, y, normalize=True).flatten(), rtol=1e-5, atol=1e-7
        )


def test_lpips_missing_or_wrong_weights_say_what_to_download(lpips_reference, tmp_path):
    _, files = lpips_reference
    with pytest.raises(AA2WeightsError, match="alexnet-owt-7be5be79.pth"):
        load_lpips(tmp_path / "nope.pth", files["alex"][1], net="alex")
    with pytest.raises(AA2WeightsError, match=r"v0\.1/vgg\.pth"):
        load_lpips(files["vgg"][0], tmp_path / "nope.pth", net="vgg")
    with pytest.raises(AA2WeightsError, match="vgg backbone"):
        load_lpips(files["vgg"][0], files["alex"][1], net="alex")
    with pytest.raises(AA2WeightsError, match="do not fit"):
        load_lpips(files["vgg"][0], files["alex"][1])  # alex heads on a vgg trunk


def test_lpips_layers_carry_torchvision_key_names():
    """Users bring torchvision's file: our trunk's keys must be its `features` keys."""
    for net, reference in (
        ("alex", _torchvision_alexnet_features()),
        ("vgg", _torchvision_vgg16_features()),
    ):
        ours = LPIPS(net).features.state_dict()
        theirs = reference.state_dict()
        assert set(ours) <= set(theirs) and {k: v.shape for k, v in ours.items()} == {
            k: theirs[k].shape for k in ours
        }


# ------------------------------------------------------------------------------------- FVD


class _TinyI3D(nn.Module):
    """A stand-in with the real detector's call signature: uint8 [B, 3, T, H, W] in,
    features out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 6, kernel_size=(3, 3, 3), padding=1)
        self.head = nn.Linear(12, 10)

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = False,
        resize: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = nn.functional.interpolate(
                x, size=(x.shape[2], 12, 12), mode="trilinear", align_corners=False
            )
        h = torch.relu(self.conv(x))
        pooled = torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)
        return pooled if return_features else self.head(pooled).softmax(-1)


@pytest.fixture(scope="session")
def i3d_file(tmp_path_factory) -> Path:
    """The stand-in scripted and saved as a TorchScript archive, as StyleGAN-V's file is."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fvd") / "i3d_torchscript.pt"
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
        )
        torch.jit.script(_TinyI3D()).save(str(path))
    return path


def _clips(seed: int, n: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 16, 3, 20, 20, generator=g) * 0.6 + shift).clamp(0, 1)


def test_i3d_features_feed_the_detector_as_stylegan_v_does(i3d_file):
    detector = load_i3d(i3d_file)
    assert isinstance(detector, torch.jit.ScriptModule)
    clips = _clips(0, 5)
    got = i3d_features(detector, clips, batch_size=2)
    assert got.shape == (5, 12) and got.dtype == torch.float64
    # StyleGAN-V: uint8 [B, C, T, H, W] with rescale/resize/return_features all True
    video = rearrange(torch.round(clips * 255).to(torch.uint8), "n t c h w -> n c t h w")
    with torch.no_grad():
        want = detector(video, rescale=True, resize=True, return_features=True).double()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # batching is bookkeeping only
    torch.testing.assert_close(
        i3d_features(detector, clips, batch_size=5), got, rtol=1e-6, atol=1e-7
    )


def test_fvd_is_zero_for_one_set_and_grows_with_the_distribution_gap(i3d_file):
    detector = load_i3d(i3d_file)
    real = _clips(1, 24)
    same = frechet_video_distance(detector, real, real, batch_size=8)
    near = frechet_video_distance(detector, real, _clips(2, 24), batch_size=8)
    far = frechet_video_distance(detector, real, _clips(2, 24, shift=0.4), batch_size=8)
    assert abs(same) < 1e-8
    assert 0 < near < far


def test_video_clips_cut_consecutive_frames():
    frames = torch.arange(20, dtype=torch.float32).view(20, 1, 1, 1).expand(20, 3, 2, 2)
    clips = video_clips(frames, 16)
    assert clips.shape == (1, 16, 3, 2, 2)
    sliding = video_clips(frames, 16, stride=1)  # DisCo: a clip starting at every frame
    assert sliding.shape[0] == 5
    assert sliding[3, :, 0, 0, 0].tolist() == list(range(3, 19))
    assert video_clips(frames[:10], 16).shape[0] == 0


def test_load_i3d_errors_name_the_file_to_download(tmp_path):
    with pytest.raises(AA2WeightsError, match="i3d_torchscript.pt"):
        load_i3d(tmp_path / "missing.pt")
    bogus = tmp_path / "i3d_torchscript.pt"
    torch.save({"w": torch.zeros(1)}, bogus)  # a state dict, not TorchScript
    with pytest.raises(AA2WeightsError, match="not a TorchScript"):
        load_i3d(bogus)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    """The StyleGAN-V / pytorch-fid formula with scipy's general matrix square root."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    root = scipy_linalg.sqrtm(s1 @ s2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)))


@pytest.mark.parametrize("n, d", [(300, 12), (400, 48)])
def test_frechet_distance_matches_scipy_sqrtm_on_random_gaussians(n, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.1
    b = rng.normal(size=(n, d)) * 1.3 + 0.5
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    # our statistics are StyleGAN-V's: population covariance
    np.testing.assert_allclose(
        s1.numpy(), np.cov(a, rowvar=False, bias=True), rtol=1e-10, atol=1e-12
    )
    got = frechet_distance(mu1, s1, mu2, s2)
    want = _scipy_frechet(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    # full-rank, well-conditioned: both methods are float64-accurate; 1e-9 relative is loose
    assert got == pytest.approx(want, rel=1e-9)


def test_frechet_distance_closed_forms_and_rank_deficient_covariances():
    # one dimension: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])
    ) == pytest.approx(4.0 + 1.0, abs=1e-12)
    # fewer clips than features (the usual FVD case: 400 features): singular covariances;
    # scipy agrees to the ~1e-8 its Schur iteration reaches there
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.2
    got = fvd_from_features(a, b)
    want = _scipy_frechet(*(t.numpy() for t in (*feature_statistics(a), *feature_statistics(b))))
    assert got == pytest.approx(want, rel=1e-6)
    # a set against itself: zero up to the sqrt(eps) that singular directions amplify
    mu, s = feature_statistics(a)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6 * float(torch.trace(s))
    # unbiased (np.cov) statistics are the N / (N - 1) rescaling of the population ones
    np.testing.assert_allclose(
        feature_statistics(a, unbiased=True)[1].numpy(),
        np.cov(a, rowvar=False),
        rtol=1e-10,
        atol=1e-12,
    )
