"""Probing and the frame plan (``uvq_int8.runtime.decode.probe``)."""

from __future__ import annotations

import sys
import textwrap
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from uvq_int8.runtime.decode import probe as probing
from uvq_int8.runtime.decode.probe import source_frame_times


@pytest.mark.parametrize("video", ["sample_landscape", "sample_portrait"])
def test_source_frame_times_are_the_frames_ffmpeg_hands_on(reference_dir, video):
    golden = np.load(reference_dir / f"{video}.golden.npz")
    count = int(golden["num_real_frames"])
    times = source_frame_times(reference_dir / f"{video}.mp4", 1, count)
    expected = golden["source_frame_indices"][:count] / float(golden["orig_fps"])
    np.testing.assert_allclose(times, expected, atol=1e-5)


def _fake_ffprobe(folder: Path, packets: int) -> Path:
    """An ffprobe that lists ``packets`` packets of a 30 fps stream (time base 1/15360),
    one without a pts first, in the compact form ``source_choice`` asks for."""
    script = folder / "ffprobe"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import sys
        out = sys.stdout
        out.write("packet|pts=N/A\\n")
        for i in range({packets}):
            out.write(f"packet|pts={{i * 512}}\\n")
        out.write("stream|r_frame_rate=30/1|avg_frame_rate=30/1|time_base=1/15360\\n")
        out.write("format|nb_streams=1|start_time=0.000000\\n")
    """))
    script.chmod(0o755)
    return script


def test_source_choice_reads_the_compact_packet_listing(tmp_path):
    ffprobe = _fake_ffprobe(tmp_path, 3000)
    ordered, chosen, time_base, start = probing.source_choice(tmp_path / "v.mp4", 1, 4,
                                                              str(ffprobe))
    assert len(ordered) == 3000  # the packet without a pts is left out
    assert chosen == [0, 1, 26, 56]  # ffmpeg 5.1's -r 1 on 30 fps
    assert time_base == Fraction(1, 15360) and start == 0


def test_source_choice_holds_a_few_bytes_per_packet(tmp_path):
    # A one-hour 30 fps video has 108,000 packets; ffprobe's JSON parsed into a dict per
    # packet took a few hundred bytes each, and ten hours would take ten times an hour's.
    # The listing is read line by line into int64s.
    packets = 300_000
    ffprobe = _fake_ffprobe(tmp_path, packets)
    tracemalloc.start()
    try:
        choice = probing.source_choice(tmp_path / "v.mp4", 1, 4, str(ffprobe))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert choice is not None and len(choice[0]) == packets
    assert peak < 40 * packets, f"{peak / packets:.0f} bytes per packet"
