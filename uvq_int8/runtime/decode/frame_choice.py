"""Which source frames ``ffmpeg -r RATE`` writes, computed from timestamps alone.

Upstream decodes with ``ffmpeg -i F -vf ... -r FPS -f rawvideo``. The frames that command
writes are chosen by the ffmpeg *program* (fftools), not by the libraries PyAV wraps, so
a decoder that does not run the program has to make the same choice itself. This module
reproduces ffmpeg 5.1's choice (``do_video_out`` in fftools/ffmpeg.c of release/5.1,
the version upstream's golden data was made with) for that command, for any positive
rational rate (``-r 1``, ``-r 0.5``, ``-r 1/4``, ``-r 30000/1001``):

- the output format (rawvideo) has no timestamps and no variable frame rate, so the
  video sync method is "cfr", or "vscfr" when the input file has exactly one stream;
- the encoder time base is 1/RATE (``av_inv_q`` of the parsed rate: 1/30 for ``-r 30``,
  2/1 for ``-r 0.5``, 1001/30000 for ``-r 30000/1001``);
- each filtered frame's timestamp is rescaled to that time base with
  ``clip(29 - log2(its denominator), 0, 16)`` extra bits (16 for any rate below 2) and
  nudged by 2^-17 away from zero (``adjust_frame_pts_to_encoder_tb``);
- ``duration`` is min(1 / (guessed input rate * time base), 1 / (RATE * time base)),
  both in doubles as the C code has them: with ``-vf`` the packet duration is not used;
- a frame is dropped when ``delta < -1.1``, repeated ``lrintf(delta)`` times when
  ``delta > 1.1`` (the first ``llrintf(delta0 - 0.6)`` of them copies of the previous
  frame), and written once otherwise; past-time clipping and vscfr's skipping of initial
  duplicates are kept;
- at the end the last frame is repeated by the median of the last three "previous
  frame" repeat counts.

Timestamps are those the program feeds its filter graph: the decoder's best-effort
timestamps in the stream's time base, shifted by minus the file's start time. Every
step uses the same double and float arithmetic as the C code, so boundaries such as
``delta == -1.1`` fall the same way (that is what makes 30 fps at ``-r 1`` write source
frames 0, 1, 26, 56, ..., and at ``-r 0.5`` source frames 0, 1, 53, 113, ...: a frame
is written up to 1.1 output frames early, and at ``-r 0.5`` an output frame is 2 s).
Whole rates go through the same arithmetic as before (time base 1/N), so their choice
is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

import numpy as np

AV_TIME_BASE = 1_000_000
_EXTRA_BITS_MAX = 16
_NUDGE = 1.0 / (1 << 17)


def rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """``av_rescale_q`` (round to nearest, halves away from zero) for exact rationals."""
    exact = Fraction(value) * src / dst
    floor = exact.numerator // exact.denominator
    rest = exact - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and exact > 0):
        return floor + 1
    return floor


def _av_log2(n: int) -> int:
    return max(int(n).bit_length() - 1, 0)


def _lrintf(x: float) -> int:
    # C's lrintf: to float, then round half to even (the default rounding mode).
    return int(np.rint(np.float32(x)))


def guess_frame_rate(r_frame_rate: Fraction | None,
                     avg_frame_rate: Fraction | None) -> Fraction | None:
    """The container part of 5.1's ``av_guess_frame_rate`` (r_frame_rate, or
    avg_frame_rate when r is implausibly high). Its codec part (``ticks_per_frame``) is
    left to the caller, see ``codec_rate_may_apply``."""
    fr = r_frame_rate if r_frame_rate and r_frame_rate > 0 else None
    avg = avg_frame_rate if avg_frame_rate and avg_frame_rate > 0 else None
    if fr is not None and avg is not None and float(avg) < 70 and float(fr) > 210:
        fr = avg
    return fr


def codec_rate_may_apply(r_frame_rate: Fraction | None, avg_frame_rate: Fraction | None) -> bool:
    """True where 5.1 could take the codec's own frame rate instead (for codecs with
    ``ticks_per_frame > 1`` such as H.264): no container rate, or an average rate more
    than 10 % away from it. The caller then does not trust ``guess_frame_rate``."""
    fr = guess_frame_rate(r_frame_rate, avg_frame_rate)
    if fr is None:
        return True
    if not avg_frame_rate or avg_frame_rate <= 0:
        return False
    return abs(1.0 - float(avg_frame_rate / fr)) > 0.1


def _q2d(q: Fraction) -> float:
    # av_q2d: num / (double) den.
    return q.numerator / q.denominator


@dataclass(frozen=True)
class RateSync:
    """The parameters of one ``-r RATE`` conversion."""

    fps: Fraction  # the output rate, any positive rational (an int is taken as one)
    time_base: Fraction  # the stream's (= the filter graph's) time base
    frame_rate: Fraction | None  # the guessed input rate the filter graph reports
    single_stream: bool  # the input file has one stream: vscfr instead of cfr

    def __post_init__(self):
        rate = Fraction(self.fps)
        if rate <= 0:
            raise ValueError(f"the output rate must be positive, got {self.fps!r}")
        object.__setattr__(self, "fps", rate)

    @property
    def encoder_time_base(self) -> Fraction:
        """1/RATE, as ``av_inv_q`` of the parsed ``-r`` (2/1 for ``-r 0.5``)."""
        return 1 / self.fps

    @property
    def duration(self) -> float:
        enc_tb = _q2d(self.encoder_time_base)
        duration = 0.0
        if self.frame_rate is not None:
            duration = 1 / (_q2d(self.frame_rate) * enc_tb)
        return min(duration, 1 / (_q2d(self.fps) * enc_tb))

    def sync_pts(self, pts: int) -> float:
        """A frame's timestamp in output frames, as ``adjust_frame_pts_to_encoder_tb``."""
        tb = self.encoder_time_base
        extra = min(max(29 - _av_log2(tb.denominator), 0), _EXTRA_BITS_MAX)
        fine = Fraction(tb.numerator, tb.denominator << extra)
        value = float(rescale(pts, self.time_base, fine)) / (1 << extra)
        if value > 0:
            value += _NUDGE
        elif value < 0:
            value -= _NUDGE
        return value


class _Sync:
    """The state of 5.1's ``do_video_out`` for one output stream."""

    def __init__(self, params: RateSync):
        self.params = params
        self.duration = params.duration
        self.next_out = 0  # ost->sync_opts
        self.written = 0  # ost->frame_number
        self.history = [0, 0, 0]  # ost->last_nb0_frames

    def push(self, pts: int) -> tuple[int, int]:
        """(copies of the previous frame, copies of this frame) written for one frame."""
        sync_ipts = self.params.sync_pts(pts)
        duration = self.duration
        delta0 = sync_ipts - self.next_out
        delta = delta0 + duration
        nb_prev, nb = 0, 1
        if delta0 < 0 < delta:
            duration += delta0  # clipped; delta itself is not recomputed in 5.1
            sync_ipts = float(self.next_out)
            delta0 = 0.0
        if self.params.single_stream and self.written == 0 and delta0 >= 0.5:
            delta = duration
            delta0 = 0.0
            self.next_out = int(np.rint(sync_ipts))  # llrint
        if delta < -1.1:
            nb = 0
        elif delta > 1.1:
            nb = _lrintf(delta)
            if delta0 > 1.1:
                nb_prev = _lrintf(delta0 - 0.6)
        nb_prev = min(nb_prev, nb)
        self.history = [nb_prev, *self.history[:2]]
        self.next_out += nb
        self.written += nb
        return nb_prev, nb - nb_prev

    def flush(self) -> int:
        """Copies of the last frame written at the end of the stream."""
        return sorted(self.history)[1]


def choose_frames(pts: Iterable[int], params: RateSync, limit: int | None = None) -> list[int]:
    """For each frame ``-r`` writes, the position (in ``pts``' order) of its source frame.

    ``pts`` are the frames' timestamps in the order the decoder outputs them. Stops once
    ``limit`` frames are chosen (the rest would be cut off by upstream anyway).
    """
    sync = _Sync(params)
    out: list[int] = []
    last = -1
    for i, value in enumerate(pts):
        if limit is not None and len(out) >= limit:
            return out[:limit]
        prev, this = sync.push(int(value))
        if prev and last < 0:
            raise ValueError("the first frame would repeat a frame before it; not reproduced")
        out.extend([last] * prev)
        out.extend([i] * this)
        last = i
    if last >= 0:
        out.extend([last] * sync.flush())
    return out if limit is None else out[:limit]


def source_positions(pts: Iterable[int], start_time: Fraction | None, time_base: Fraction,
                     r_frame_rate: Fraction | None, avg_frame_rate: Fraction | None,
                     single_stream: bool, fps: Fraction | int, limit: int | None = None
                     ) -> tuple[np.ndarray, list[int]]:
    """(the timestamps in presentation order, the position among them of each frame that
    ``-r fps`` writes, for any positive rational ``fps``), from a stream's packet timestamps (in ``time_base``) and what
    ffprobe says of the file. Raises ValueError where the choice is not reproduced
    (timestamps shared by two packets, a first frame that would repeat an earlier one)."""
    # fromiter: no Python list of every packet's timestamp on the way.
    pts_sorted = np.sort(np.fromiter(pts, dtype=np.int64))
    if np.any(np.diff(pts_sorted) == 0):
        raise ValueError("packets share a timestamp")
    start_us = round(start_time * AV_TIME_BASE) if start_time is not None else 0
    offset = rescale(-start_us, Fraction(1, AV_TIME_BASE), time_base)
    params = RateSync(fps, time_base, guess_frame_rate(r_frame_rate, avg_frame_rate),
                      single_stream)
    return pts_sorted, choose_frames((int(p) + offset for p in pts_sorted), params, limit)
