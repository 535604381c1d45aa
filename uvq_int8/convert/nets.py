"""UVQ 1.5 networks in PyTorch, weight-compatible with the official checkpoints.

The modules keep upstream's parameter names (so ``state_dict()`` matches the
official ``content_net.pth``/``distortion_net.pth``/``aggregation_net.pth`` and
loads with ``strict=True``) but are written for export: fixed shapes, 4-D ops
only, TensorFlow-style "same" padding computed once from the static input size.

The ``*Export`` wrappers take and return NHWC tensors with the shapes of the
fork's TFLite files. Importing this module imports torch; the runtime never does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uvq_int8.runtime import frames as _frames
from uvq_int8.errors import UserError

BN_EPS = 1e-3

# (expand_ratio, out_channels, kernel, stride) of the 16 MBConv blocks of
# EfficientNet-B0, as both UVQ backbones use them.
MBCONV_PLAN: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 3, 1),
    (6, 24, 3, 2),
    (6, 24, 3, 1),
    (6, 40, 5, 2),
    (6, 40, 5, 1),
    (6, 80, 3, 2),
    (6, 80, 3, 1),
    (6, 80, 3, 1),
    (6, 112, 5, 1),
    (6, 112, 5, 1),
    (6, 112, 5, 1),
    (6, 192, 5, 2),
    (6, 192, 5, 1),
    (6, 192, 5, 1),
    (6, 192, 5, 1),
    (6, 320, 3, 1),
)
FEATURE_CHANNELS = 128


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for one spatial axis."""
    total = max((size - 1) // stride * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """Conv2d with TF "same" padding; parameters live in ``.conv`` like upstream."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=bias)
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[2], self.kernel, self.stride)
        left, right = same_padding(x.shape[3], self.kernel, self.stride)
        if top == bottom and left == right:
            # Symmetric padding folds into the convolution: one op in the graph.
            return F.conv2d(x, self.conv.weight, self.conv.bias, self.stride,
                            (top, left), 1, self.conv.groups)
        x = F.pad(x, (left, right, top, bottom))
        return self.conv(x)


class ConvBNAct(nn.Sequential):
    """[SameConv, BatchNorm, activation?] with upstream's Sequential indices."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            SameConv(cin, cout, kernel, stride, groups),
            nn.BatchNorm2d(cout, eps=BN_EPS),
        ]
        if act:
            layers.append(nn.SiLU())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(s))))
        return x * s


class MBConv(nn.Module):
    """Inverted residual block (stochastic depth is the identity at inference)."""

    def __init__(self, cin: int, expand: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(ConvBNAct(cin, mid, 1))
        layers.append(ConvBNAct(mid, mid, kernel, stride, groups=mid))
        layers.append(SqueezeExcite(mid, max(1, cin // 4)))
        layers.append(ConvBNAct(mid, cout, 1, act=False))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.residual else y


def _backbone() -> nn.Sequential:
    layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2)]
    cin = 32
    for expand, cout, kernel, stride in MBCONV_PLAN:
        layers.append(MBConv(cin, expand, cout, kernel, stride))
        cin = cout
    layers.append(SameConv(cin, FEATURE_CHANNELS, 2, 1))
    return nn.Sequential(*layers)


class ContentNetCore(nn.Module):
    """NCHW in ([N,3,H,W] in [-1,1]), NCHW features out ([N,128,8,8])."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:] != (_frames.CONTENT_SIZE, _frames.CONTENT_SIZE):
            x = F.interpolate(x, size=(_frames.CONTENT_SIZE, _frames.CONTENT_SIZE),
                              mode="bilinear", align_corners=False)
        return self.features(x)


class DistortionNetCore(nn.Module):
    """NCHW patches in ([N,3,360,640]), NHWC patch features out ([N,8,8,128])."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _backbone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.max_pool2d(x, kernel_size=(5, 13), stride=1)
        return x.permute(0, 2, 3, 1)


class AggregationNetCore(nn.Module):
    """NCHW content [N,128,8,8] + distortion [N,128,24,24] -> pre-tanh logit [N,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2 * FEATURE_CHANNELS, 256, 1)
        self.linear1 = nn.Linear(256, 1)
        self.ln1 = nn.LayerNorm([256, 4, 4], eps=1e-3)

    def forward(self, content: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
        # Upstream resizes both inputs to 4x4 with AdaptiveAvgPool2d; for the fixed
        # 8x8 and 24x24 inputs that is exactly a plain average pool.
        c = F.avg_pool2d(content, content.shape[2] // 4)
        d = F.avg_pool2d(distortion, distortion.shape[2] // 4)
        x = torch.cat([c, d], dim=1)
        x = F.relu(self.ln1(self.conv1(x)))
        x = F.max_pool2d(x, 4)
        return self.linear1(x.flatten(1))


def logit_to_score(logit: torch.Tensor) -> torch.Tensor:
    return torch.tanh(logit) * 2 + 3


def tile_patch_features(patch_features: torch.Tensor) -> torch.Tensor:
    """[9k,8,8,C] NHWC patch features -> [k,24,24,C], rows of patches first.

    Written with 4-D slices and concatenations only, so the TFLite graph needs
    no 5-D reshape or gather.
    """
    n = _frames.PATCH_GRID
    frames = []
    for f in range(patch_features.shape[0] // (n * n)):
        rows = []
        for r in range(n):
            start = f * n * n + r * n
            row = [patch_features[start + c:start + c + 1] for c in range(n)]
            rows.append(torch.cat(row, dim=2))
        frames.append(torch.cat(rows, dim=1))
    return torch.cat(frames, dim=0)


class ContentNetExport(nn.Module):
    """[1,256,256,3] NHWC -> [1,8,8,128] NHWC."""

    input_shapes = ((1, _frames.CONTENT_SIZE, _frames.CONTENT_SIZE, 3),)

    def __init__(self, core: ContentNetCore) -> None:
        super().__init__()
        self.core = core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core.features(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class DistortionNetExport(nn.Module):
    """[9,360,640,3] NHWC patches -> [1,24,24,128] NHWC."""

    input_shapes = ((_frames.PATCH_GRID ** 2, _frames.PATCH_HEIGHT, _frames.PATCH_WIDTH, 3),)

    def __init__(self, core: DistortionNetCore) -> None:
        super().__init__()
        self.core = core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tile_patch_features(self.core(x.permute(0, 3, 1, 2)))


class AggregationNetExport(nn.Module):
    """([1,8,8,128], [1,24,24,128]) NHWC -> (score [1,1], logit [1,1]).

    The score comes first so hosts that read output 0 (the fork) get the score
    as before; the logit is exported too because the score saturates in float32.
    """

    input_shapes = ((1, 8, 8, FEATURE_CHANNELS), (1, 24, 24, FEATURE_CHANNELS))

    def __init__(self, core: AggregationNetCore) -> None:
        super().__init__()
        self.core = core

    def forward(self, content: torch.Tensor, distortion: torch.Tensor):
        logit = self.core(content.permute(0, 3, 1, 2), distortion.permute(0, 3, 1, 2))
        return logit_to_score(logit), logit


CORES = {
    "content": ContentNetCore,
    "distortion": DistortionNetCore,
    "aggregation": AggregationNetCore,
}
EXPORTS = {
    "content": ContentNetExport,
    "distortion": DistortionNetExport,
    "aggregation": AggregationNetExport,
}


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or does not fit the net."""


def state_dict_mismatches(model: nn.Module, state: dict, per_kind: int = 3) -> list[str]:
    """The first few missing, unexpected and wrongly shaped keys, with counts."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint shape {list(state[k].shape)}, expected {list(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems: list[str] = []
    for label, items in (("missing key", missing), ("unexpected key", unexpected),
                         ("wrong shape", shapes)):
        problems += [f"{label} {item}" for item in items[:per_kind]]
        if len(items) > per_kind:
            problems.append(f"... {len(items) - per_kind} more {label}s")
    return problems


def load_core(net: str, checkpoint: str | Path) -> nn.Module:
    """Build the core net and load an upstream-format checkpoint strictly."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{net} checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{net} checkpoint {path} could not be read: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{net} checkpoint {path} is not a state dict")
    model = CORES[net]()
    problems = state_dict_mismatches(model, state)
    if problems:
        raise CheckpointError(
            f"{net} checkpoint {path} does not match UVQ 1.5's {net} net: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_module(net: str, core: nn.Module) -> nn.Module:
    return EXPORTS[net](core).eval()


def example_inputs(net: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.rand(shape, generator=gen) * 2 - 1 for shape in EXPORTS[net].input_shapes)


def layout(model: nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).replace("torch.", ""))
            for k, v in model.state_dict().items()]


class UVQ1p5Torch:
    """The whole PyTorch pipeline on [-1,1] NHWC 1080p frames (reference path)."""

    def __init__(self, content: nn.Module, distortion: nn.Module, aggregation: nn.Module) -> None:
        self.content, self.distortion, self.aggregation = content, distortion, aggregation

    @torch.inference_mode()
    def features(self, frames_nhwc: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(frames_nhwc, dtype=torch.float32).permute(0, 3, 1, 2)
        content = self.content(x).permute(0, 2, 3, 1)
        patches = _patches_nchw(x)
        distortion = tile_patch_features(self.distortion(patches))
        return content, distortion

    @torch.inference_mode()
    def logits(self, content: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
        return self.aggregation(torch.as_tensor(content).permute(0, 3, 1, 2),
                                torch.as_tensor(distortion).permute(0, 3, 1, 2))


def _patches_nchw(x: torch.Tensor) -> torch.Tensor:
    """[N,3,1080,1920] -> [9N,3,360,640], row-major patch order like upstream."""
    n, c = x.shape[:2]
    g, ph, pw = _frames.PATCH_GRID, _frames.PATCH_HEIGHT, _frames.PATCH_WIDTH
    x = x.reshape(n, c, g, ph, g, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n * g * g, c, ph, pw)
