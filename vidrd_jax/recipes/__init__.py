"""Recipes: multi-stage runs built on the trainer, the generator and the evaluation (the top layer; nothing in
``vidrd_jax`` below imports them).

* ``python -m vidrd_jax.recipes --config configs/demo.py --workdir workdirs/demo``: runs (or resumes) a staged config
  (:mod:`.stages`).
* :mod:`.placeholders`: ``{workdir}`` / ``{export:NAME}`` in a staged config's strings.
* :mod:`.demo_evaluation`: the demo's prompt-following and smoothness measures (its own CLI,
  ``python -m vidrd_jax.recipes.demo_evaluation --workdir workdirs/demo``).
"""
