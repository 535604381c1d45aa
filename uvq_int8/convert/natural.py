"""Natural-content clips made from photographs, for calibration, the auto search and its
confirmation.

Synthetic patterns put the proxy nets' logits in tanh saturation (-3 to -7), where real
camera content does not go (-0.1 to -2.2), so errors measured on them under-predict real
ones. These clips are made from photographs that scikit-image ships in its wheel (each with
the licence its own docstring states), moved and degraded the ways real video is: pans,
zooms and crops, landscape and portrait, colour and exposure changes, low-resolution sources
scaled up, blur, sensor noise, and real H.264 compression at several qualities. Each clip
is encoded with the ffmpeg command line and decoded exactly as ``uvq`` decodes
(``uvq_int8.runtime.decode.uvq_frames`` at 1 fps, portrait clips transposed).

Images, not frames, are the independent units. Every image belongs to exactly one split:

- ``calibration``: activation ranges for static int8;
- ``search``: the frames the auto search chooses on;
- ``confirmation``: the frames that confirm the chosen configuration once (promise.py);
- ``holdout``: in no split the build uses; tests check the promise on it.

Encoders differ between versions, so a set is identified by the sha256 of its decoded
frames, which the build records.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from uvq_int8.errors import UserError
from uvq_int8.util import sha256_bytes

NATURAL_VERSION = 2  # 2: filters and encoder in two ffmpeg runs (repeatable frames)
SPLITS = ("calibration", "search", "confirmation", "holdout")
SECONDS_PER_CLIP = 2     # 2 frames per clip at uvq's 1 fps
ENCODE_FPS = 6
CRFS = (18, 28, 36, 44)  # x264 qualities: visually clean ... heavy blocking


class NaturalContentError(UserError):
    """The photographs or the encoder needed for the natural clips are missing."""


@dataclass(frozen=True)
class Photo:
    name: str      # skimage.data function
    licence: str   # as stated in that function's docstring (scikit-image's own files)
    colour: bool


# Every photograph scikit-image ships in its wheel (no download) whose docstring states a
# licence; skipped: moon, page, stereo_motorcycle (no licence stated), text, logo, colorwheel
# and the like (not photographs).
PHOTOS = (
    Photo("astronaut", "public domain (NASA; 'released into the public domain')", True),
    Photo("chelsea", "CC0 (photographer Stefan van der Walt)", True),
    Photo("coffee", "CC0 (photographer Rachel Michetti)", True),
    Photo("rocket", "public domain (SpaceX)", True),
    Photo("hubble_deep_field", "public domain (NASA)", True),
    Photo("immunohistochemistry", "no known copyright restrictions (CMMI)", True),
    Photo("retina", "CC0 1.0 (Mikael Haggstrom, Wikimedia Commons)", True),
    Photo("camera", "CC0 (photographer Lav Varshney)", False),
    Photo("coins", "no known copyright restrictions (Brooklyn Museum)", False),
    Photo("clock", "public domain (photographer Stefan van der Walt)", False),
    Photo("grass", "CC0 (DeviantArt linolafett, via scikit-image)", False),
    Photo("gravel", "CC0 (CC0Textures)", False),
    Photo("brick", "CC0 (CC0Textures)", False),
)
# Fixed, by image. Colour and grey photographs in every split; confirmation gets the most,
# since its image count limits the promise.
SPLIT_IMAGES = {
    "calibration": ("coffee", "camera", "gravel"),
    "search": ("astronaut", "hubble_deep_field", "coins"),
    "confirmation": ("chelsea", "rocket", "immunohistochemistry", "clock", "brick"),
    "holdout": ("retina", "grass"),
}
_PHOTOS = {p.name: p for p in PHOTOS}
# (motion, degradation); every image cycles through these, offset by its position.
TREATMENTS = (
    ("pan", "none"), ("zoom", "lowres"), ("crop", "colour"), ("pan", "noise"),
    ("zoom", "blur"), ("crop", "lowres"), ("pan", "colour"), ("zoom", "none"),
)
# Output geometry of the encoded clip (uvq then scales it to 1080p, or transposes portrait).
SIZES = ((1280, 720), (720, 1280), (1920, 1080), (640, 360))


@dataclass(frozen=True)
class ClipSpec:
    image: str
    index: int
    motion: str
    degradation: str
    width: int
    height: int
    crf: int
    strength: float  # 0..1, how strong the degradation or motion is

    @property
    def name(self) -> str:
        return (f"{self.image}-{self.index:02d}-{self.motion}-{self.degradation}-"
                f"{self.width}x{self.height}-crf{self.crf}")


@dataclass
class NaturalSet:
    """Decoded frames of one split, with what they are made of."""

    split: str
    frames: list[np.ndarray]
    frame_images: list[str]           # the photograph behind each frame
    clips: list[ClipSpec]
    sha256: str                       # of the decoded frames, in order
    ffmpeg: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> list[str]:
        return sorted(set(self.frame_images))

    def record(self) -> dict[str, Any]:
        """What the manifest keeps: enough to know what the frames were and redo them."""
        return {"source": "natural", "generator": "uvq_int8.convert.natural",
                "version": NATURAL_VERSION, "split": self.split, "frames": len(self.frames),
                "images": [{"name": n, "licence": _PHOTOS[n].licence,
                            "source": f"skimage.data.{n}"} for n in self.images],
                "clips": len(self.clips), "decoded_sha256": self.sha256, "ffmpeg": self.ffmpeg,
                "clip_specs": [c.name for c in self.clips]}


def description(split: str, frames: int) -> dict[str, Any]:
    """The inputs that decide a split's frames (for a build's recipe options)."""
    return {"source": "natural", "generator": "uvq_int8.convert.natural", "version": NATURAL_VERSION,
            "split": split, "frames": frames, "images": list(SPLIT_IMAGES[split])}


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 photograph from skimage.data (grey ones as three equal channels)."""
    if name not in _PHOTOS:
        raise NaturalContentError(f"unknown photograph {name!r}")
    try:
        import skimage.data
    except ImportError:
        raise NaturalContentError("the natural clips need scikit-image: "
                                  "pip install 'uvq-int8[build]'") from None
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def clip_specs(split: str, frames: int) -> list[ClipSpec]:
    """Clips for ``frames`` frames of ``split``, the split's images taken in turn."""
    if split not in SPLIT_IMAGES:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    images = SPLIT_IMAGES[split]
    specs = []
    for i in range(math.ceil(frames / SECONDS_PER_CLIP)):
        position, round_ = i % len(images), i // len(images)
        image = images[position]
        seed = int(sha256_bytes(f"{image}/{round_}".encode())[:8], 16)
        strength = round(float(np.random.default_rng(seed).uniform(0.3, 1.0)), 3)
        motion, degradation = TREATMENTS[(round_ + position) % len(TREATMENTS)]
        width, height = SIZES[(round_ + 2 * position) % len(SIZES)]
        specs.append(ClipSpec(image, round_, motion, degradation, width, height,
                              CRFS[(round_ + 3 * position) % len(CRFS)], strength))
    return specs


def _filters(spec: ClipSpec) -> str:
    w, h, s = spec.width, spec.height, spec.strength
    fill = f"scale={w * 3 // 2}:{h * 3 // 2}:force_original_aspect_ratio=increase"
    if spec.motion == "pan":  # the window sweeps across the (enlarged) photograph
        chain = [fill, f"crop={w}:{h}:x='(iw-ow)*t/{SECONDS_PER_CLIP}'"
                       f":y='(ih-oh)*(0.5+0.4*sin(2*t))'"]
    elif spec.motion == "zoom":  # a steady zoom into the centre
        rate = 0.01 + 0.03 * s
        chain = [f"scale={w * 2}:{h * 2}:force_original_aspect_ratio=increase",
                 f"crop={w * 2}:{h * 2}",
                 f"zoompan=z='1+{rate:.4f}*on':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
                 f":d=1:s={w}x{h}:fps={ENCODE_FPS}"]
    else:  # an off-centre crop of part of the photograph, held still
        chain = [f"crop=iw*0.55:ih*0.55:iw*{0.1 + 0.3 * s:.3f}:ih*{0.35 - 0.3 * s:.3f}",
                 f"scale={w}:{h}:force_original_aspect_ratio=increase", f"crop={w}:{h}"]
    if spec.degradation == "colour":
        chain.append(f"eq=contrast={0.8 + 0.5 * s:.3f}:brightness={0.12 * s - 0.06:.3f}"
                     f":saturation={0.5 + s:.3f}:gamma={0.7 + 0.6 * s:.3f}")
    elif spec.degradation == "blur":
        chain.append(f"gblur=sigma={1 + 3 * s:.3f}")
    elif spec.degradation == "noise":
        chain.append(f"noise=alls={int(6 + 18 * s)}:allf=t")
    elif spec.degradation == "lowres":
        factor = 3 + int(3 * s)
        chain += [f"scale={w // factor // 2 * 2}:{h // factor // 2 * 2}:flags=area",
                  f"scale={w}:{h}:flags=bicubic"]
    chain += ["setsar=1", "format=yuv420p"]
    return ",".join(chain)


def write_ppm(path: Path, image: np.ndarray) -> None:
    """An RGB uint8 image as a binary PPM (what ffmpeg reads the photographs from)."""
    h, w = image.shape[:2]
    path.write_bytes(f"P6 {w} {h} 255\n".encode() + image.tobytes())


def _run_ffmpeg(argv: list[str], spec: ClipSpec) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    except FileNotFoundError:
        raise NaturalContentError(f"ffmpeg not found ({argv[0]}); the natural clips are "
                                  f"encoded with it") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise NaturalContentError(f"encoding natural clip {spec.name} failed: {tail[0]}")


def encode_clip(spec: ClipSpec, out: Path, ffmpeg: str = "ffmpeg",
                photo: Path | None = None) -> Path:
    """Encode one clip with the ffmpeg CLI (H.264, B-frames, yuv420p).

    Two commands: the filters write raw frames to a file, then x264 encodes that file. In
    one command the same filters and encoder gave different bitstreams from run to run
    (ffmpeg 5.1; from raw frames x264 is repeatable), and the promise's frames must be
    the same on every build.
    """
    quiet = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y"]
    with tempfile.TemporaryDirectory(prefix="uvq-int8-photo-") as tmp:
        if photo is None:
            photo = Path(tmp) / f"{spec.image}.ppm"
            write_ppm(photo, load_photo(spec.image))
        raw = Path(tmp) / "frames.yuv"
        _run_ffmpeg([*quiet, "-loop", "1", "-framerate", str(ENCODE_FPS), "-i", str(photo),
                     "-t", str(SECONDS_PER_CLIP), "-vf", _filters(spec), "-f", "rawvideo",
                     "-pix_fmt", "yuv420p", str(raw)], spec)
        _run_ffmpeg([*quiet, "-f", "rawvideo", "-pix_fmt", "yuv420p",
                     "-s", f"{spec.width}x{spec.height}", "-framerate", str(ENCODE_FPS),
                     "-i", str(raw), "-c:v", "libx264", "-preset", "veryfast",
                     "-crf", str(spec.crf), "-bf", "2", "-threads", "1", "-an", str(out)], spec)
    if not out.is_file():
        raise NaturalContentError(f"encoding natural clip {spec.name} failed: no output")
    return out


def decode_clip(path: Path, ffmpeg: str = "ffmpeg") -> Iterator[np.ndarray]:
    """The clip's frames exactly as ``uvq`` decodes them."""
    from uvq_int8.runtime import decode

    yield from decode.uvq_frames(path, fps=1, ffmpeg=ffmpeg)


def make_set(split: str, frames: int, workdir: Path | None = None,
             ffmpeg: str = "ffmpeg") -> NaturalSet:
    """``frames`` decoded frames of ``split`` (the last clip may give one more than asked,
    which is dropped)."""
    from uvq_int8.runtime.decode import verified

    if frames < 1:
        raise ValueError(f"a natural set needs at least one frame, got {frames}")
    specs = clip_specs(split, frames)
    digest = hashlib.sha256()
    out: list[np.ndarray] = []
    owners: list[str] = []
    used: list[ClipSpec] = []
    with tempfile.TemporaryDirectory(prefix="uvq-int8-natural-", dir=workdir) as tmp:
        photos: dict[str, Path] = {}
        for spec in specs:
            if len(out) >= frames:
                break
            if spec.image not in photos:
                photos[spec.image] = Path(tmp) / f"{spec.image}.ppm"
                write_ppm(photos[spec.image], load_photo(spec.image))
            clip = encode_clip(spec, Path(tmp) / f"{spec.name}.mp4", ffmpeg, photos[spec.image])
            used.append(spec)
            for frame in decode_clip(clip, ffmpeg):
                if len(out) >= frames:
                    break
                digest.update(np.ascontiguousarray(frame).tobytes())
                out.append(frame)
                owners.append(spec.image)
            clip.unlink()
    return NaturalSet(split, out, owners, used, digest.hexdigest(), verified.ffmpeg_version(ffmpeg))


def frame_source(split: str = "calibration"):
    """A build FrameSource (n -> frames) over one split."""
    def source(n: int) -> Iterator[np.ndarray]:
        yield from make_set(split, n).frames
    return source


def licences() -> list[dict[str, Any]]:
    """Every photograph used, with its split and licence."""
    split_of = {name: split for split, names in SPLIT_IMAGES.items() for name in names}
    return [{**asdict(p), "split": split_of.get(p.name)} for p in PHOTOS]


def check_splits(splits: dict[str, Sequence[str]] = SPLIT_IMAGES) -> None:
    """Every photograph in exactly one split (the promise rests on it)."""
    seen: dict[str, str] = {}
    for split, names in splits.items():
        for name in names:
            if name in seen:
                raise ValueError(f"{name} is in both {seen[name]} and {split}")
            if name not in _PHOTOS:
                raise ValueError(f"{name} is not a known photograph")
            seen[name] = split

