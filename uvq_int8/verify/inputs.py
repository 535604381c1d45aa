"""What verify measures on: clips of frames (built-in synthetic, .npz stills, videos
decoded as ``uvq`` decodes them), random inputs, and the PyTorch reference."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from uvq_int8.backends import NETS, model_filename
from uvq_int8.errors import UserError
from uvq_int8.runtime import frames as F
from uvq_int8.runtime.interpreter import EXPECTED_SHAPES
from uvq_int8.util import sha256_file


@dataclass
class Clip:
    """Frames scored together, like one video; each clip gives one point to SRCC/PLCC."""

    name: str
    source: str  # "synthetic", "npz" or "video"
    frames: list[np.ndarray]
    decode_seconds: float = 0.0


def synthetic_clips(n: int) -> list[Clip]:
    """The built-in set: each synthetic frame (clean or degraded) is its own clip."""
    from uvq_int8 import synthetic

    frames = synthetic.validation_frames(n)
    # validation_frames alternates clean (even) and degraded (odd) frames.
    return [Clip(f"synthetic-{i}-{'degraded' if i % 2 else 'clean'}", "synthetic",
                 [np.asarray(f)]) for i, f in enumerate(frames)]


def npz_clips(path: str | Path) -> list[Clip]:
    """Each frame of ``frames_uint8`` in an .npz is its own clip (they are stills)."""
    path = Path(path)
    try:
        with np.load(path) as data:
            frames = np.asarray(data["frames_uint8"])
    except FileNotFoundError:
        raise UserError(f"frames file not found: {path}") from None
    except KeyError:
        raise UserError(f"{path} has no 'frames_uint8' array") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (
            F.FRAME_HEIGHT, F.FRAME_WIDTH, 3):
        raise UserError(f"{path}: frames_uint8 must be uint8 [N,{F.FRAME_HEIGHT},"
                        f"{F.FRAME_WIDTH},3], got {frames.dtype} {list(frames.shape)}")
    return [Clip(f"{path.name}[{i}]", "npz", [frames[i]]) for i in range(len(frames))]


def video_clip(path: str | Path, fps: int = 1, max_frames: int | None = None,
               ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe") -> Clip:
    """Decode a video the way ``uvq`` does (portrait videos transposed)."""
    from uvq_int8.runtime import decode

    name = str(path)
    if not Path(name).is_file():
        raise UserError(f"video not found: {name}")
    started = time.perf_counter()
    decoded = decode.uvq_frames(name, fps=fps, ffmpeg=ffmpeg, ffprobe=ffprobe)
    frames = list(itertools.islice(decoded, max_frames or None))
    decoded.close()
    if not frames:
        raise UserError(f"{name}: no frames decoded")
    return Clip(name, "video", frames, time.perf_counter() - started)


def random_inputs(net: str, seed: int) -> tuple[np.ndarray, ...]:
    """Standard-normal inputs with the net's shapes, as the old guide drew them."""
    rng = np.random.default_rng(seed)
    shapes = EXPECTED_SHAPES[net][0]
    return tuple(rng.standard_normal(shape).astype(np.float32) for shape in shapes)


class TorchReference:
    """The PyTorch nets from checkpoints; same NHWC inputs as the TFLite files."""

    def __init__(self, checkpoints: Mapping[str, Path], threads: int) -> None:
        import torch

        from uvq_int8.convert import nets

        torch.set_num_threads(threads)
        self._torch = torch
        self.checkpoints = {net: Path(checkpoints[net]) for net in NETS}
        cores = {net: nets.load_core(net, self.checkpoints[net]) for net in NETS}
        self._modules = {net: nets.export_module(net, cores[net]) for net in NETS}
        self._pipeline = nets.UVQ1p5Torch(cores["content"], cores["distortion"],
                                          cores["aggregation"])

    def run(self, net: str, *arrays: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self._modules[net](*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        outs = out if isinstance(out, tuple) else (out,)
        return [o.numpy().astype(np.float32) for o in outs]

    def frame(self, frame_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Upstream's pipeline on one frame: (content, distortion, logit).

        ContentNet resizes in torch here, so a fault in our numpy resize would show.
        """
        unit = F.to_unit_range(frame_uint8)[None]
        content, distortion = self._pipeline.features(unit)
        logit = float(self._pipeline.logits(content, distortion).reshape(-1)[0])
        return content.numpy(), distortion.numpy(), logit


def checkpoint_paths(checkpoints: str | Path | None = None, uvq_root: str | Path | None = None,
                     content: str | Path | None = None, distortion: str | Path | None = None,
                     aggregation: str | Path | None = None) -> dict[str, Path] | None:
    """The three checkpoint paths from the options (build's rules), or None if none given."""
    if not any((checkpoints, uvq_root, content, distortion, aggregation)):
        return None
    from uvq_int8.convert import resolve_checkpoints

    return resolve_checkpoints(uvq_root, checkpoints, content, distortion, aggregation)


def manifest_checkpoints(model_dir: str | Path) -> tuple[dict[str, Path] | None, str]:
    """The checkpoints float32 was built from, per manifest.json, if they are still there.

    Returns (paths, "") or (None, why not). A checkpoint whose sha256 no longer matches
    the manifest is not used: the comparison would be against other weights.
    """
    entries = manifest_file_entries(Path(model_dir).expanduser())
    if not entries:
        return None, "no checkpoints given and no manifest.json naming them"
    paths = {}
    for net in NETS:
        ckpt = (entries.get(model_filename(net)) or {}).get("checkpoint") or {}
        path = Path(ckpt["path"]) if ckpt.get("path") else None
        if path is None or not path.is_file():
            return None, f"the {net} checkpoint recorded in manifest.json is not there ({path})"
        if ckpt.get("sha256") and sha256_file(path) != ckpt["sha256"]:
            return None, f"{path} changed since the build (sha256 differs from manifest.json)"
        paths[net] = path
    return paths, ""


def describe_inputs(clips: Sequence[Clip]) -> str:
    counts: dict[str, tuple[int, int]] = {}
    for c in clips:
        n_clips, n_frames = counts.get(c.source, (0, 0))
        counts[c.source] = (n_clips + 1, n_frames + len(c.frames))
    parts = []
    for source, (n_clips, n_frames) in counts.items():
        if source == "video":
            parts.append(f"{n_frames} frames of {n_clips} video(s)")
        else:
            parts.append(f"{n_frames} {source} 1080p frame(s)")
    return ", ".join(parts)


def unique_clip_names(clips: Sequence[Clip]) -> list[Clip]:
    seen: dict[str, int] = {}
    out = []
    for clip in clips:
        n = seen.get(clip.name, 0) + 1
        seen[clip.name] = n
        out.append(clip if n == 1 else Clip(f"{clip.name}#{n}", clip.source, clip.frames,
                                            clip.decode_seconds))
    return out


def manifest_file_entries(model_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's file entries; {} when it is missing or unreadable (load_models
    reports an unreadable manifest itself)."""
    from uvq_int8.runtime import manifest as mf

    try:
        return mf.entries(model_dir) or {}
    except mf.ManifestError:
        return {}
