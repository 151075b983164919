"""Video: the synthetic moving shapes, clip views, clip folders through the real entry point,
the multi-clip result and the message for a clip that cannot be decoded."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sslkit.augment import simclr_views
from sslkit.augment.clips import clip_starts, clip_views
from sslkit.data import MOTIONS, SyntheticClips, VideoFolder
from sslkit.data.sources.base import CorruptDataError
from sslkit.eval import fit_linear_probe
from tests.conftest import BIN

SMALL = {"num_train": 100, "num_test": 50, "image_size": 16, "num_frames": 8}


def test_synthetic_clips_are_deterministic_balanced_videos() -> None:
    first = SyntheticClips(**SMALL, seed=3).build("train")
    again = SyntheticClips(**SMALL, seed=3).build("train")
    other = SyntheticClips(**SMALL, seed=4).build("train")
    assert first.samples.shape == (100, 3, 8, 16, 16) and first.samples.dtype == np.uint8
    assert np.array_equal(first.samples, again.samples) and first.targets == again.targets
    assert not np.array_equal(first.samples, other.samples)
    assert np.bincount(first.targets).tolist() == [100 // len(MOTIONS)] * len(MOTIONS)
    # The shapes move: consecutive frames differ by more than the pixel noise.
    assert np.abs(np.diff(first.samples.astype(float), axis=2)).mean() > 3


def _probe_accuracy(train: np.ndarray, train_y, test: np.ndarray, test_y) -> float:
    mean, std = train.mean(0), train.std(0) + 1e-6
    features = [torch.from_numpy((x - mean) / std).float() for x in (train, test)]
    probe = fit_linear_probe(
        features[0], torch.tensor(train_y), num_classes=len(MOTIONS), epochs=30, lr=0.05
    )
    predicted = probe.scores(features[1]).argmax(dim=1)
    return float((predicted == torch.tensor(test_y)).float().mean())


@pytest.mark.parametrize("colours", [True, False])
def test_one_frame_does_not_tell_the_motion_but_two_do(colours: bool) -> None:
    """A linear probe on the pixels of one frame stays near chance (1/4); on the difference of
    two frames a few apart it does better, so the class lives in the motion (the raw difference
    is a weak motion cue for a linear probe, hence the modest margin). With and without the
    random colours (``colours=False``, the synthetic presets)."""
    source = SyntheticClips(
        num_train=1000, num_test=500, image_size=16, num_frames=8, colours=colours
    )
    train, test = source.build("train"), source.build("test")

    def frame(split, t: int) -> np.ndarray:
        return split.samples[:, :, t].reshape(len(split), -1).astype(np.float64)

    one = _probe_accuracy(frame(train, 3), train.targets, frame(test, 3), test.targets)
    moved = _probe_accuracy(
        np.abs(frame(train, 6) - frame(train, 2)),
        train.targets,
        np.abs(frame(test, 6) - frame(test, 2)),
        test.targets,
    )
    assert one < 0.33, one
    assert moved > one + 0.05, (one, moved)  # measured with colours: 0.246 and 0.356


def _views(**overrides):
    settings = {"min_scale": 1.0, "cj_prob": 0.0, "random_gray_scale": 0.0, **overrides}
    recipe = functools.partial(simclr_views, **settings)
    geometry = {"image_size": 12, "mean": [0.5] * 3, "std": [0.25] * 3, "in_channels": 3}
    return clip_views(views=recipe, frames=3, stride=2, **geometry)


def test_clip_views_are_clips_at_their_own_times_with_one_flip_per_clip() -> None:
    videos = torch.randint(0, 256, (64, 3, 9, 12, 12), dtype=torch.uint8)
    views = _views().batch(videos, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(64, 3, 3, 12, 12)] * 2
    starts, flips = [], []
    for view in views:
        pixels = (view * 0.25 + 0.5) * 255
        for video, clip in zip(videos.float(), pixels, strict=True):
            found = [
                (start, flip)
                for start in range(9 - 4)
                for flip in (False, True)
                if torch.allclose(
                    clip,
                    video[:, start : start + 5 : 2].flip(-1) if flip else video[:, start::2][:, :3],
                    atol=1e-3,
                )
            ]
            assert len(found) == 1, "a clip is the same window and the same flip on every frame"
            starts.append(found[0][0])
            flips.append(found[0][1])
    assert 0 < sum(flips) < len(flips), "clips are flipped half the time, whole"
    first, second = starts[:64], starts[64:]
    assert any(a != b for a, b in zip(first, second, strict=True)), "views start at own times"
    assert set(starts) == set(range(5)), "every start that fits is drawn"


def test_clip_views_draw_their_stride_per_clip() -> None:
    """With ``strides``, each clip takes its frames at its own stride (a different apparent
    speed per clip), every clip fits the video, and both strides are drawn."""
    frame_ids = torch.arange(12, dtype=torch.uint8).view(1, 1, 12, 1, 1)
    videos = frame_ids.expand(256, 3, 12, 8, 8).contiguous()
    recipe = functools.partial(simclr_views, min_scale=1.0, cj_prob=0.0, random_gray_scale=0.0)
    geometry = {"image_size": 8, "mean": [0.0] * 3, "std": [1 / 255] * 3, "in_channels": 3}
    views = clip_views(views=recipe, frames=4, stride=2, strides=[2, 3], **geometry)
    found = set()
    for view in views.batch(videos, generator=torch.Generator().manual_seed(0)):
        frames = view[:, 0, :, 0, 0].round().long()  # the frame index each clip frame shows
        steps = frames.diff(dim=1)
        assert (steps == steps[:, :1]).all() and frames.min() >= 0 and frames.max() <= 11
        found |= set(steps[:, 0].tolist())
    assert found == {2, 3}
    with pytest.raises(ValueError, match="spans 13 frames but the videos have 12"):
        clip_views(views=recipe, frames=4, stride=2, strides=[4], **geometry).batch(videos)


def test_clip_views_follow_the_seed() -> None:
    videos = torch.randint(0, 256, (8, 3, 9, 16, 16), dtype=torch.uint8)
    views = _views(cj_prob=0.8, min_scale=0.3)

    def draw(seed: int) -> list[torch.Tensor]:
        return views.batch(videos, generator=torch.Generator().manual_seed(seed))

    assert all(torch.equal(a, b) for a, b in zip(draw(1), draw(1), strict=True))
    assert not torch.equal(draw(1)[0], draw(2)[0])


def test_evaluation_clips_are_evenly_spaced_and_centred() -> None:
    assert clip_starts(16, 8, 1, 1) == [4]
    assert clip_starts(16, 4, 2, 4) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="spans 15 frames but the videos have 8"):
        clip_starts(8, 8, 2, 1)


def write_clip(path: Path, colour: tuple[int, int, int], step: int, frames: int = 10) -> None:
    """A tiny H.264 clip: a square of ``colour`` moving ``step`` pixels per frame."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 24
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = np.full((24, 24, 3), 30, dtype=np.uint8)
            x = (2 + step * t) % 16
            image[8:16, x : x + 8] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def clip_folder(root: Path, per_class: int = 4) -> Path:
    for label, (colour, step) in {"left": ((200, 60, 60), -1), "right": ((60, 200, 60), 1)}.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            write_clip(root / label / f"{i}.mp4", colour, step * (1 + i % 2))
    return root


VIDEO_RUN = [
    "data=videofolder",
    "augment=clips",
    "backbone=conv3d",
    "backbone.widths=[4,8]",
    "data.source.image_size=16",
    "data.source.num_frames=8",
    "data.frames=4",
    "data.stride=1",
    "data.eval_clips=3",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
    "eval.knn.k=[3]",
    "eval.linear.epochs=3",
    "eval.plots=false",
]


def test_clip_folder_trains_and_evaluates_end_to_end(tmp_path: Path, run_in_process) -> None:
    train = clip_folder(tmp_path / "train")
    test = clip_folder(tmp_path / "test", per_class=2)
    source = VideoFolder(train, test_root=test, image_size=16, num_frames=12)
    video, label = source.build("train")[0]
    assert video.shape == (3, 12, 16, 16) and video.dtype == torch.uint8 and label == 0
    assert torch.equal(video[:, -1], video[:, -2]), "a 10-frame clip repeats its last frame"

    run_dir = tmp_path / "run"
    done = run_in_process(
        [
            BIN / "sslkit-train",
            *VIDEO_RUN,
            f"data.source.root={train}",
            f"data.source.test_root={test}",
            "data.num_workers=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "train" and results["protocol"]["num_test"] == 4
    for metrics in (results["metrics"], *results["baselines"].values()):
        assert {"knn/top1@3", "multiclip/knn/top1@3", "multiclip/linear/top1"} <= set(metrics)
    settings = results["protocol"]["settings"]["multiclip/knn@3"]
    assert settings["clips_per_video"] == 3 and "mean of the features" in settings["features"]


def test_corrupt_clip_is_one_message_naming_the_file(tmp_path: Path, run_in_process) -> None:
    train = clip_folder(tmp_path / "train")
    (train / "left" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 cut short")
    source = VideoFolder(train)
    with pytest.raises(CorruptDataError, match=r"Cannot decode video .*broken\.mp4"):
        for split in ("train", "test"):
            list(source.build(split))
    done = run_in_process(
        [
            BIN / "sslkit-train",
            *VIDEO_RUN,
            f"data.source.root={train}",
            "data.source.test_fraction=0.3",
            "data.num_workers=1",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 1
    message = done.stderr
    assert "Cannot decode video" in message and "broken.mp4" in message, message[-3000:]
    assert "Remove or replace this file" in message
