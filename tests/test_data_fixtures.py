"""Helpers shared by the data tests: real media files with a decodable frame index, corrupt files, index files."""
import json
import os

import numpy as np
import skimage.data
from PIL import Image

from vidrd_jax import media

STEP = 10  # frame t: red = STEP * (t % 25), blue = STEP * (t // 25), uniform (survives lossy codecs, resizes, crops)


def video_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    t = np.arange(num_frames)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 0] = (STEP * (t % 25))[:, None, None]
    frames[..., 1] = np.linspace(40, 200, width)[None, None, :].astype(np.uint8)
    frames[..., 2] = (STEP * (t // 25))[:, None, None]
    return frames


def make_video(path: str, num_frames: int, height: int = 48, width: int = 64, fps: float = 8.0) -> str:
    media.write_video(path, video_frames(num_frames, height, width), fps=fps)
    return path


def frame_indices(frames: np.ndarray) -> list[int]:
    """Frame index of each uint8 ``[T, H, W, 3]`` frame (or float [-1, 1] frame)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (frames + 1.0) * 127.5
    return [int(round(float(f[..., 0].mean()) / STEP)) + 25 * int(round(float(f[..., 2].mean()) / STEP))
            for f in frames]


def make_corrupt_set(root: str, good_video: str) -> dict[str, str]:
    """truncated mp4, zero-byte mp4, text file named .mp4, 2-frame gif; returns name -> path."""
    paths = {name: os.path.join(root, name) for name in ("truncated.mp4", "empty.mp4", "text.mp4", "short.gif")}
    data = open(good_video, "rb").read()
    with open(paths["truncated.mp4"], "wb") as f:
        f.write(data[: len(data) // 3])
    open(paths["empty.mp4"], "wb").close()
    with open(paths["text.mp4"], "w") as f:
        f.write("this is not a video\n" * 50)
    media.write_video(paths["short.gif"], video_frames(2, 32, 32))
    return paths


def write_jsonl(path: str, rows: list) -> str:
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def write_images(root: str) -> dict[str, str]:
    """RGB jpg, grayscale png, RGBA png (transparent left half), tiny png, truncated jpg."""
    astronaut = skimage.data.astronaut()
    paths = {name: os.path.join(root, name) for name in
             ("rgb.jpg", "gray.png", "rgba.png", "tiny.png", "truncated.jpg")}
    Image.fromarray(astronaut).save(paths["rgb.jpg"], quality=95)
    Image.fromarray(skimage.data.camera()[::4, ::4]).save(paths["gray.png"])
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 32:, 3] = 255  # right half opaque red, left half fully transparent (with black RGB)
    Image.fromarray(rgba, "RGBA").save(paths["rgba.png"])
    Image.fromarray(astronaut[:8, :8]).save(paths["tiny.png"])
    data = open(paths["rgb.jpg"], "rb").read()
    with open(paths["truncated.jpg"], "wb") as f:
        f.write(data[: len(data) // 4])
    return paths
