"""The videos of a batch: directories, lists and stdin (``uvq_int8.batch.inputs``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from uvq_int8.batch import inputs
from uvq_int8.batch import rows as R


def test_directory_is_recursive_sorted_case_insensitive_and_ends_symlink_loops(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("b/z.MP4", "a/deep/x.mkv", "a/y.WebM", "a/notes.txt", "c.mov", "d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)  # a loop back to the root
    (tmp_path / "same.mov").symlink_to(tmp_path / "c.mov")  # the same file twice
    found = inputs.collect_inputs(str(tmp_path))
    rel = [str(Path(p).relative_to(tmp_path)) for p in found]
    assert rel == ["a/deep/x.mkv", "a/y.WebM", "b/z.MP4", "c.mov"]


def test_list_file_and_stdin(tmp_path):
    listing = tmp_path / "v.txt"
    listing.write_text("one.mp4\n\n  two.mp4  \n# a comment\n")
    assert inputs.collect_inputs(str(listing)) == ["one.mp4", "two.mp4"]
    assert inputs.collect_inputs("-", io.StringIO("x.mp4\ny.mov\n")) == ["x.mp4", "y.mov"]
    with pytest.raises(R.BatchError, match="not found"):
        inputs.collect_inputs(str(tmp_path / "missing.txt"))




def test_deciding_batch_or_single_loads_no_batch_machinery():
    import subprocess
    import sys

    code = ("import sys; from uvq_int8 import batch; "
            "print(batch.wants_batch('v.mp4'), batch.wants_batch('-'), batch.wants_batch('l.txt'), "
            "batch.wants_batch('v.mp4', jobs=2), "
            "sorted(m for m in sys.modules if m.startswith('uvq_int8.batch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False True True True []"
