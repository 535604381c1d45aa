"""``uvq`` end to end in this process: one configuration, one probe, one frame plan."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from uvq_int8 import config
from uvq_int8.cli import uvq_main
from uvq_int8.runtime.decode import ffmpeg_cli, pyav
from uvq_int8.runtime.decode import probe as probing


@pytest.fixture
def calls(monkeypatch):
    """Counts of config.resolve, probe and sample_plan calls (the decoders reach them
    through ``probe.prepare``, ``scoring`` and the batch workers through the module)."""
    counts: Counter = Counter()

    def counting(name, func):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return func(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(config, "resolve", counting("resolve", config.resolve))
    for name in ("probe", "sample_plan"):
        monkeypatch.setattr(probing, name, counting(name, getattr(probing, name)))
    # No decoder keeps a name of its own for them that would bypass the count.
    assert not any(hasattr(m, n) for m in (ffmpeg_cli, pyav) for n in ("probe", "sample_plan"))
    return counts


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_one_video_resolves_probes_and_plans_once(built_models, reference_dir, calls, capsys,
                                                   decoder):
    code = uvq_main([str(reference_dir / "sample_landscape.mp4"), "--backend", "float32",
                     "--model-dir", str(built_models), "--decoder", decoder,
                     "--output_all_stats", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decoder"] == decoder and len(result["per_frame_scores"]) == 5
    assert calls == Counter(resolve=1, probe=1, sample_plan=1)


def test_a_batch_probes_and_plans_each_video_once(built_models, reference_dir, calls, tmp_path):
    videos = [reference_dir / "sample_landscape.mp4", reference_dir / "sample_portrait.mp4"]
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{v}\n" for v in videos))
    out = tmp_path / "rows.jsonl"
    code = uvq_main([str(listing), "--backend", "float32", "--model-dir", str(built_models),
                     "--output", str(out), "--format", "jsonl", "--quiet"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["error"] for r in rows] == [None, None]
    assert calls == Counter(resolve=1, probe=2, sample_plan=2)
