"""Where a build's inputs come from: checkpoints, and calibration and validation frames.

``resolve_checkpoints`` is the one resolution of checkpoint options (build and verify).
Frames from videos are decoded with ``uvq_int8.runtime.decode.uvq_frames``, the frames
``uvq`` would score; frames are kept on disk, one .npy each, so memory holds one at a time.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from uvq_int8.backends import NETS
from uvq_int8.convert.options import BuildError, BuildOptions, BuildPlan, FrameSource
from uvq_int8.errors import VideoError
from uvq_int8.util import sha256_file


CHECKPOINT_NAMES = {net: f"{net}_net.pth" for net in NETS}


UVQ_ROOT_CHECKPOINTS = Path("uvq1p5_pytorch") / "checkpoints"


UVQ_ROOT_MODELS = Path("models") / "tflite_models" / "uvq1.5"


def resolve_checkpoints(uvq_root: str | Path | None = None,
                        checkpoints: str | Path | None = None,
                        content: str | Path | None = None,
                        distortion: str | Path | None = None,
                        aggregation: str | Path | None = None) -> dict[str, Path]:
    """Checkpoint path per net: per-net paths override --checkpoints/--uvq-root.

    The one resolution of checkpoint options, for build and verify alike: --uvq-root
    and --checkpoints together are an error, and every net must get a path.
    """
    if uvq_root and checkpoints:
        raise BuildError("give --uvq-root or --checkpoints, not both")
    base: Path | None = None
    if uvq_root:
        root = Path(uvq_root).expanduser()
        if not root.is_dir():
            raise BuildError(f"--uvq-root {root} is not a directory (expected a clone of "
                             f"google/uvq holding {UVQ_ROOT_CHECKPOINTS}/)")
        base = root / UVQ_ROOT_CHECKPOINTS
    elif checkpoints:
        base = Path(checkpoints).expanduser()
        if not base.is_dir():
            raise BuildError(f"--checkpoints {base} is not a directory")
    given = {"content": content, "distortion": distortion, "aggregation": aggregation}
    paths: dict[str, Path] = {}
    for net in NETS:
        if given[net]:
            paths[net] = Path(given[net]).expanduser()
        elif base is not None:
            paths[net] = base / CHECKPOINT_NAMES[net]
    missing = [net for net in NETS if net not in paths]
    if missing:
        raise BuildError(f"no {missing[0]} checkpoint given (nets without one: "
                         f"{', '.join(missing)}): use --uvq-root DIR, --checkpoints DIR or "
                         f"--content/--distortion/--aggregation PATH")
    return paths


def default_out_dir(uvq_root: str | Path | None = None) -> Path:
    """The fork's model directory inside --uvq-root, else the configured model directory.

    Without --uvq-root the build writes where ``uvq`` will look (UVQ_MODEL_DIR, the
    config file, else the per-user data directory), so the two never disagree.
    """
    if uvq_root:
        return Path(uvq_root).expanduser() / UVQ_ROOT_MODELS
    from uvq_int8.config import resolve

    return resolve().model_dir.value


def calibration_description(options: BuildOptions) -> dict[str, Any]:
    if (not options.calibration_videos and options.frame_source is None
            and options.calibration_content == "natural"):
        from uvq_int8.convert import natural

        return natural.description("calibration", options.calibration_frames)
    return _frames_description(options.calibration_videos, options.calibration_frames,
                               options.frame_source is not None, options.frame_source_name,
                               "uvq_int8.synthetic.calibration_frames")


def _search_videos(options: BuildOptions) -> tuple[list[Path], list[Path]]:
    """Validation videos split by video: 1st, 3rd, ... search; 2nd, 4th, ... confirmation
    (one video: the search only; confirmation then uses the natural clips)."""
    paths = [Path(v).expanduser() for v in options.validation_videos]
    if len(paths) < 2:
        return paths, []
    return paths[0::2], paths[1::2]


def validation_description(options: BuildOptions) -> dict[str, Any]:
    """The search frames (natural clips by default) and the confirmation frames."""
    from uvq_int8.convert import natural

    search_videos, confirm_videos = _search_videos(options)
    if search_videos or options.validation_source is not None:
        out = _frames_description(search_videos, options.validation_frames,
                                  options.validation_source is not None,
                                  options.validation_source_name, "")
    else:
        out = natural.description("search", options.validation_frames)
    if confirm_videos:
        out["confirmation"] = _frames_description(confirm_videos, options.confirmation_frames,
                                                  False, "", "")
    else:
        out["confirmation"] = natural.description("confirmation", options.confirmation_frames)
    out["fraction"] = options.promise_fraction
    return out


def _frames_description(videos: Sequence[Path], n: int, custom: bool, custom_name: str,
                        generator: str) -> dict[str, Any]:
    """What the manifest records about a frame source (a file is rebuilt when it changes)."""
    if videos:
        paths = [Path(v).expanduser() for v in videos]
        return {"source": "videos", "frames": n, "fps": 1,
                "videos": [{"name": p.name, "sha256": sha256_file(p)} for p in paths]}
    if custom:
        return {"source": custom_name, "frames": n}
    return {"source": "synthetic", "frames": n, "generator": generator}


class _FrameStore:
    """Calibration frames kept on disk, one .npy each, so memory holds one at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: list[Path] = []

    def add(self, frame) -> None:
        import numpy as np

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise BuildError(f"calibration frames must be uint8 [H,W,3], got {frame.dtype} "
                             f"{list(frame.shape)}")
        path = self.directory / f"frame{len(self.paths):04d}.npy"
        np.save(path, frame)
        self.paths.append(path)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Any]:
        import numpy as np

        for path in self.paths:
            yield np.load(path)


def _decode_videos(videos: Sequence[Path], n: int, store: _FrameStore) -> list[dict[str, Any]]:
    """Up to ``n`` 1-fps frames from the start of each video, shared out evenly."""
    try:
        from uvq_int8.runtime import decode
    except ImportError:
        raise BuildError("decoding calibration videos needs uvq_int8.runtime.decode, which is not "
                         "available in this install") from None
    used = []
    for i, path in enumerate(videos):
        path = Path(path).expanduser()
        quota = math.ceil((n - len(store)) / (len(videos) - i))
        taken = 0
        if quota > 0:
            frames = decode.uvq_frames(path, fps=1)
            try:
                for frame in frames:
                    if not frame.any():
                        continue  # upstream pads a short decode with black frames
                    store.add(frame)
                    taken += 1
                    if taken >= quota:
                        break
            finally:
                close = getattr(frames, "close", None)
                if close:
                    close()
        used.append({"path": str(path.resolve()), "frames": taken})
    if not len(store):
        raise VideoError("no frames could be decoded from the calibration videos: "
                         + ", ".join(str(v) for v in videos))
    return used


def _frame_source(options: BuildOptions) -> FrameSource | None:
    """The calibration frame generator, resolved before any conversion starts; None for the
    natural clips, which ``FrameSources.calibration_store`` makes itself (to record them)."""
    if options.frame_source is not None:
        return options.frame_source
    if options.calibration_content == "natural":
        return None
    try:
        from uvq_int8.synthetic import calibration_frames
    except ImportError as exc:
        raise BuildError(f"the built-in calibration frames are not available ({exc}); "
                         f"give --calibration-videos") from None
    return calibration_frames


class FrameSources:
    """A build's calibration and validation frames, resolved and decoded once.

    ``prepare`` decodes calibration and validation videos before any conversion, so a
    broken video stops the build before its slow part; ``record`` is what the manifest
    keeps about the calibration frames.
    """

    def __init__(self, plan: BuildPlan, tmp: Path) -> None:
        self.plan = plan
        self.options = plan.options
        self.tmp = tmp
        self.store: _FrameStore | None = None
        self.source: FrameSource | None = None
        self.record: dict[str, Any] | None = None
        self._validation: list[Any] | None = None  # held-out frames of the auto search
        self.content_basis: dict[str, Any] = {}   # what the search/confirmation frames are
        self._confirmation: tuple[list[Any], int, str] | None = None

    def prepare(self) -> None:
        options = self.options
        if self.plan.auto_jobs and options.validation_videos:
            self.validation()
            if _search_videos(options)[1]:
                self.confirmation()
        if not any(j.options.get("calibration") for j in self.plan.to_build):
            return
        if not options.calibration_videos:
            self.source = _frame_source(options)
            if self.source is None:  # the natural clips: fail now if they cannot be made
                from uvq_int8.convert import natural

                natural.load_photo(natural.SPLIT_IMAGES["calibration"][0])
            return
        self.store = _FrameStore(self.tmp)
        used = _decode_videos(options.calibration_videos, options.calibration_frames, self.store)
        self.record = {**self.plan.calibration, "videos_used": used,
                       "frames_used": len(self.store)}

    def calibration_store(self) -> _FrameStore:
        if self.store is not None:
            return self.store
        options = self.options
        self.store = _FrameStore(self.tmp)
        source = self.source or _frame_source(options)
        made = None
        if source is None:
            from uvq_int8.convert import natural

            made = natural.make_set("calibration", options.calibration_frames, self.tmp)
            frames: Iterable[Any] = made.frames
        else:
            frames = itertools.islice(source(options.calibration_frames),
                                      options.calibration_frames)
        for frame in frames:
            self.store.add(frame)
        if not len(self.store):
            raise BuildError("the calibration frame source gave no frames")
        self.record = {**(self.plan.calibration or {}), "frames_used": len(self.store)}
        if made is not None:  # which photographs, their licences, the decoded frames' hash
            self.record["natural"] = made.record()
        return self.store

    def record_net(self, net: str, values: dict[str, Any]) -> None:
        """What calibrating one net took, kept in the calibration record."""
        if self.record is None:
            self.record = {}
        self.record.setdefault("nets", {}).setdefault(net, {}).update(values)

    def validation(self) -> list[Any]:
        if self._validation is None:
            self._validation = self._validation_frames()
        return self._validation

    def _validation_frames(self) -> list[Any]:
        """The search frames (recorded in ``self.content_basis["search"]``)."""
        options = self.options
        n = options.validation_frames
        search_videos, _ = _search_videos(options)
        if search_videos:
            frames = self._video_frames(search_videos, n, "validation")
            self.content_basis["search"] = {"source": "videos", "frames": len(frames),
                                            "images": len(search_videos),
                                            "videos": [p.name for p in search_videos]}
            return frames
        if options.validation_source is not None:
            frames = list(itertools.islice(options.validation_source(n), n))
            self.content_basis["search"] = {"source": options.validation_source_name,
                                            "frames": len(frames)}
        else:
            from uvq_int8.convert import natural

            made = natural.make_set("search", n, self.tmp)
            frames = made.frames
            self.content_basis["search"] = made.record()
        if not frames:
            raise BuildError("the validation frame source gave no frames")
        return frames

    def _video_frames(self, videos: Sequence[Path], n: int, name: str) -> list[Any]:
        store = _FrameStore(self.tmp / name)
        store.directory.mkdir(exist_ok=True)
        _decode_videos(videos, n, store)
        return list(store)

    def confirmation(self) -> tuple[list[Any], int, str]:
        """(frames, independent images or videos, what they are) for the promise
        (runtime/promise.py): frames from images or videos the search never saw."""
        if self._confirmation is None:
            self._confirmation = self._confirmation_frames()
        return self._confirmation

    def _confirmation_frames(self) -> tuple[list[Any], int, str]:
        from uvq_int8.runtime.promise import frames_needed

        options = self.options
        _, confirm_videos = _search_videos(options)
        if confirm_videos:
            frames = self._video_frames(confirm_videos, options.confirmation_frames,
                                        "confirmation")
            needed = frames_needed(options.promise_fraction)
            if len(frames) < needed:
                raise VideoError(
                    f"the confirmation videos ({', '.join(p.name for p in confirm_videos)}: "
                    f"the 2nd, 4th, ... --validation-videos) gave {len(frames)} frames at 1 "
                    f"fps; a {options.promise_fraction:.0%} promise needs {needed}: give more "
                    f"or longer videos")
            self.content_basis["confirmation"] = {
                "source": "videos", "frames": len(frames), "images": len(confirm_videos),
                "videos": [p.name for p in confirm_videos]}
            return frames, len(confirm_videos), "your confirmation videos (" + ", ".join(
                p.name for p in confirm_videos) + ")"
        from uvq_int8.convert import natural

        made = natural.make_set("confirmation", options.confirmation_frames, self.tmp)
        self.content_basis["confirmation"] = made.record()
        return (made.frames, len(made.images),
                "natural clips from photographs (" + ", ".join(made.images) + ")")
