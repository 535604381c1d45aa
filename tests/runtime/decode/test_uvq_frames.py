"""``decode.uvq_frames`` and the decoder table: the same numbers as before the package.

``tests/data/decode_logits_before_the_decode_package.json`` holds the per-frame logits of
the shared sample videos with both decoders and two backends, scored by the commit before
``uvq_int8.runtime.decode`` existed. Float32 kernels sum in an order that depends on the
instruction set, so the snapshot is compared bit for bit on the instruction-set tier it
was made on, with the same model files; elsewhere the test says why it cannot compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uvq_int8 import runtime
from uvq_int8.errors import VideoError
from uvq_int8.runtime import decode
from uvq_int8.runtime.decode import probe as probing
from uvq_int8.runtime.scoring import ScoreOptions, score_video
from uvq_int8.util import machine_info

SNAPSHOT = Path(__file__).resolve().parents[2] / "data" / "decode_logits_before_the_decode_package.json"


@pytest.fixture(scope="module")
def snapshot():
    return json.loads(SNAPSHOT.read_text())


@pytest.mark.parametrize("backend", ["float32", "int8-static"])
def test_logits_equal_the_snapshot_bit_for_bit(built_models, reference_dir, snapshot, backend):
    models = runtime.load_models(backend, built_models, 2)
    if machine_info()["isa"] != snapshot["isa"] or models.sha256 != snapshot["model_sha256"][backend]:
        pytest.skip(f"snapshot made on {snapshot['isa']} with other model files; this host is "
                    f"{machine_info()['isa']}")
    runs = [k for k in snapshot["runs"] if k.startswith(backend + "/")]
    assert len(runs) == 4  # two videos, two decoders
    for key in runs:
        _, name, decoder = key.split("/")
        result = score_video(str(reference_dir / f"{name}.mp4"), models,
                             ScoreOptions(decoder=decoder))
        assert np.array_equal(np.array(result["per_frame_logits"], np.float64),
                              np.array(snapshot["runs"][key], np.float64)), key


def test_an_unknown_decoder_is_refused_before_probing(tmp_path):
    with pytest.raises(VideoError, match="decoder must be one of pyav, ffmpeg"):
        decode.uvq_frames(tmp_path / "missing.mp4", decoder="gstreamer")


def test_the_one_stats_type_records_the_decoder(reference_dir):
    for decoder in decode.DECODERS:
        stats = probing.DecodeStats()
        frames = list(decode.uvq_frames(reference_dir / "sample_portrait.mp4", stats=stats,
                                        decoder=decoder))
        assert stats.decoder == decoder and stats.real_frames == len(frames) == 3
        assert stats.method.startswith("pyav" if decoder == "pyav" else ("split", "upstream"))
