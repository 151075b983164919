"""3-D volumes: generated solids, folders of npy/npz/NIfTI files, batched volume views, and every
method training on them through the real entry point and the builders."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from sslkit.augment import simclr_views
from sslkit.augment.volumes import (
    ROTATIONS,
    gaussian_blur_3d,
    sample_volume_view,
    simclr_volume_views,
    volume_view_spec,
)
from sslkit.build import build_datamodule, build_method
from sslkit.data import CorruptDataError, SyntheticVolumes, VolumeFolder
from sslkit.data.sources.volume_folder import normalise_volume
from tests.conftest import BIN

TINY_VOLUMES = [
    "data=synthetic_volumes",
    "data.source.num_train=64",
    "data.source.num_test=32",
    "data.source.image_size=8",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.num_workers=0",
    "augment=volumes",
    "backbone=conv3d",
    "backbone.widths=[4,8]",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
    "eval.knn.k=[5]",
    "eval.linear.epochs=2",
    "eval.plots=false",
]


# ------------------------------------------------------------------------------------ views


def test_volume_view_parameters_follow_their_distributions():
    spec = volume_view_spec(gaussian_blur=0.3, noise=0.6, min_scale=0.25, rotate_prob=0.0)
    n = 4000
    params = sample_volume_view(spec, n, torch.Generator().manual_seed(0))
    linear = params.theta[:, :, :3].double()
    assert (
        torch.count_nonzero(linear - torch.diag_embed(torch.diagonal(linear, dim1=1, dim2=2))) == 0
    )
    diagonal = torch.diagonal(linear, dim1=1, dim2=2)
    flip_rate = (diagonal < 0).double().mean(dim=0)
    assert torch.allclose(flip_rate, torch.full((3,), 0.5, dtype=torch.float64), atol=0.03)
    volume = diagonal.abs().prod(dim=1)
    assert volume.min() >= 0.25 - 1e-6 and volume.max() <= 1.0 + 1e-6
    assert volume.mean() == pytest.approx(0.625, abs=0.02)  # uniform in [0.25, 1]
    ratio = diagonal.abs().max(dim=1).values / diagonal.abs().min(dim=1).values
    assert ratio.max() <= (4 / 3) / (3 / 4) + 1e-6
    centre = params.theta[:, :, 3]
    assert ((centre.abs() + diagonal.abs().float()) <= 1 + 1e-5).all()  # crops stay inside
    assert (params.sigma > 0).double().mean() == pytest.approx(0.3, abs=0.03)
    assert (params.noise > 0).double().mean() == pytest.approx(0.6, abs=0.03)
    assert params.sigma[params.sigma > 0].min() >= 0.1 and params.sigma.max() <= 1.5


def test_every_rotation_of_the_cube_is_drawn():
    spec = volume_view_spec(gaussian_blur=0.0, noise=0.0, min_scale=1.0, flip_prob=0.0)
    params = sample_volume_view(spec, 2000, torch.Generator().manual_seed(1))
    linear = params.theta[:, :, :3]
    rotation = linear / linear.abs().amax(dim=2, keepdim=True)
    found = {tuple(r.round().int().flatten().tolist()) for r in rotation}
    assert len(ROTATIONS) == 24 and len(found) == 24
    assert all(torch.linalg.det(r) > 0 for r in rotation[:50])


def test_a_seed_gives_the_same_views_and_another_seed_other_views():
    volumes = torch.randint(0, 256, (4, 1, 8, 8, 8), dtype=torch.uint8)
    views = simclr_volume_views(image_size=8, mean=[0.5], std=[0.25], in_channels=1)

    def make(seed: int) -> list[torch.Tensor]:
        return views.batch(volumes, torch.Generator().manual_seed(seed))

    first, again, other = make(0), make(0), make(1)
    assert views.backend == "batched" and len(first) == 2
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[0], first[1])
    assert first[0].shape == (4, 1, 8, 8, 8) and first[0].dtype == torch.float32


def test_a_view_without_photometric_changes_keeps_a_constant_volume():
    spec_keys = {"gaussian_blur": 1.0, "noise": 0.0, "intensity_prob": 0.0}
    views = simclr_volume_views(image_size=6, mean=[0.2], std=[0.5], in_channels=1, **spec_keys)
    volumes = torch.full((3, 1, 6, 6, 6), 153, dtype=torch.uint8)  # 0.6
    for view in views.batch(volumes, torch.Generator().manual_seed(0)):
        assert torch.allclose(view, torch.full_like(view, (0.6 - 0.2) / 0.5), atol=1e-5)


def test_inverted_views_turn_intensities_upside_down_and_keep_the_random_stream():
    volumes = torch.full((64, 1, 6, 6, 6), 51, dtype=torch.uint8)  # 0.2
    plain = {"gaussian_blur": 0.0, "noise": 0.0, "intensity_prob": 0.0}
    views = simclr_volume_views(
        image_size=6, mean=[0.0], std=[1.0], in_channels=1, invert_prob=0.5, **plain
    )
    (view, _) = views.batch(volumes, torch.Generator().manual_seed(0))
    values = view.flatten(1)
    inverted = torch.isclose(values, torch.full_like(values, 0.8), atol=1e-5).all(dim=1)
    kept = torch.isclose(values, torch.full_like(values, 0.2), atol=1e-5).all(dim=1)
    assert (inverted | kept).all() and 16 < int(inverted.sum()) < 48
    # without inversion no coin is drawn: recipes that leave it at 0 keep their views
    spec = volume_view_spec(gaussian_blur=0.5, noise=0.5)
    first = sample_volume_view(spec, 8, torch.Generator().manual_seed(3))
    assert not first.invert.any()
    with pytest.raises(ValueError, match="invert_prob"):
        volume_view_spec(gaussian_blur=0.5, noise=0.5, invert_prob=1.5)


def test_gaussian_blur_3d_keeps_sigma_zero_volumes_and_the_mean():
    volumes = torch.rand(2, 2, 6, 7, 8)
    blurred = gaussian_blur_3d(volumes, torch.tensor([0.0, 1.0]))
    assert torch.allclose(blurred[0], volumes[0])
    assert not torch.allclose(blurred[1], volumes[1])
    assert blurred[1].std() < volumes[1].std()
    point = torch.zeros(1, 1, 9, 9, 9)
    point[0, 0, 4, 4, 4] = 1.0
    spread = gaussian_blur_3d(point, torch.tensor([1.0]))
    assert spread.sum() == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(spread, spread.permute(0, 1, 3, 4, 2), atol=1e-6)  # isotropic


def test_image_views_refuse_volumes_and_name_the_volume_recipe():
    views = simclr_views(image_size=8, mean=[0.5], std=[0.25], in_channels=1)
    with pytest.raises(ValueError, match="augment=volumes"):
        views.batch(torch.zeros(2, 1, 8, 8, 8, dtype=torch.uint8))


def test_image_batches_are_refused_by_volume_views():
    views = simclr_volume_views(image_size=8, mean=[0.5], std=[0.25], in_channels=1)
    with pytest.raises(ValueError, match="augment=simclr"):
        views.batch(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


# ------------------------------------------------------------------------- synthetic data


def test_synthetic_volumes_are_deterministic_and_balanced():
    a = SyntheticVolumes(num_train=24, num_test=12, image_size=10, num_classes=6, seed=3)
    b = SyntheticVolumes(num_train=24, num_test=12, image_size=10, num_classes=6, seed=3)
    train = a.build("train")
    assert train.samples.shape == (24, 1, 10, 10, 10) and train.samples.dtype == np.uint8
    assert np.array_equal(train.samples, b.build("train").samples)
    assert train.targets == b.build("train").targets
    assert np.bincount(train.targets).tolist() == [4] * 6
    other = SyntheticVolumes(num_train=24, num_test=12, image_size=10, seed=4).build("train")
    assert not np.array_equal(train.samples, other.samples)
    assert not np.array_equal(a.build("test").samples[:12], train.samples[:12])
    assert a.in_channels == 1 and len(a.mean) == len(a.std) == 1 and a.std[0] > 0


def test_synthetic_volumes_refuse_too_many_classes():
    with pytest.raises(ValueError, match="num_classes must be between 2 and"):
        SyntheticVolumes(num_classes=50)


# --------------------------------------------------------------------------- volume folders


def _volume(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """A cube (label 0) or a sphere (label 1) in noise, at a random intensity scale."""
    axis = np.linspace(-1, 1, size)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    solid = np.maximum(np.abs(x), np.maximum(np.abs(y), np.abs(z))) < 0.5
    if label:
        solid = x**2 + y**2 + z**2 < 0.35
    scale = rng.uniform(50, 3000)
    return (solid * scale + rng.normal(0, 0.05 * scale, solid.shape)).astype(np.float32)


def volume_folder(root: Path, per_class: int = 6, size: int = 7) -> Path:
    """Class folders holding NIfTI (.nii, .nii.gz), .npy and .npz volumes of varied sizes."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(["cubes", "spheres"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            volume = _volume(rng, label, size + i % 3)
            kind = i % 4
            if kind == 0:
                nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / f"{i}.nii.gz")
            elif kind == 1:
                nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / f"{i}.nii")
            elif kind == 2:
                np.save(folder / f"{i}.npy", volume)
            else:
                np.savez(folder / f"{i}.npz", volume=volume)
    return root


def test_volume_folder_reads_every_format_normalised_and_resized(tmp_path):
    root = volume_folder(tmp_path / "volumes")
    source = VolumeFolder(root, image_size=8, test_fraction=0.5)
    train, test = source.build("train"), source.build("test")
    assert source.class_names == ["cubes", "spheres"] and source.num_classes == 2
    assert train.samples.shape == (6, 1, 8, 8, 8) and len(test) == 6
    assert sorted(train.targets) == [0, 0, 0, 1, 1, 1]
    for sample in (*train.samples, *test.samples):  # intensities from 50 to 3000 all span 0..255
        assert int(sample.max()) - int(sample.min()) > 150
    assert 0 < source.mean[0] < 1 and source.std[0] > 0


def test_normalisation_is_per_volume_and_clips_outliers():
    volume = np.random.default_rng(0).random((1, 6, 6, 6), dtype=np.float32)
    outlier = volume.copy()
    outlier[0, 0, 0, 0] = 1e6
    same = normalise_volume(volume, 6, (0.5, 99.5))
    assert np.array_equal(same, normalise_volume(volume * 1000 + 7, 6, (0.5, 99.5)))
    assert same.min() == 0 and same.max() == 255
    clipped = normalise_volume(outlier, 6, (0.5, 99.5))
    assert np.abs(clipped.astype(int) - same.astype(int)).mean() < 3
    assert normalise_volume(volume, 4, (0.5, 99.5)).shape == (1, 4, 4, 4)


def test_npz_arrays_are_read_by_key_and_channels_are_checked(tmp_path):
    folder = tmp_path / "v" / "a"
    folder.mkdir(parents=True)
    volume = np.random.default_rng(0).random((2, 5, 5, 5), dtype=np.float32)
    np.savez(folder / "x.npz", other=np.zeros(3), volume=volume)
    wrong = VolumeFolder(tmp_path / "v", test_root=tmp_path / "v", image_size=4, in_channels=1)
    with pytest.raises(CorruptDataError, match=r"x\.npz.*shape \(3,\)"):
        wrong.build("train")
    by_key = VolumeFolder(tmp_path / "v", test_root=tmp_path / "v", in_channels=2, image_size=4,
                          array_key="volume")  # fmt: skip
    assert by_key.build("train").samples.shape == (1, 2, 4, 4, 4)


def test_a_nifti_folder_trains_and_evaluates_through_sslkit_train(tmp_path, run_in_process):
    root = volume_folder(tmp_path / "volumes")
    run_dir = tmp_path / "run"
    done = run_in_process(
        [
            BIN / "sslkit-train",
            *[o for o in TINY_VOLUMES if not o.startswith(("data=", "data.source."))],
            "data=volume_folder",
            f"data.source.root={root}",
            "data.source.image_size=8",
            "data.source.test_fraction=0.5",
            "data.batch_size=4",
            "data.eval_batch_size=8",
            "eval.knn.k=[3]",
            "eval.plots=true",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "volumes"
    assert set(results["baselines"]) == {"raw_pixels", "random_init"}
    for encoder in (results["metrics"], *results["baselines"].values()):
        assert {"knn/top1@3", "linear/top1"} <= set(encoder)
    assert results["protocol"]["settings"]["knn@3"]["num_train"] == 6
    assert (run_dir / "plots" / "retrieval.png").is_file()


def test_a_corrupt_volume_stops_the_run_naming_the_file(tmp_path, run_in_process):
    root = volume_folder(tmp_path / "volumes")
    (root / "cubes" / "broken.nii.gz").write_bytes(gzip.compress(b"not a NIfTI header")[:20])
    (root / "spheres" / "cut.npy").write_bytes(b"\x93NUMPY\x01\x00")
    done = run_in_process(
        [
            BIN / "sslkit-train",
            *[o for o in TINY_VOLUMES if not o.startswith(("data=", "data.source."))],
            "data=volume_folder",
            f"data.source.root={root}",
            "data.source.test_fraction=0.5",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "error: Cannot read volume" in output, output[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    named = [name for name in ("broken.nii.gz", "cut.npy") if name in output]
    assert named, output[-3000:]  # the split that holds a bad file names it
    assert "Remove or replace" in output


# ------------------------------------------------------------------------ methods on volumes


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=simclr"],
        ["method=byol", "augment=byol_volumes"],
        ["method=triplet"],
        ["method=pairwise"],
        ["method=supervised", "augment.num_views=1"],
        ["method=inpainting", "augment.num_views=1", "method.mask.patch_size=2"],
        ["method=inpainting", "augment.num_views=1", "method.mask.mode=block"],
    ],
    ids=lambda o: "-".join(v.split("=")[1] for v in o if "." not in v.split("=")[0]) or o[0],
)
def test_every_method_takes_a_training_step_on_volumes(hydra_run, overrides):
    cfg = hydra_run("train", [*TINY_VOLUMES, *overrides])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    method = build_method(cfg, datamodule)
    views, labels = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert views[0].shape == (16, 1, 8, 8, 8)
    before = [p.detach().clone() for p in method.backbone.parameters()]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    loss = method.training_step((views, labels), 0)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    optimizer.step()
    assert any(
        not torch.equal(a, b) for a, b in zip(before, method.backbone.parameters(), strict=True)
    )
    images, _ = next(iter(datamodule.eval_dataloader("test")))
    assert images.shape == (32, 1, 8, 8, 8) and images.dtype == torch.float32
    assert method.forward_features(images).shape == (32, method.backbone.feature_dim)
