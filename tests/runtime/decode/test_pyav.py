"""The PyAV packet-level decoder gives the ffmpeg command line's frames, byte for byte.

One module-scoped fixture makes a matrix of small clips with the ffmpeg CLI and decodes
each with both decoders; the tests then check every scored frame (max pixel difference
0), which path ran, and that packets were skipped where they should be.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from uvq_int8.runtime.decode import ffmpeg_cli, pyav
from uvq_int8.runtime.decode import probe as probing

pytestmark = [pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                 reason="ffmpeg/ffprobe not installed"),
              # The clip matrix takes seconds; a stuck decoder fails here, not the run.
              pytest.mark.timeout(600)]
av = pytest.importorskip("av")

SRC = "testsrc2=size=192x108:rate=30:duration=4"
X265 = "log-level=error:bframes=4:b-pyramid=1"
# name: (ffmpeg arguments after -y, output suffix, fps)
CLIPS = {
    "h264_bpyramid": (["-f", "lavfi", "-i", SRC, "-c:v", "libx264", "-preset", "medium",
                       "-bf", "3", "-x264-params", "b-pyramid=normal"], ".mp4", 1),
    "hevc": (["-f", "lavfi", "-i", SRC, "-c:v", "libx265", "-x265-params", X265], ".mp4", 1),
    "hevc_mkv": (["-f", "lavfi", "-i", SRC, "-c:v", "libx265", "-x265-params", X265], ".mkv", 1),
    "vp9": (["-f", "lavfi", "-i", SRC, "-c:v", "libvpx-vp9", "-b:v", "200k"], ".webm", 1),
    "portrait_25fps": (["-f", "lavfi", "-i", "testsrc2=size=108x192:rate=25:duration=3",
                        "-c:v", "libx264"], ".mp4", 1),
    # A display matrix on a copy of the first clip (made first).
    "rotation_90": (["-i", "{first}", "-c", "copy", "-metadata:s:v:0", "rotate=90"], ".mp4", 1),
    "rotation_270": (["-i", "{first}", "-c", "copy", "-metadata:s:v:0", "rotate=270"], ".mp4",
                     1),
    "rotation_180": (["-i", "{first}", "-c", "copy", "-metadata:s:v:0", "rotate=180"], ".mp4",
                     1),
    "odd_size_29_97_yuv444p": (["-f", "lavfi", "-i",
                                "testsrc2=size=191x107:rate=30000/1001:duration=4",
                                "-c:v", "libx264", "-pix_fmt", "yuv444p"], ".mp4", 1),
    "vfr": (["-f", "lavfi", "-i", SRC, "-vf", "select='not(eq(mod(n\\,12)\\,5))'",
             "-fps_mode", "vfr", "-c:v", "libx264"], ".mp4", 1),
    "full_range_bt601": (["-f", "lavfi", "-i", SRC, "-c:v", "libx264", "-pix_fmt", "yuvj420p",
                          "-colorspace", "smpte170m", "-color_primaries", "smpte170m",
                          "-color_trc", "smpte170m"], ".mp4", 1),
    "bt709_10bit": (["-f", "lavfi", "-i", SRC, "-c:v", "libx264", "-pix_fmt", "yuv420p10le",
                     "-colorspace", "bt709", "-color_primaries", "bt709",
                     "-color_trc", "bt709"], ".mp4", 1),
    "with_audio": (["-f", "lavfi", "-i", SRC, "-f", "lavfi", "-i", "sine=duration=4",
                    "-c:v", "libx264", "-c:a", "aac", "-shortest"], ".mp4", 1),
    "every_frame_vfr": (["-f", "lavfi", "-i", "testsrc2=size=192x108:rate=25:duration=1",
                         "-vf", "select='not(eq(mod(n\\,9)\\,4))'", "-fps_mode", "vfr",
                         "-c:v", "libx264"], ".mp4", -1),
    "bt2020": (["-f", "lavfi", "-i", SRC, "-c:v", "libx264", "-colorspace", "bt2020nc"],
               ".mp4", 1),
    "corrupt": (None, ".mp4", 1),
}
SKIPPING = {"h264_bpyramid": "h264 nal_ref_idc", "hevc": "hevc sub-layer non-reference",
            "hevc_mkv": "hevc sub-layer non-reference"}
TO_CLI = {"bt2020": "colour matrix 'bt2020nc'"}


@dataclass
class Outcome:
    frames: int
    cli_frames: int
    max_diff: int
    stats: probing.DecodeStats
    cli_stats: probing.DecodeStats
    info: probing.VideoInfo
    seconds: float


def _ffmpeg(args: list[str], out: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(out)], check=True)
    return out


def _corrupt(src: Path, out: Path) -> Path:
    data = bytearray(src.read_bytes())
    rng = random.Random(7)
    for _ in range(40):  # flip bytes in the middle of the media data
        data[rng.randrange(len(data) // 4, len(data) * 3 // 4)] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def compare(path: Path, fps: int, threads: int | None = None) -> Outcome:
    info = probing.probe(path, count_frames=fps == -1)
    transpose = probing.is_portrait(info)
    cli_stats, stats = probing.DecodeStats(), probing.DecodeStats()
    started = time.monotonic()
    cli = ffmpeg_cli.iter_frames(path, fps=fps, transpose=transpose, info=info, stats=cli_stats,
                            decode_threads=threads)
    new = pyav.iter_frames(path, fps=fps, transpose=transpose, info=info, stats=stats,
                                   decode_threads=threads)
    worst, count, cli_count = 0, 0, 0
    for a, b in zip(cli, new):
        worst = max(worst, int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()))
        count += 1
        cli_count += 1
    count += sum(1 for _ in new)
    cli_count += sum(1 for _ in cli)
    return Outcome(count, cli_count, worst, stats, cli_stats, info, time.monotonic() - started)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict[str, Outcome]:
    tmp = tmp_path_factory.mktemp("pyav_clips")
    encoders = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-encoders"],
                              capture_output=True, text=True).stdout
    out = {}
    for name, (args, suffix, fps) in CLIPS.items():
        if args and any(a in ("libx265", "libvpx-vp9") and a not in encoders for a in args):
            continue
        if args is None:
            src = _ffmpeg(CLIPS["h264_bpyramid"][0], tmp / "corrupt_src.mp4")
            path = _corrupt(src, tmp / f"{name}{suffix}")
        else:
            first = str(tmp / "h264_bpyramid.mp4")
            path = _ffmpeg([a.replace("{first}", first) for a in args], tmp / f"{name}{suffix}")
        # Error concealment with frame threads varies from run to run, even between two
        # runs of the CLI path, so the corrupt clip is decoded with one thread.
        out[name] = compare(path, fps, 1 if args is None else None)
    return out


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_every_scored_frame_is_identical(matrix, name):
    if name not in matrix:
        pytest.skip(f"the system ffmpeg cannot encode {name}")
    result = matrix[name]
    assert result.frames == result.cli_frames == result.stats.frames_expected > 0
    assert result.max_diff == 0
    assert result.stats.padded_frames == result.cli_stats.padded_frames
    assert result.seconds < 120  # never a hang


@pytest.mark.parametrize("name", sorted(set(CLIPS) - set(TO_CLI) - {"corrupt"}))
def test_pyav_path_ran(matrix, name):
    if name not in matrix:
        pytest.skip(f"the system ffmpeg cannot encode {name}")
    stats = matrix[name].stats
    assert (stats.decoder, stats.method, stats.fallback) == ("pyav", "pyav", "")
    assert stats.commands == [] and stats.real_frames == stats.frames_expected
    assert len(stats.source_positions) == stats.frames_expected
    assert stats.decoded_frames <= stats.packets


@pytest.mark.parametrize("name", sorted(SKIPPING))
def test_unscored_non_reference_packets_are_skipped(matrix, name):
    if name not in matrix:
        pytest.skip(f"the system ffmpeg cannot encode {name}")
    stats = matrix[name].stats
    assert stats.skip_mode == SKIPPING[name]
    # Most B frames of these clips are non-reference, and 4 of ~100 frames are scored.
    assert stats.skipped_packets >= stats.packets // 4
    assert stats.decoded_frames + stats.skipped_packets <= stats.packets


def test_other_codecs_decode_every_packet(matrix):
    if "vp9" not in matrix:
        pytest.skip("the system ffmpeg has no VP9 encoder")
    stats = matrix["vp9"].stats
    assert stats.skip_mode.startswith("none: vp9") and stats.skipped_packets == 0


def test_rotation_and_vfr_clips_are_what_they_claim(matrix):
    assert matrix["rotation_90"].info.rotation != matrix["rotation_270"].info.rotation
    assert matrix["rotation_270"].info.rotation in (90.0, -90.0)  # 270 is stored as -90 degrees
    assert matrix["rotation_180"].info.rotation in (180.0, -180.0)
    assert matrix["vfr"].info.r_frame_rate != 30 or matrix["vfr"].info.nb_frames < 120
    assert matrix["bt709_10bit"].info.pix_fmt == "yuv420p10le"
    assert matrix["full_range_bt601"].info.color_range == "pc"
    every = matrix["every_frame_vfr"].stats
    # -r 25 over a clip with every 9th frame missing writes the frame before a gap twice.
    assert len(every.source_positions) > len(set(every.source_positions))


@pytest.mark.parametrize("name", sorted(TO_CLI))
def test_unverified_pixels_hand_over_to_the_cli(matrix, name):
    stats = matrix[name].stats
    assert stats.decoder == "ffmpeg" and stats.fallback.startswith(TO_CLI[name])
    assert stats.method in ("split", "upstream") and stats.commands


def test_corrupt_packets_hand_over_where_they_are_met(matrix):
    stats, cli = matrix["corrupt"].stats, matrix["corrupt"].cli_stats
    assert stats.fallback.startswith(("corrupt frame", "decoding failed", "no frame decoded"))
    assert stats.decoder in ("ffmpeg", "pyav+ffmpeg")
    assert cli.real_frames == stats.real_frames


def test_golden_frames(reference_dir):
    for name in ("sample_landscape", "sample_portrait"):
        golden = np.load(reference_dir / f"{name}.golden.npz")
        stats = probing.DecodeStats()
        frames = list(pyav.iter_frames(reference_dir / f"{name}.mp4",
                                               transpose=bool(golden["transpose"]), stats=stats))
        stored = golden["frames_uint8"]
        assert len(frames) == int(golden["video_length"]) * int(golden["fps"])
        assert np.array_equal(np.stack(frames[:len(stored)]), stored)
        assert stats.source_positions == [int(i) for i in
                                          golden["source_frame_indices"][:len(frames)]]
        assert stats.decoder == "pyav" and stats.skipped_packets > 0


def test_closing_early_stops_cleanly(reference_dir):
    frames = pyav.iter_frames(reference_dir / "sample_landscape.mp4")
    first = next(frames)
    frames.close()
    assert first.shape == probing.FRAME_SHAPE


def test_another_ffmpeg_version_hands_over_to_the_cli(reference_dir, tmp_path):
    # The frame choice reproduced is 5.1's; with another ffmpeg, upstream's own command
    # decides, so pyav hands the whole video to the command-line path.
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text('#!/bin/sh\nif [ "$2" = "-version" ]; then echo "ffmpeg version 6.1.1"; '
                       'exit 0; fi\nexec ffmpeg "$@"\n')
    wrapper.chmod(0o755)
    stats = probing.DecodeStats()
    frames = list(pyav.iter_frames(reference_dir / "sample_landscape.mp4",
                                           ffmpeg=str(wrapper), stats=stats))
    assert stats.decoder == "ffmpeg" and stats.skipped_packets == 0
    assert stats.fallback == ("frame choice reproduced for ffmpeg 5.1, "
                              "found 'ffmpeg version 6.1.1'")
    golden = np.load(reference_dir / "sample_landscape.golden.npz")["frames_uint8"]
    assert np.array_equal(np.stack(frames[:len(golden)]), golden)


def test_stopping_early_with_decoder_threads_never_hangs(tmp_path):
    """FFmpeg's decoder threads log while a frame-threaded decoder is freed. With a PyAV log
    level set, that logging waits for the GIL that the freeing thread holds: a deadlock
    (it hung a CI run). The decoder keeps PyAV's default, no Python log callback, and a
    corrupt clip (which makes the decoder threads log) stopped after its first frame, many
    times, finishes."""
    src = _ffmpeg(CLIPS["h264_bpyramid"][0], tmp_path / "src.mp4")
    clip = _corrupt(src, tmp_path / "corrupt.mp4")
    info = probing.probe(clip)
    for _ in range(30):
        frames = pyav.iter_frames(clip, fps=1, info=info, decode_threads=None)
        next(frames)
        frames.close()
    assert av.logging.get_level() is None
