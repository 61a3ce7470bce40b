"""Grain data pipelines for VidRD: captioned videos, image pseudo-videos, ArrayRecord shards and the built-in
offline dataset, mixed by weight into batches ``{"video": float32 [B, F, H, W, 3] in [-1, 1], "caption": str [B]}``.

Importing the package registers it with the trainer (:mod:`vidrd_jax.data_interface`): the trainer never imports
it. The offline captioning command (``python -m data_pipelines.caption``) and its library (``captioning/``) are
imported on their own (they need torch).
"""
from data_pipelines import config
from data_pipelines.config import get_default_config, get_paper_config, validate_config
from data_pipelines.loader import DataIterator, make_iterator, make_sources
from vidrd_jax import data_interface

__all__ = ["DataIterator", "get_default_config", "get_paper_config", "make_iterator", "make_sources",
           "validate_config"]

data_interface.register(data_interface.DataPipeline(
    default_config=get_default_config, validate_config=validate_config, make_iterator=make_iterator,
    frame_size=config.resolution_hw, split_config=config.with_shapes_split, splits=("train", "heldout", "all")))
