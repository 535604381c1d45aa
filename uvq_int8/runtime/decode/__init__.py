"""Decoding: upstream's frames for a video, from one of two decoders.

One request (file, fps, transpose, decoder) is probed once (``probe``), planned once
(``probe.sample_plan``), and handed to a decoder from ``DECODERS``; each decoder takes the
probed request and never probes or plans again. Modules, lowest first:

- ``verified``: what is verified about ffmpeg 5.1 (containers, pixel formats, the scale
  chain), written once;
- ``probe``: ffprobe, the frame plan, the one stats type (``DecodeStats``);
- ``frame_choice``: ffmpeg 5.1's ``-r`` frame choice;
- ``pipe``: the one bounded queue between ffmpeg processes and the nets;
- ``ffmpeg_cli``: upstream's command line (``decoder="ffmpeg"``);
- ``pyav``: packet by packet with PyAV (``decoder="pyav"``, the default), which hands
  over to ``ffmpeg_cli`` where its frames are not known to match.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from uvq_int8 import config as _config
from uvq_int8.errors import VideoError
from uvq_int8.runtime.decode import ffmpeg_cli, pyav
from uvq_int8.runtime.decode import probe as probing
from uvq_int8.runtime.decode.probe import DecodeStats, SamplePlan, VideoInfo

# The decoders by name (``--decoder``, ``UVQ_DECODER``, the config key ``decoder``); both
# give the same frames.
DECODERS = {"pyav": pyav.iter_frames, "ffmpeg": ffmpeg_cli.iter_frames}


def uvq_frames(path: str | Path, fps: Fraction | int | str = 1, transpose: bool | None = None,
               ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe", info: VideoInfo | None = None,
               decode_threads: int | None = None, stats: DecodeStats | None = None,
               decoder: str | None = None, plan: SamplePlan | None = None) -> Iterator[np.ndarray]:
    """The frames ``uvq`` scores for ``path``: the one source of decoded frames.

    ``fps`` is any positive rate (1, 0.5, "1/4": ``probe.parse_fps``) or -1 (every frame).
    Probes the video unless ``info`` is given (an exact frame count for ``fps=-1``) and
    makes upstream's frame plan unless ``plan`` is given (each once per video),
    transposes portrait videos as upstream's batch mode does unless ``transpose`` says
    otherwise, then decodes with ``decoder``: "pyav" (packet by packet) or "ffmpeg" (the
    command line); None takes the configured one (``uvq_int8.config``, default pyav).
    Scoring, build's calibration and validation videos, verify and the benchmarks all
    decode through here, so they all see the same frames.

    ``stats`` (made here when not given) records which decoder ran, the packets it skipped
    and any fallback.
    """
    fps = probing.parse_fps(fps)
    decoder = decoder or _config.resolve().decoder.value
    if decoder not in DECODERS:
        raise VideoError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if info is None:
        info = probing.probe(path, ffprobe=ffprobe, count_frames=(fps == -1))
    if transpose is None:
        transpose = probing.is_portrait(info)
    if stats is None:
        stats = DecodeStats()
    stats.decoder = decoder
    return DECODERS[decoder](path, fps=fps, transpose=transpose, ffmpeg=ffmpeg, info=info,
                             ffprobe=ffprobe, stats=stats, decode_threads=decode_threads,
                             plan=plan)
