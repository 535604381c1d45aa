"""Decoding: upstream's frames, streamed, and errors a user can act on."""

from __future__ import annotations

import gc
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from uvq_int8.runtime.decode import ffmpeg_cli, pipe, verified
from uvq_int8.runtime.decode import probe as probing
from uvq_int8.errors import VideoError

pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                reason="ffmpeg/ffprobe not installed")

SAMPLES = ("sample_landscape", "sample_portrait")


def ffmpeg_make(out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(out)], check=True)
    return out


def make_clip(out: Path, rate: str = "30", seconds: float = 2.0, size: str = "320x180",
              *extra: str) -> Path:
    return ffmpeg_make(out, "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:"
                       f"duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
                       "-pix_fmt", "yuv420p", *extra)


def upstream_bytes(path: Path, fps: int, transpose: bool, tmp: Path) -> bytes:
    """Upstream's load_video_1p5 byte string: its ffmpeg command into a temp file,
    truncated or zero-padded to video_length * fps frames (video_length = ceil(duration))."""
    info = probing.probe(path)
    out = tmp / "upstream.rgb"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf",
                    verified.upstream_filter(transpose), "-r", str(fps), "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-y", str(out)], check=True)
    need = math.ceil(info.duration) * fps * probing.FRAME_BYTES
    raw = out.read_bytes()[:need]
    out.unlink()
    return raw + bytes(need - len(raw))


def decoded_bytes(path: Path, **kwargs) -> tuple[bytes, probing.DecodeStats]:
    stats = probing.DecodeStats()
    data = b"".join(f.tobytes() for f in ffmpeg_cli.iter_frames(path, stats=stats, **kwargs))
    return data, stats


def processes_gone(pids: list[int]) -> bool:
    # A zombie still has a /proc entry, so this also checks the children were reaped.
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("uvq-ffmpeg")]


@pytest.fixture(scope="module", params=SAMPLES)
def sample(request, reference_dir):
    golden = dict(np.load(reference_dir / f"{request.param}.golden.npz"))
    return reference_dir / f"{request.param}.mp4", golden


@pytest.fixture(scope="module")
def landscape(reference_dir) -> Path:
    return reference_dir / "sample_landscape.mp4"


def same_ffmpeg_as_goldens(golden) -> bool:
    return verified.ffmpeg_version() == str(golden["ffmpeg_version"])


# --- probing and the frame plan -------------------------------------------------------

def test_probe_reports_what_upstream_derives(sample):
    path, golden = sample
    info = probing.probe(path)
    assert info.duration == pytest.approx(float(golden["duration_s"]))
    assert info.orig_fps == int(golden["orig_fps"])
    assert info.nb_frames == int(golden["num_source_frames"])
    assert info.has_video and info.codec == "h264"
    assert probing.is_portrait(info) == bool(golden["transpose"])


def test_portrait_sample_is_detected_as_portrait(reference_dir):
    info = probing.probe(reference_dir / "sample_portrait.mp4")
    assert (info.width, info.height) == (360, 640)
    assert probing.is_portrait(info)


def test_plan_matches_upstream_length_and_frame_indices(sample):
    path, golden = sample
    plan = probing.sample_plan(probing.probe(path), fps=int(golden["fps"]))
    assert plan.video_length == int(golden["video_length"])
    assert plan.num_frames == int(golden["video_length"]) * int(golden["fps"])
    assert list(plan.frame_indices) == golden["frame_indices"].tolist()


def _info(**kw) -> probing.VideoInfo:
    base = dict(path="x.mp4", width=640, height=360, duration=5.0, r_frame_rate=30.0,
                orig_fps=30, nb_frames=150, nb_frames_counted=True, has_video=True,
                codec="h264")
    base.update(kw)
    return probing.VideoInfo(**base)


def _uncounted(**kw) -> probing.VideoInfo:
    return _info(nb_frames_counted=False, **kw)


def test_frame_count_is_ceil_duration_times_rate_rounded_up():
    plan = probing.sample_plan(_uncounted(), "0.5")
    assert (plan.video_length, plan.fps, plan.num_frames) == (5, Fraction(1, 2), 3)
    assert plan.frame_indices == (0, 60, 120)  # upstream's i * orig_fps / fps
    assert probing.sample_plan(_uncounted(duration=7.3), "1/4").num_frames == 2  # ceil(8 / 4)
    assert probing.sample_plan(_uncounted(duration=10.0), Fraction(1, 3)).num_frames == 4
    assert probing.sample_plan(_uncounted(duration=0.4), "0.1").num_frames == 1
    # Whole rates as before.
    plan = probing.sample_plan(_uncounted(duration=2.5, orig_fps=24), 5)
    assert plan.num_frames == 15 and plan.frame_indices[:6] == (0, 5, 10, 14, 19, 24)
    assert probing.sample_plan(_uncounted(), "-1").num_frames == 150


def test_plan_for_every_frame_uses_orig_fps_and_frame_count():
    plan = probing.sample_plan(_info(r_frame_rate=30000 / 1001, nb_frames=151, duration=5.04),
                             fps=-1)
    assert (plan.fps, plan.video_length, plan.num_frames) == (30, 6, 180)
    assert plan.frame_indices[:4] == (0, 1, 2, 3)


def test_plan_reports_upstream_frame_indices_for_other_rates():
    plan = probing.sample_plan(_info(duration=2.5, orig_fps=24), fps=5)
    assert plan.video_length == 3 and plan.num_frames == 15
    # int(round(i * 24 / 5)), Python's round, as upstream reports them
    assert plan.frame_indices[:6] == (0, 5, 10, 14, 19, 24)


def test_plan_rejects_zero_length_and_bad_fps():
    with pytest.raises(VideoError, match="zero length"):
        probing.sample_plan(_info(duration=0.0, nb_frames=0), fps=1)
    with pytest.raises(VideoError, match="fps"):
        probing.sample_plan(_info(), fps=0)


def test_frame_rate_is_rounded_up_like_upstream():
    assert probing.parse_rate("30000/1001") == (pytest.approx(29.97, abs=1e-3), 30)
    assert probing.parse_rate("25/1") == (25.0, 25)
    assert probing.parse_rate("0/0") == (None, None)


# --- frames equal upstream's -----------------------------------------------------------

@pytest.mark.parametrize("method", ["upstream", "auto"])
def test_frames_are_upstreams_bit_for_bit(sample, method):
    path, golden = sample
    stats = probing.DecodeStats()
    frames = list(ffmpeg_cli.iter_frames(path, fps=int(golden["fps"]),
                                    transpose=bool(golden["transpose"]), method=method,
                                    stats=stats))
    assert len(frames) == int(golden["video_length"]) * int(golden["fps"])
    assert all(f.shape == (1080, 1920, 3) and f.dtype == np.uint8 for f in frames)
    if not same_ffmpeg_as_goldens(golden):
        pytest.skip(f"local ffmpeg is not the goldens' {golden['ffmpeg_version']}")
    if method == "auto":
        assert stats.method == "split"  # verified build: the fast path is taken
    stored = golden["frames_uint8"]
    for i in range(int(golden["num_frames_stored"])):
        assert np.array_equal(frames[i], stored[i]), f"frame {i} differs"


def test_split_decode_equals_upstream_command_on_a_29_97_fps_clip(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", "30000/1001", 2.5)
    ours, stats = decoded_bytes(clip, fps=2, method="split")
    assert stats.method == "split" and not stats.fallback
    assert ours == upstream_bytes(clip, 2, False, tmp_path)


def test_split_decode_restores_colour_tags(tmp_path):
    # The raw pipe between the two ffmpegs drops the BT.709 tag; without setparams the
    # scaler would use BT.601 and every pixel would differ.
    clip = make_clip(tmp_path / "bt709.mp4", "25", 1.0, "320x180", "-colorspace", "bt709",
                     "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")
    ours, stats = decoded_bytes(clip, fps=3, method="split")
    assert stats.method == "split"
    assert ours == upstream_bytes(clip, 3, False, tmp_path)


def test_split_decode_follows_display_rotation(tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", "25", 1.0)
    rotated = ffmpeg_make(tmp_path / "rot.mp4", "-i", str(plain), "-c", "copy",
                          "-metadata:s:v:0", "rotate=90")
    assert abs(probing.probe(rotated).rotation) == 90
    ours, stats = decoded_bytes(rotated, fps=2, transpose=True, method="split")
    assert stats.method == "split" and not stats.fallback
    assert ours == upstream_bytes(rotated, 2, True, tmp_path)


def test_size_change_mid_stream_hands_over_to_upstream_command(tmp_path):
    a = make_clip(tmp_path / "a.ts", "10", 1.0, "320x180")
    b = ffmpeg_make(tmp_path / "b.ts", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=10:duration=1", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-output_ts_offset", "1")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    clip = ffmpeg_make(tmp_path / "joined.mp4", "-i", str(joined), "-c", "copy")
    ours, stats = decoded_bytes(clip, fps=5, method="split")
    assert stats.method == "split+upstream" and stats.fallback
    assert ours == upstream_bytes(clip, 5, False, tmp_path)


@pytest.mark.parametrize("method", ["split", "upstream"])
def test_decoder_thread_count_does_not_change_the_frames(tmp_path, method):
    clip = make_clip(tmp_path / "c.mp4", "30", 2.0, "640x360")
    ours, stats = decoded_bytes(clip, fps=3, method=method, decode_threads=1)
    first = stats.commands[0]
    assert first[first.index("-i") - 2:first.index("-i")] == ["-threads", "1"]
    assert ours == upstream_bytes(clip, 3, False, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("rate", ["24", "25", "30000/1001", "30", "60"])
@pytest.mark.parametrize("seconds", [2.5, 7])
def test_split_decode_equals_upstream_command_across_rates(tmp_path, rate, seconds):
    clip = make_clip(tmp_path / "c.mp4", rate, seconds, "480x270")
    for fps in (1, 5):
        for transpose in (False, True):
            ours, stats = decoded_bytes(clip, fps=fps, transpose=transpose, method="split")
            assert stats.method == "split"
            assert ours == upstream_bytes(clip, fps, transpose, tmp_path), (fps, transpose)


# --- file names and process hygiene ------------------------------------------------------

@pytest.mark.parametrize("name", ["we ird 'q\" ;$(touch pwned) `touch pwned2`.mp4",
                                  "-leading-dash.mp4", "-", "a:b.mp4"])
def test_hostile_file_names_are_read_and_execute_nothing(tmp_path, monkeypatch, landscape,
                                                         name):
    shutil.copy(landscape, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert probing.probe(name).duration == pytest.approx(5.0)
    frames = ffmpeg_cli.iter_frames(name, fps=1)
    first = next(frames)
    frames.close()
    assert first.shape == (1080, 1920, 3) and first.any()
    assert not list(tmp_path.glob("pwned*"))
    assert not list(Path.cwd().glob("pwned*"))


def test_closing_early_stops_ffmpeg_and_the_reader_thread(landscape):
    for method in ("upstream", "split"):
        stats = probing.DecodeStats()
        frames = ffmpeg_cli.iter_frames(landscape, fps=5, method=method, stats=stats)
        next(frames)
        started = time.monotonic()
        frames.close()
        assert time.monotonic() - started < 3
        assert stats.pids and processes_gone(stats.pids), method
        assert not reader_threads()


def test_abandoned_iterator_is_cleaned_up_by_garbage_collection(landscape):
    stats = probing.DecodeStats()
    frames = ffmpeg_cli.iter_frames(landscape, fps=5, stats=stats)
    next(frames)
    del frames
    gc.collect()
    assert processes_gone(stats.pids)
    assert not reader_threads()


def test_nothing_starts_before_the_first_frame_is_asked_for(landscape):
    stats = probing.DecodeStats()
    ffmpeg_cli.iter_frames(landscape, stats=stats)
    assert stats.pids == []


def test_ffmpeg_is_stopped_once_the_last_frame_is_read():
    # A stand-in for ffmpeg that writes every frame asked for, then would go on for a
    # minute (as ffmpeg goes on decoding to the end of the file): the reader stops it
    # without waiting for the consumer to finish with the frames.
    frame_bytes = 12
    writer = ("import sys, time; sys.stdout.buffer.write(bytes(range(36))); "
              "sys.stdout.flush(); time.sleep(60)")
    pipeline = pipe.Pipeline([[sys.executable, "-c", writer]], frame_bytes, 3, 4,
                               probing.DecodeStats())
    try:
        frames = [pipeline.get() for _ in range(3)]
        assert [bytes(f[:2]) for f in frames] == [b"\x00\x01", b"\x0c\x0d", b"\x18\x19"]
        proc = pipeline.procs[0]
        proc.wait(timeout=10)  # without the stop this waits for the stand-in's minute
        assert pipeline.get() is pipe.END_OF_FRAMES
    finally:
        pipeline.close()


def test_split_second_ffmpeg_passes_each_frame_on_at_once(tmp_path):
    # ffmpeg's frame-threaded rawvideo encoder held a frame back until the next arrived,
    # so at fps=1 each frame waited for another second of video to be decoded.
    clip = make_clip(tmp_path / "c.mp4", "25", 1.0)
    info = probing.probe(clip)
    plan = probing.sample_plan(info, 1)
    first, second = ffmpeg_cli.split_commands(probing.ffmpeg_url(clip), info, plan, False, "ffmpeg")
    w, h = info.frame_size
    one_frame = subprocess.run(first, capture_output=True, check=True).stdout[:w * h * 3 // 2]
    proc = subprocess.Popen(second, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write(one_frame)
        proc.stdin.flush()  # and stdin stays open: no end of input to flush the frame out
        got = bytearray()
        reader = threading.Thread(
            target=lambda: got.extend(proc.stdout.read(probing.FRAME_BYTES)), daemon=True)
        reader.start()
        reader.join(timeout=20)
        assert len(got) == probing.FRAME_BYTES
    finally:
        proc.kill()
        proc.wait()


def test_memory_stays_bounded_by_the_queue(tmp_path):
    clip = make_clip(tmp_path / "hd.mp4", "30", 3.0, "1920x1080")
    stats = probing.DecodeStats()
    tracemalloc.start()
    try:
        count = 0
        for frame in ffmpeg_cli.iter_frames(clip, fps=5, queue_frames=2, stats=stats):
            count += 1
            time.sleep(0.02)  # a slow consumer: the reader must wait, not pile up frames
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 15
    assert stats.max_queued <= 2
    # queued frames + the one being read + the one the consumer holds + slack
    assert peak < 6 * probing.FRAME_BYTES


# --- errors ---------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="nope.mp4.*no such file"):
        ffmpeg_cli.iter_frames(tmp_path / "nope.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4.*empty"):
        probing.probe(tmp_path / "empty.mp4")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="notes.mp4.*not a readable video"):
        ffmpeg_cli.iter_frames(path)


def test_audio_only_file(tmp_path):
    path = ffmpeg_make(tmp_path / "tone.m4a", "-f", "lavfi", "-i", "sine=duration=1",
                       "-c:a", "aac")
    with pytest.raises(VideoError, match="tone.m4a.*no video stream.*audio-only"):
        probing.probe(path)


def test_video_without_frames(tmp_path):
    path = ffmpeg_make(tmp_path / "noframes.mp4", "-f", "lavfi", "-i", "testsrc2=size=64x64",
                       "-frames:v", "0", "-c:v", "libx264")
    with pytest.raises(VideoError, match="noframes.mp4"):
        list(ffmpeg_cli.iter_frames(path))


def test_truncated_video_without_a_whole_frame(tmp_path, landscape):
    data = landscape.read_bytes()
    cut = data.index(b"mdat") + 200  # the index (moov) survives, the pictures do not
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[:cut])
    frames = ffmpeg_cli.iter_frames(path)  # probing still succeeds
    with pytest.raises(VideoError, match="cut.mp4.*decoded no frames"):
        list(frames)
    assert not reader_threads()


def test_truncated_video_is_padded_with_black_frames_like_upstream(tmp_path, landscape, caplog):
    path = tmp_path / "half.mp4"
    path.write_bytes(landscape.read_bytes()[: landscape.stat().st_size // 2])
    stats = probing.DecodeStats()
    with caplog.at_level(logging.WARNING, logger="uvq_int8.runtime.decode.ffmpeg_cli"):
        frames = list(ffmpeg_cli.iter_frames(path, fps=2, stats=stats))
    assert len(frames) == 10
    assert 0 < stats.padded_frames < 10
    assert not frames[-1].any() and frames[0].any()
    assert "half.mp4: decoding may be truncated" in caplog.text
    assert b"".join(f.tobytes() for f in frames) == upstream_bytes(path, 2, False, tmp_path)


def test_missing_ffmpeg_and_ffprobe_name_their_flags(tmp_path, landscape):
    with pytest.raises(VideoError, match="--ffprobe_path"):
        probing.probe(landscape, ffprobe=str(tmp_path / "no-ffprobe"))
    with pytest.raises(VideoError, match="--ffmpeg_path"):
        ffmpeg_cli.iter_frames(landscape, ffmpeg=str(tmp_path / "no-ffmpeg"))


def test_ffmpeg_failure_reports_its_last_stderr_line(tmp_path, landscape):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'first line' >&2\necho 'boom: decoder exploded' >&2\n"
                    "exit 3\n")
    fake.chmod(0o755)
    with pytest.raises(VideoError, match=r"sample_landscape.mp4.*no frames.*exit code 3: "
                                         r"boom: decoder exploded"):
        list(ffmpeg_cli.iter_frames(landscape, ffmpeg=str(fake), method="upstream"))


# --------------------------------------------------------------------------- terminals

def _in_a_background_job(code: str, *args: str, timeout: float = 120) -> str:
    """Run ``python -c code args`` as a background job of an interactive shell on a pseudo
    terminal (as CI runners and ``uvq ... &`` do). An ffmpeg that touches the terminal there is
    stopped by SIGTTOU/SIGTTIN, and the run never ends."""
    import shlex

    script = shutil.which("script")
    if script is None:
        pytest.skip("script (util-linux) is not installed")
    inner = " ".join(shlex.quote(a) for a in (sys.executable, "-c", code, *args))
    shell = f"{inner} & wait $!; echo exit=$?"  # a stopped job: "Stopped", exit=150
    proc = subprocess.Popen([script, "-qec", f"bash --norc --noprofile -ic {shlex.quote(shell)}",
                             "/dev/null"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise AssertionError(f"still running after {timeout} s (stopped on the terminal?)")
    return out


def test_the_harness_sees_an_ffmpeg_stopped_on_the_terminal(tmp_path):
    """The check below can fail: an ffmpeg without -nostdin is stopped in a background job."""
    code = ("import subprocess; subprocess.run(['ffmpeg', '-v', 'error', '-f', 'lavfi', '-i', "
            "'testsrc=duration=1', '-f', 'null', '-'])")
    out = _in_a_background_job(code, timeout=60)
    assert "Stopped" in out and "exit=0" not in out, out


@pytest.mark.parametrize("decoder", ["ffmpeg", "pyav"])
def test_decoding_in_a_background_job_of_a_terminal_finishes(reference_dir, tmp_path, decoder):
    code = ("import sys; from uvq_int8 import synthetic; from uvq_int8.runtime import decode; "
            "clip = synthetic.write_clip(sys.argv[1], seconds=2); "
            "print('frames', sum(1 for _ in decode.uvq_frames(clip, decoder=sys.argv[2])))")
    out = _in_a_background_job(code, str(tmp_path / "clip.mp4"), decoder)
    assert "frames 2" in out and "exit=0" in out, out


def test_every_ffmpeg_command_line_in_the_repository_has_nostdin():
    """A static guard for the check above: each list that starts an ffmpeg (a literal
    "ffmpeg" or a variable named ffmpeg/binary first) says -nostdin, directly or through
    ffmpeg_cli's _QUIET options."""
    import ast

    repo = Path(__file__).resolve().parents[3]
    missing = []
    for path in [*(repo / "uvq_int8").rglob("*.py"), *(repo / "tests").rglob("*.py"),
                 *(repo / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.List) or not node.elts:
                continue
            first = node.elts[0]
            starts = ((isinstance(first, ast.Constant) and first.value == "ffmpeg")
                      or (isinstance(first, ast.Name) and first.id in ("ffmpeg", "binary")))
            options = any(isinstance(e, ast.Starred) or (isinstance(e, ast.Constant)
                          and isinstance(e.value, str) and e.value.startswith("-"))
                          for e in node.elts[1:])
            if not (starts and options):  # a command line, not a list of names
                continue
            text = ast.unparse(node)
            if "-nostdin" not in text and "_QUIET" not in text and "-version" not in text:
                missing.append(f"{path.relative_to(repo)}:{node.lineno}")
    assert missing == []
