"""The offline captioning library behind ``python -m data_pipelines.caption`` (the command, paper §4.2):
``captioners`` (label-conditioned frame captioning with a VLM: BLIP-2) and ``segments`` (segment-then-caption of
long videos with CLIP relevance scores).

torch / transformers are imported lazily (the ``caption`` extra): importing these modules stays torch-free.
"""
