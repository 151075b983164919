"""Decode throughput of PyAV and torchcodec on small generated mp4 clips (CPU, one thread).

Writes ``--clips`` H.264 clips of ``--frames`` frames at ``--size`` px with PyAV into a
temporary folder, then decodes every clip completely to a uint8 ``(T, H, W, 3)`` array with
each decoder, ``--repeats`` times, and prints frames per second. A decoder that cannot be
imported or cannot open a clip is reported with its error (that is a finding, not a crash).

    python experiments/video_volumes/bench_decoders.py --clips 8 --frames 64 --size 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write_clips(folder: Path, clips: int, frames: int, size: int) -> list[Path]:
    import av

    rng = np.random.default_rng(0)
    paths = []
    for i in range(clips):
        path = folder / f"clip{i}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for t in range(frames):
                frame = np.roll(base, 2 * t, axis=1)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def decode_pyav(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def decode_torchcodec(path: Path) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1)
    return decoder[:].numpy()


def measure(name: str, decode, paths: list[Path], repeats: int) -> None:
    try:
        frames = decode(paths[0]).shape[0]
    except Exception as exc:  # noqa: BLE001 - any failure to load or open is the finding
        print(f"{name:>10}: unavailable: {type(exc).__name__}: {str(exc).strip()[:300]}")
        return
    start = time.perf_counter()
    total = 0
    for _ in range(repeats):
        for path in paths:
            total += decode(path).shape[0]
    seconds = time.perf_counter() - start
    print(
        f"{name:>10}: {total / seconds:8.0f} frames/s  ({seconds / (repeats * len(paths)) * 1e3:.1f}"
        f" ms per clip of {frames} frames)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp), args.clips, args.frames, args.size)
        print(f"{args.clips} clips, {args.frames} frames of {args.size}x{args.size}, H.264")
        measure("pyav", decode_pyav, paths, args.repeats)
        measure("torchcodec", decode_torchcodec, paths, args.repeats)


if __name__ == "__main__":
    main()
