"""Our PyTorch nets against upstream's layout and golden numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from uvq_int8.runtime import frames as F  # noqa: E402
from uvq_int8.convert import nets  # noqa: E402
from uvq_int8.errors import UserError  # noqa: E402

CKPT = {"content": "content_net_proxy.pth", "distortion": "distortion_net_proxy.pth",
        "aggregation": "aggregation_net.pth"}


@pytest.fixture(scope="module")
def cores(reference_dir):
    torch.set_num_threads(2)
    return {net: nets.load_core(net, reference_dir / name) for net, name in CKPT.items()}


@pytest.fixture(scope="module")
def golden_run(cores, golden_frames):
    # Same batch of two frames and the same float64 [-1,1] mapping as the goldens.
    x = ((golden_frames["frames_uint8"] / 255.0 - 0.5) * 2).astype(np.float32)
    pipeline = nets.UVQ1p5Torch(cores["content"], cores["distortion"], cores["aggregation"])
    content, distortion = pipeline.features(x)
    return content.numpy(), distortion.numpy(), pipeline.logits(content, distortion).numpy()


@pytest.mark.parametrize("net", list(CKPT))
def test_state_dict_layout_matches_upstream_exactly(reference_dir, net):
    expected = json.loads((reference_dir / "state_dict_layout.json").read_text())[f"{net}_net"]
    got = [[k, shape, dtype] for k, shape, dtype in nets.layout(nets.CORES[net]())]
    assert got == expected


def test_golden_content_features(golden_run, golden_frames, golden_close):
    golden_close(golden_run[0], golden_frames["content_features"], "content features")


def test_golden_distortion_features(golden_run, golden_frames, golden_close):
    golden_close(golden_run[1], golden_frames["distortion_features"], "distortion features")


def test_golden_limit_still_catches_a_wrong_tiling(golden_frames, golden_limit_of):
    # Column-major patch order instead of row-major: the fork's bug, 12.9 at most.
    want = golden_frames["distortion_features"][:1]
    patches = torch.from_numpy(want.reshape(3, 8, 3, 8, 128).transpose(0, 2, 1, 3, 4)
                               .reshape(9, 8, 8, 128).copy())
    wrong = patches.reshape(3, 3, 8, 8, 128).permute(1, 2, 0, 3, 4).reshape(1, 24, 24, 128)
    right = nets.tile_patch_features(patches).numpy()
    assert np.abs(right - want).max() == 0
    assert np.abs(wrong.numpy() - want).max() > 100 * golden_limit_of(want)
    assert golden_limit_of(want) < 1e-3


def test_golden_logits_and_scores(golden_run, golden_frames, golden_close):
    logits = golden_run[2]
    golden_close(logits, golden_frames["logits"], "logits")
    scores = nets.logit_to_score(torch.from_numpy(logits)).numpy()
    assert np.abs(scores - golden_frames["scores"]).max() < 1e-5


@pytest.mark.parametrize("video", ["sample_landscape", "sample_portrait"])
def test_per_frame_features_of_sample_videos(cores, reference_dir, video, golden_close):
    golden = np.load(reference_dir / f"{video}.golden.npz")
    pipeline = nets.UVQ1p5Torch(cores["content"], cores["distortion"], cores["aggregation"])
    # Two frames are enough to catch a layout or tiling error; all would be slow.
    x = F.to_unit_range(golden["frames_uint8"][:2])
    content, distortion = pipeline.features(x)
    golden_close(content.numpy(), golden["content_features"][:2], "content features")
    golden_close(distortion.numpy(), golden["distortion_features"][:2], "distortion features")
    logits = pipeline.logits(content, distortion).numpy().ravel()
    golden_close(logits, golden["per_frame_logits"][:2], "logits")


def test_export_wrappers_match_the_core_pipeline(cores, golden_frames, golden_close):
    frame = golden_frames["frames_uint8"][1]
    content_in, patches = F.net_inputs(frame)
    with torch.inference_mode():
        c = nets.export_module("content", cores["content"])(torch.from_numpy(content_in))
        d = nets.export_module("distortion", cores["distortion"])(torch.from_numpy(patches))
        score, logit = nets.export_module("aggregation", cores["aggregation"])(c, d)
    assert tuple(c.shape) == (1, 8, 8, 128) and tuple(d.shape) == (1, 24, 24, 128)
    golden_close(c.numpy()[0], golden_frames["content_features"][1], "content features")
    golden_close(d.numpy()[0], golden_frames["distortion_features"][1], "distortion features")
    golden_close(float(logit), golden_frames["logits"][1, 0], "logit")
    assert abs(float(score) - float(golden_frames["scores"][1, 0])) < 1e-5


def test_tiling_puts_patch_rows_first():
    # Patch k holds the constant k: the tiled grid must read 0 1 2 / 3 4 5 / 6 7 8.
    patches = torch.arange(9, dtype=torch.float32).reshape(9, 1, 1, 1).expand(9, 8, 8, 2)
    grid = nets.tile_patch_features(patches)[0, ::8, ::8, 0]
    assert grid.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nope.pth")):
        nets.load_core("content", tmp_path / "nope.pth")


def test_wrong_checkpoint_lists_first_mismatches(reference_dir):
    with pytest.raises(UserError) as err:
        nets.load_core("aggregation", reference_dir / "content_net_proxy.pth")
    message = str(err.value)
    assert "missing key conv1.weight" in message and "unexpected key features.0.0.conv.weight" in message


def test_same_padding_matches_tensorflow():
    assert nets.same_padding(256, 3, 2) == (0, 1)
    assert nets.same_padding(360, 3, 2) == (0, 1)
    assert nets.same_padding(45, 5, 2) == (2, 2)
    assert nets.same_padding(8, 2, 1) == (0, 1)
