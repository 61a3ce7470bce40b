"""Grain data pipelines for VidRD: captioned videos, image pseudo-videos, ArrayRecord shards and the built-in
offline dataset, mixed by weight into batches ``{"video": float32 [B, F, H, W, 3] in [-1, 1], "caption": str [B]}``.

Offline captioning tools (``caption``, ``captioning``, ``segment``) are imported on their own (they need torch).
"""
from data_pipelines.config import get_default_config, get_paper_config, validate_config
from data_pipelines.pipeline import DataIterator, make_iterator, make_sources

__all__ = ["DataIterator", "get_default_config", "get_paper_config", "make_iterator", "make_sources",
           "validate_config"]
