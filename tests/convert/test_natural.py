"""Natural-content clips from photographs: splits by image, licences, decoding as uvq does."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from uvq_int8.convert import natural as N
from uvq_int8.runtime.decode import ffmpeg_cli
from uvq_int8.runtime.decode import probe as probing

pytest.importorskip("skimage")


def test_every_photograph_is_in_exactly_one_split_and_has_a_licence():
    N.check_splits()
    names = [n for split in N.SPLITS for n in N.SPLIT_IMAGES[split]]
    assert sorted(names) == sorted(p.name for p in N.PHOTOS)
    assert all(p.licence for p in N.PHOTOS)
    assert {row["split"] for row in N.licences()} == set(N.SPLITS)
    with pytest.raises(ValueError, match="both"):
        N.check_splits({"a": ("chelsea",), "b": ("chelsea",)})


def test_photographs_are_bundled_rgb_uint8():
    for photo in N.PHOTOS:
        image = N.load_photo(photo.name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 300 and image.std() > 10
        assert (image[..., 0] != image[..., 1]).any() == photo.colour


def test_clip_specs_cover_the_splits_images_with_varied_treatments():
    specs = N.clip_specs("confirmation", 40)
    assert len(specs) == 20
    assert {s.image for s in specs} == set(N.SPLIT_IMAGES["confirmation"])
    assert {s.motion for s in specs} == {"pan", "zoom", "crop"}
    assert {s.degradation for s in specs} == {"none", "lowres", "colour", "noise", "blur"}
    assert {s.crf for s in specs} == set(N.CRFS)
    assert any(s.height > s.width for s in specs)     # portrait clips too
    assert specs == N.clip_specs("confirmation", 40)  # deterministic
    assert not {s.image for s in N.clip_specs("search", 40)} & set(N.SPLIT_IMAGES["holdout"])


def test_a_set_is_decoded_as_uvq_decodes_and_hashed(tmp_path):
    made = N.make_set("holdout", 3)
    assert len(made.frames) == 3 and made.images == ["grass", "retina"][:len(made.images)]
    assert all(f.shape == (1080, 1920, 3) and f.dtype == np.uint8 for f in made.frames)
    digest = hashlib.sha256()
    for f in made.frames:
        digest.update(f.tobytes())
    assert made.sha256 == digest.hexdigest()
    # The first clip again, encoded here and decoded by uvq's own decoder: the same frames.
    spec = made.clips[0]
    clip = N.encode_clip(spec, tmp_path / "clip.mp4")
    info = probing.probe(clip)
    assert (info.width, info.height) == (spec.width, spec.height)
    frames = list(ffmpeg_cli.iter_frames(clip, fps=1, transpose=probing.is_portrait(info)))
    assert len(frames) == N.SECONDS_PER_CLIP
    np.testing.assert_array_equal(frames[0], made.frames[0])
    record = made.record()
    assert record["decoded_sha256"] == made.sha256 and record["frames"] == 3
    assert all(img["licence"] for img in record["images"])


def test_a_clip_encodes_to_the_same_bytes_every_time(tmp_path):
    """The portrait zoom + low-resolution clip below came out as a different bitstream in
    about one run of three when the filters and x264 ran in one ffmpeg command."""
    spec = N.clip_specs("holdout", 24)[2]
    assert (spec.motion, spec.degradation, spec.height > spec.width) == ("zoom", "lowres", True)
    made = {hashlib.sha256(N.encode_clip(spec, tmp_path / f"{i}.mp4").read_bytes()).hexdigest()
            for i in range(6)}
    assert len(made) == 1
