"""The metrics harness: FVD (I3D), IS (C3D), CLIPSIM and frame consistency (CLIP), VBench-style long-video metrics,
the UCF-101 zero-shot protocol and the ``python -m vidrd_jax.evaluate`` CLI.

Modules (import what you need; this package imports nothing heavy):

* :mod:`.clip_vision` / :mod:`.clip_metrics`: the CLIP towers in transformers' layout; CLIPSIM, frame consistency.
* :mod:`.long_video_metrics`: temporal flickering, subject consistency, dynamic degree (OpenCV flow), junction vs
  inside-clip change (numpy, CPU).
* :mod:`.i3d` / :mod:`.fvd`: the Fréchet Video Distance; :mod:`.c3d` / :mod:`.inception_score`: the video IS.
* :mod:`.features`: sharded feature extraction and the per-file ``.npz`` cache.
* :mod:`.protocol`: scoring a set of video files, reports (JSON + markdown), the UCF-101 zero-shot recipe.
"""
