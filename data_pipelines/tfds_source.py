"""TFDS datasets stored as ``array_record`` (random access through ``tfds.data_source``).

Optional: needs the ``tfds`` extra (``pip install vidrd_jax[tfds]``); without ``tensorflow_datasets`` the source
raises ImportError naming the source and the extra. Examples are feature dicts; ``video_key`` names a uint8
``[T, H, W, 3]`` video (or ``[H, W, 3]`` image, which becomes a pseudo-video) and ``caption_key`` a string, bytes,
or list of them. Clips are sampled like index videos (keyframes every ``stride`` from a random start).
"""
from __future__ import annotations

import numpy as np

from data_pipelines import base, pseudo_video, stats, transforms
from vidrd_jax import media


def _import_tfds(source_name: str):
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(f"data source {source_name!r} (kind 'tfds') needs tensorflow_datasets, which is not "
                          f"installed: pip install 'vidrd_jax[tfds]'") from e
    return tfds


class TfdsSource(base.Source):
    """``tfds.data_source(dataset, split=split, data_dir=data_dir)`` examples as captioned clips / images."""

    kind = "tfds"

    def __init__(self, name: str, sampling: transforms.Sampling, *, dataset: str, split: str = "train",
                 data_dir: str | None = None, video_key: str = "video", caption_key: str = "caption",
                 min_side: int | None = None,
                 zoom_range: tuple[float, float] = pseudo_video.ZoomPan.zoom_range,
                 pan_range: tuple[float, float] = pseudo_video.ZoomPan.pan_range):
        super().__init__(name, sampling, min_side=min_side,
                         zoom_pan=pseudo_video.ZoomPan(tuple(zoom_range), tuple(pan_range)))
        self.dataset, self.split, self.data_dir = dataset, split, data_dir
        self.video_key, self.caption_key = video_key, caption_key
        self._examples = self._open()
        if len(self._examples) == 0:
            raise stats.SourceFailedError(f"data source {name!r}: TFDS {dataset!r} split {split!r} is empty")

    def _open(self):
        tfds = _import_tfds(self.name)
        return tfds.data_source(self.dataset, split=self.split, data_dir=self.data_dir)

    def __getstate__(self) -> dict:  # workers reopen the data source instead of pickling it
        state = dict(self.__dict__)
        state["_examples"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._examples = self._open()

    def __len__(self) -> int:
        return len(self._examples)

    def load_raw(self, index: int, rng: np.random.Generator, keyframes: int) -> base.Raw:
        example = self._examples[index]
        key = f"{self.dataset}/{self.split}/{index}"
        if self.video_key not in example or self.caption_key not in example:
            raise stats.SkipError(stats.BAD_ROW, f"{key}: missing feature {self.video_key!r} or {self.caption_key!r}")
        captions = example[self.caption_key]
        captions = captions.tolist() if isinstance(captions, np.ndarray) else captions
        captions = base.clean_captions(captions)
        if not captions:
            raise stats.SkipError(stats.EMPTY_CAPTION, f"{key}: no caption")
        video = np.asarray(example[self.video_key])
        if video.ndim == 3 and video.shape[-1] in (1, 3, 4):
            video = video[None]
            kind = base.IMAGE
        else:
            kind = base.CLIP
        if video.ndim != 4 or video.shape[-1] not in (1, 3, 4) or video.dtype != np.uint8 or len(video) == 0:
            raise stats.SkipError(media.UNREADABLE, f"{key}: {video.dtype} {video.shape} is not uint8 [T, H, W, C]")
        if video.shape[-1] == 1:
            video = np.repeat(video, 3, axis=-1)
        video = video[..., :3]  # alpha dropped: TFDS video features carry none in practice
        self.check_size(*video.shape[1:3], key)
        s = self.sampling
        if kind == base.IMAGE:
            image = pseudo_video.fit_for_zoom(video[0], (s.height, s.width), self.zoom_pan.zoom_range[1])
            return base.Raw(np.ascontiguousarray(image[None]), captions, kind, key)
        indices = transforms.sample_frame_indices(rng, 0, len(video), keyframes, s.stride, key=key)
        frames = transforms.resize_frames(video[indices], transforms.shorter_side_size(*video.shape[1:3],
                                                                                        s.height, s.width))
        return base.Raw(np.ascontiguousarray(frames), captions, kind, key)
