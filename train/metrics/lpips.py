"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features"): AlexNet, VGG16.

The distance between two images is, for five layers `l` of an ImageNet backbone,
`Σ_l mean_hw( w_l · (f̂_l(x) − f̂_l(y))² )`, where `f̂` is the activation unit-normalised over
channels and `w_l ≥ 0` are the learned linear ("lin") weights. This is the `lpips` PyPI package's
v0.1 forward: inputs in −1..1 are shifted and scaled by its fixed per-channel constants before the
backbone, and the taps are the ReLU outputs after conv1..conv5 (AlexNet) or relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3 (VGG16).

Weights are never downloaded. The user provides two files:
- the **backbone**: torchvision's ImageNet weights, `alexnet-owt-7be5be79.pth` or
  `vgg16-397923af.pth`, either the whole model's state dict (`features.N.*`, `classifier.*`; the
  classifier is ignored) or `model.features.state_dict()` (`N.*`). The layers below are built
  with torchvision's `features` indices so either loads strictly, without torchvision installed.
- the **linear layers**: the `lpips` package's `lpips/weights/v0.1/alex.pth` or `vgg.pth`
  (keys `lin{k}.model.1.weight`, saved on CUDA: loaded here with `map_location="cpu"`).
`.safetensors` copies of either (same keys) load too; pickles load with `weights_only=True`.

Which variant the tables use: DisCo's script, which Animate Anyone's TikTok numbers follow, builds
`lpips.LPIPS(net="vgg")` and feeds it `ToTensor()` images, i.e. **0..1, not the −1..1 LPIPS
expects** (`normalize=False`). `LPIPS(..., rescale=False)` reproduces that; the default
`rescale=True` maps 0..1 to −1..1 first, which is the metric as its authors define it. The two
give different numbers; compare only like with like.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from einops import rearrange

from aa2.errors import AA2InputError, AA2WeightsError

Backbone = Literal["alex", "vgg"]

# The lpips package's ScalingLayer: ImageNet statistics expressed for −1..1 inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips.normalize_tensor's epsilon, kept so near-zero activations match

# torchvision's `features` order. AlexNet: (in, out, kernel, stride, padding) per convolution and
# the layer sequence (Conv, ReLU, Max-pool); VGG16 (configuration "D"): out-channels or "M".
# fmt: off
_ALEX_CONVS = [
    (3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1),
    (256, 256, 3, 1, 1),
]
_ALEX_LAYOUT = ["C", "R", "M", "C", "R", "M", "C", "R", "C", "R", "C", "R", "M"]
_VGG16_CFG = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
]
# fmt: on

# Indices into `features` whose outputs LPIPS compares (the ReLU after each tapped conv).
TAPS: dict[str, tuple[int, ...]] = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
CHANNELS: dict[str, tuple[int, ...]] = {
    "alex": (64, 192, 384, 256, 256),
    "vgg": (64, 128, 256, 512, 512),
}

DOWNLOADS = {
    "alex": (
        "alexnet-owt-7be5be79.pth (torchvision's ImageNet AlexNet, "
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
        "alex.pth (the lpips package's lpips/weights/v0.1/alex.pth, "
        "https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1)",
    ),
    "vgg": (
        "vgg16-397923af.pth (torchvision's ImageNet VGG16, "
        "https://download.pytorch.org/models/vgg16-397923af.pth)",
        "vgg.pth (the lpips package's lpips/weights/v0.1/vgg.pth, "
        "https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1)",
    ),
}


def backbone_features(net: Backbone) -> nn.Sequential:
    """torchvision's `alexnet().features` / `vgg16().features`: same indices, random weights."""
    layers: list[nn.Module] = []
    if net == "alex":
        convs = iter(_ALEX_CONVS)
        for kind in _ALEX_LAYOUT:
            if kind == "C":
                cin, cout, k, s, p = next(convs)
                layers.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
            elif kind == "R":
                layers.append(nn.ReLU(inplace=True))
            else:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    elif net == "vgg":
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
    else:
        raise AA2InputError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}.")
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """The LPIPS distance with an AlexNet or VGG16 trunk and v0.1 linear heads.

    `features` holds torchvision's layer indices (state-dict keys `features.0.weight`, ...);
    `heads[k]` is the 1×1 convolution `lin{k}` of the lpips package (no bias, one output).
    Build it with `load_lpips`; a bare instance has random weights.
    """

    def __init__(self, net: Backbone = "alex", *, rescale: bool = True):
        super().__init__()
        self.net = net
        self.rescale = rescale
        full = backbone_features(net)
        # the trunk after the last tap is never used (AlexNet's last pool, VGG's last pool)
        self.features = nn.Sequential(*list(full.children())[: TAPS[net][-1] + 1])
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image pair: `x`, `y` `[..., 3, H, W]` → `[...]`.

        Inputs are 0..1 when `rescale` is True; with `rescale=False` they are fed as given
        (−1..1 is what LPIPS was trained for; DisCo fed 0..1 here).
        """
        if x.shape != y.shape or x.ndim < 4 or x.shape[-3] != 3:
            raise AA2InputError(
                f"LPIPS compares two images of one shape [..., 3, H, W]; got {tuple(x.shape)} "
                f"and {tuple(y.shape)}."
            )
        lead = x.shape[:-3]
        dtype = self.shift.dtype
        x = rearrange(x, "... c h w -> (...) c h w").to(dtype)
        y = rearrange(y, "... c h w -> (...) c h w").to(dtype)
        if self.rescale:
            x, y = 2 * x - 1, 2 * y - 1
        # one trunk pass over both images: halves the Python overhead, same arithmetic per image
        h = (torch.cat([x, y]) - self.shift) / self.scale
        taps = set(TAPS[self.net])
        total = x.new_zeros(x.shape[0])
        k = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in taps:
                fx, fy = h.chunk(2)
                fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + _EPS)
                fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + _EPS)
                total = total + self.heads[k]((fx - fy) ** 2).mean(dim=(1, 2, 3))
                k += 1
        return total.reshape(lead)


def load_lpips(
    backbone_path: str | Path,
    linear_path: str | Path,
    *,
    net: Backbone | None = None,
    rescale: bool = True,
) -> LPIPS:
    """Build `LPIPS` from a torchvision backbone file and an lpips linear-layer file.

    Args:
        backbone_path: torchvision AlexNet/VGG16 weights (whole model or `.features`).
        linear_path: the lpips package's v0.1 `alex.pth` / `vgg.pth` (or a safetensors copy).
        net: "alex" or "vgg"; inferred from the backbone's first convolution when None.
        rescale: map 0..1 inputs to −1..1 (True, the metric as defined) or not (DisCo's script).

    Raises:
        AA2WeightsError: a file is missing, unreadable, or not the expected network.
    """
    backbone = _read_state_dict(backbone_path, "LPIPS backbone", _download_hint(net, 0))
    linear = _read_state_dict(linear_path, "LPIPS linear layers", _download_hint(net, 1))

    # torchvision's whole-model file: keep `features.*`, drop the classifier
    if any(k.startswith("features.") for k in backbone):
        backbone = {
            k[len("features.") :]: v for k, v in backbone.items() if k.startswith("features.")
        }
    first = backbone.get("0.weight")
    if first is None or first.ndim != 4:
        raise AA2WeightsError(
            f"{backbone_path} is not a torchvision AlexNet/VGG16 state dict (no '0.weight' or "
            f"'features.0.weight' convolution). Expected {DOWNLOADS['alex'][0]} "
            f"or {DOWNLOADS['vgg'][0]}."
        )
    found: Backbone = "alex" if first.shape[-1] == 11 else "vgg"
    if net is not None and net != found:
        raise AA2WeightsError(
            f"{backbone_path} holds a {found} backbone but net={net!r} was asked for: pass the "
            f"matching file ({DOWNLOADS[net][0]})."
        )
    net = found

    heads = {}
    for key, value in linear.items():
        m = re.fullmatch(r"lin(\d)\.model\.[01]\.weight", key)
        if m:
            heads[f"heads.{m.group(1)}.weight"] = value
    model = LPIPS(net, rescale=rescale)
    # layers past the last tap (the final max-pool has no weights anyway) are not part of LPIPS
    state = {
        f"features.{k}": v
        for k, v in backbone.items()
        if not k.split(".")[0].isdigit() or int(k.split(".")[0]) <= TAPS[net][-1]
    }
    state.update(heads)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise AA2WeightsError(
            f"LPIPS ({net}) weights do not fit: {err}. Expected the backbone {DOWNLOADS[net][0]} "
            f"and the linear layers {DOWNLOADS[net][1]}."
        ) from None
    return model


def _download_hint(net: Backbone | None, which: int) -> str:
    names = [DOWNLOADS[n][which] for n in ((net,) if net else ("alex", "vgg"))]
    return " or ".join(names)


def _read_state_dict(path: str | Path, what: str, hint: str) -> dict[str, torch.Tensor]:
    """A tensor dict from `.safetensors` or a weights-only pickle, mapped to CPU."""
    path = Path(path)
    if not path.is_file():
        raise AA2WeightsError(
            f"{what} file not found: {path}. Download {hint} and pass its path "
            "(nothing is downloaded at run time)."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            # the lpips package saved its lin weights from CUDA tensors: map them to the CPU
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one message for the user
        raise AA2WeightsError(
            f"{what} file {path} could not be read ({err}). Expected {hint}."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AA2WeightsError(
            f"{what} file {path} is not a state dict of tensors. Expected {hint}."
        )
    return state
