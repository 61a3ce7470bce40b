"""Data pipeline throughput: clips/s of one worker (one process, one thread) at 256 x 256 x 8 keyframes.

    python benchmarks/data_throughput.py [--seconds 10] [--videos 4] [--frames 150] [--size 360x640] [--workers 2]

Measures ``Source.load`` (decode + sample + resize + crop + caption) for
1. video decode: H.264 mp4s (``--size``, ``--frames`` at 30 fps, x264 default GOP), 8 keyframes every 4 frames
   from a random start (paper §5.1), shorter side -> 256, random 256 x 256 crop;
2. pseudo-video generation: JPEG photos (skimage, upscaled to ~1024 px like web images) -> random zoom/pan;
3. the built-in synthetic shapes renderer;
then, with ``--workers N``, the end-to-end ``make_iterator`` (float32 batches of 8) with N worker processes.
Media files are generated in a temporary folder first (not timed).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image


def _make_videos(root: str, count: int, frames: int, height: int, width: int) -> str:
    import skimage.data

    from vidrd_jax import media

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    lines = []
    for i in range(count):
        photo = np.asarray(Image.fromarray(photos[i % len(photos)]).resize((width * 2, height * 2)))
        path = os.path.join(root, f"video_{i}.mp4")
        with media.VideoWriter(path, fps=30) as writer:
            for t in range(frames):  # a slow diagonal pan over the photo: real texture and motion
                y = int((height * t) / frames)
                x = int((width * t) / frames)
                writer.write(photo[y:y + height, x:x + width])
        lines.append(f'{{"path": "{path}", "caption": "a panning shot {i}"}}')
    index = os.path.join(root, "videos.jsonl")
    with open(index, "w") as f:
        f.write("\n".join(lines) + "\n")
    return index


def _make_images(root: str) -> str:
    import skimage.data

    lines = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        image = Image.fromarray(getattr(skimage.data, name)())
        scale = 1024 / max(image.size)
        image = image.resize((int(image.size[0] * scale), int(image.size[1] * scale)), Image.Resampling.BICUBIC)
        path = os.path.join(root, f"{name}.jpg")
        image.save(path, quality=92)
        lines.append(f'{{"path": "{path}", "caption": "a photo of {name}"}}')
    index = os.path.join(root, "images.jsonl")
    with open(index, "w") as f:
        f.write("\n".join(lines) + "\n")
    return index


def _clips_per_second(source, seconds: float) -> tuple[float, int]:
    rng = np.random.default_rng(0)
    source.load(0, rng)  # warm-up (imports, caches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        frames, _ = source.load(count % len(source), rng)
        assert frames.shape == (8, 256, 256, 3)
        count += 1
    return count / (time.perf_counter() - start), count


def _pipeline_clips_per_second(cfg, seconds: float) -> float:
    import data_pipelines

    with data_pipelines.make_iterator(cfg, batch_size=8) as it:
        for _ in range(2 * max(1, cfg.worker_count)):  # start-up (worker spawn, first batch of each) not timed
            next(it)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            count += len(next(it)["caption"])
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=150, help="frames per generated video (30 fps)")
    parser.add_argument("--size", default="360x640", help="HxW of the generated videos")
    parser.add_argument("--workers", type=int, default=0, help="also time make_iterator with N worker processes")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    from data_pipelines import config as config_lib, registry, transforms

    sampling = transforms.Sampling(num_frames=8, stride=4, height=256, width=256)
    with tempfile.TemporaryDirectory() as root:
        video_index = _make_videos(root, args.videos, args.frames, height, width)
        image_index = _make_images(root)
        specs = {
            f"video decode (mp4 {height}x{width}, {args.frames} frames)":
                {"name": "videos", "kind": "video_index", "params": {"index": video_index}},
            "pseudo-video (jpeg ~1024 px, zoom/pan)":
                {"name": "images", "kind": "image_index", "params": {"index": image_index}},
            "built-in shapes (synthetic)": {"name": "shapes", "kind": "shapes", "params": {}},
        }
        print(f"clips of 8 x 256 x 256 x 3, one worker (1 process, 1 thread), {args.seconds:.0f} s each")
        for label, spec in specs.items():
            rate, count = _clips_per_second(registry.make_source(spec, sampling), args.seconds)
            print(f"  {label:45s} {rate:7.1f} clips/s per worker  ({count} clips)")
        if args.workers > 0:
            cfg = config_lib.get_default_config()
            cfg.sources = [config_lib.source("videos", "video_index", 1.0, index=video_index),
                           config_lib.source("images", "image_index", 1.0, index=image_index)]
            cfg.worker_count, cfg.read_threads = args.workers, 1
            rate = _pipeline_clips_per_second(cfg, args.seconds)
            print(f"  make_iterator, {args.workers} workers, video+image mix  {rate:7.1f} clips/s total "
                  f"({rate / args.workers:.1f} per worker, float32 batches of 8)")


if __name__ == "__main__":
    main()
