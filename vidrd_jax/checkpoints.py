"""Checkpoints on disk.

Inference checkpoint (written by ``vidrd_jax.convert`` and ``vidrd_jax.export``, read by ``vidrd_jax.generate``)::

    DIR/model_config.json   {"unet": {...}, "vae": {...}, "text_encoder": {...}, "tokenizer": str | null,
                             "scheduler": {...}, "source": str}
    DIR/params/             Orbax PyTree checkpoint of {"unet": ..., "vae": ..., "text_encoder": ...}

Model configs are the ``to_dict()`` of each model's config dataclass.

Training checkpoint (written and read by ``vidrd_jax.train``, read by ``vidrd_jax.export``)::

    WORKDIR/checkpoints/<step>/state/    Orbax PyTree of the TrainState (params, optimizer state, EMA, step, RNG)
    WORKDIR/checkpoints/<step>/data/     Grain iterator state, process_<i>-of-<n>.json
    WORKDIR/checkpoints/<step>/config/   the run's ml_collections config as JSON

Given anything else where an inference checkpoint is expected (a file, a training workdir or one of its checkpoint
directories), the loaders say what it is and, for training checkpoints, the ``export`` command that converts them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

MODEL_CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
TRAIN_CHECKPOINT_DIR = "checkpoints"  # WORKDIR/checkpoints/<step>/...
TOKENIZER_DIR = "tokenizer"  # an inference checkpoint's copy of its tokenizer folder


def absolute(path: str) -> str:
    """Absolute local path, or ``path`` unchanged for a URL (``gs://bucket/dir``: Orbax and tensorboardX read it)."""
    return path if "://" in path else os.path.abspath(path)


def save_inference_checkpoint(directory: str, params: Mapping[str, Any], model_config: Mapping[str, Any]) -> str:
    """Writes ``params`` (a pytree of arrays) and ``model_config`` (JSON-able) to ``directory`` (local or URL)."""
    directory = absolute(directory)
    root = epath.Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(root / PARAMS_DIR, jax.tree.map(np.asarray, dict(params)), force=True)
    checkpointer.wait_until_finished()
    (root / MODEL_CONFIG_FILE).write_text(json.dumps(dict(model_config), indent=2, sort_keys=True))
    return directory


def copy_tokenizer(model_config: Mapping[str, Any], directory: str) -> dict[str, Any]:
    """Copies ``model_config["tokenizer"]`` (a tokenizer folder, or a model folder holding ``tokenizer/``) to
    ``directory/tokenizer``, so the checkpoint is self-contained; returns the model config pointing there."""
    tokenizer = model_config.get("tokenizer")
    if not tokenizer:
        return dict(model_config)
    nested = os.path.join(tokenizer, TOKENIZER_DIR)
    shutil.copytree(nested if os.path.isdir(nested) else tokenizer, os.path.join(directory, TOKENIZER_DIR),
                    dirs_exist_ok=True)
    return {**model_config, "tokenizer": TOKENIZER_DIR}


def training_workdir(directory: str) -> str | None:
    """The training workdir that ``directory`` is or lies in (``WORKDIR``, ``WORKDIR/checkpoints`` or
    ``WORKDIR/checkpoints/<step>``), else ``None``."""
    root = epath.Path(absolute(directory))
    if (root / TRAIN_CHECKPOINT_DIR).is_dir():
        return str(root)
    if (root / STATE_ITEM).is_dir() and root.name.isdigit():
        return str(root.parent.parent)
    if root.is_dir() and any(p.name.isdigit() and (p / STATE_ITEM).is_dir() for p in root.iterdir()):
        return str(root.parent)
    return None


def load_model_config(directory: str) -> dict[str, Any]:
    """Reads ``model_config.json``; if ``directory`` is not an inference checkpoint, a ``FileNotFoundError`` that
    says what it is instead (missing, a file, a training workdir: with the ``export`` command to run first)."""
    root = epath.Path(absolute(directory))
    path = root / MODEL_CONFIG_FILE
    if path.is_file():
        return json.loads(path.read_text())
    if not root.exists():
        raise FileNotFoundError(f"{directory!r} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"{directory!r} is a file, not an inference checkpoint directory "
                                f"({MODEL_CONFIG_FILE} + {PARAMS_DIR}/)")
    workdir = training_workdir(directory)
    if workdir is not None:
        raise FileNotFoundError(f"{directory!r} is a training checkpoint, not an inference checkpoint: convert it "
                                f"first with `python -m vidrd_jax.export --workdir {workdir} --out OUT` (add --ema "
                                f"for the EMA weights) and pass OUT")
    raise FileNotFoundError(f"{directory!r} is not a vidrd_jax inference checkpoint: {MODEL_CONFIG_FILE} not found")


def load_inference_checkpoint(directory: str, abstract_params: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ``(params, model_config)``. ``abstract_params`` (e.g. with shardings) restores onto devices."""
    model_config = load_model_config(directory)
    params_dir = epath.Path(absolute(directory)) / PARAMS_DIR
    if not params_dir.is_dir():
        raise FileNotFoundError(f"{directory!r} has no {PARAMS_DIR}/ directory")
    checkpointer = ocp.StandardCheckpointer()
    params = checkpointer.restore(params_dir, abstract_params) if abstract_params is not None \
        else checkpointer.restore(params_dir)
    return params, model_config


def _listing(kind: str, paths: list[str], limit: int = 10) -> str:
    """``"3 misshaped: a, b, c"`` (at most ``limit`` paths, then ``…``)."""
    return f"{len(paths)} {kind}: {', '.join(paths[:limit])}{' …' if len(paths) > limit else ''}"


# --- initialising training from an inference checkpoint ----------------------------------------------------------

def load_pretrained_params(directory: str, target: Mapping[str, Any], allow_missing: str = "") -> tuple[dict, list]:
    """Reads the parameters of inference checkpoint ``directory`` that ``target`` also has, onto ``target``'s devices.

    ``target`` is a tree of ``jax.ShapeDtypeStruct`` with ``sharding`` (the model being trained); values are cast to
    its dtypes. Models (top-level keys) that ``target`` lacks are skipped, so the VAE of a full VidRD checkpoint can
    be fine-tuned on its own. Every tensor of the other models must exist in ``target`` with the same shape; target
    parameters missing from
    the checkpoint are allowed only if their path matches the regex ``allow_missing`` (e.g. ``"temp_"``: VidRD's new
    temporal layers keep their fresh init on top of an SD-2.1 conversion). Returns ``(flat {path: array},
    missing_paths)``; raises one ``ValueError`` listing every problem.
    """
    from vidrd_jax.train_state import flatten, unflatten  # local: train_state is a higher layer

    params_dir = epath.Path(absolute(directory)) / PARAMS_DIR
    load_model_config(directory)
    stored = flatten(ocp.StandardCheckpointer().metadata(params_dir).item_metadata.tree)
    stored = {p: v for p, v in stored.items() if p.split("/", 1)[0] in target}
    wanted = flatten(target)
    unexpected = sorted(stored.keys() - wanted.keys())
    missing = sorted(wanted.keys() - stored.keys())
    misshaped = sorted(f"{p}: checkpoint {tuple(stored[p].shape)} vs model {tuple(wanted[p].shape)}"
                       for p in stored.keys() & wanted.keys() if tuple(stored[p].shape) != tuple(wanted[p].shape))
    rx = re.compile(allow_missing) if allow_missing else None
    disallowed = [p for p in missing if rx is None or not rx.search(p)]
    problems = [_listing(k, v) for k, v in (("unexpected", unexpected), ("missing (not matching allow_missing="
                                                                         f"{allow_missing!r})", disallowed),
                                            ("misshaped", misshaped)) if v]
    if problems:
        raise ValueError(f"{directory!r} does not fit the model being trained: " + "; ".join(problems))
    subset = unflatten({p: wanted[p] for p in stored})
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    restored = checkpointer.restore(params_dir, args=ocp.args.PyTreeRestore(
        item=subset, restore_args=ocp.checkpoint_utils.construct_restore_args(subset), partial_restore=True))
    return flatten(restored), missing


# --- train-state checkpoints -------------------------------------------------------------------------------------

STATE_ITEM, DATA_ITEM, CONFIG_ITEM = "state", "data", "config"
_STATE_ORDER = ("trainable", "frozen", "ema", "opt_state")  # parameters first when listing differences


class StateMismatchError(ValueError):
    """A training checkpoint whose arrays do not fit the train state being restored; the message names them."""


def array_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"trainable/unet/conv_in/kernel": shape}`` for every array leaf of a (possibly abstract) train state or of
    an Orbax metadata tree: dataclass fields, dict keys, list indices and named-tuple fields name the path."""
    name = lambda k: str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))  # noqa: E731
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(map(name, path)): tuple(x.shape) for path, x in leaves if hasattr(x, "shape")}


def state_differences(stored: Mapping[str, tuple[int, ...]], wanted: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps ``stored`` (checkpoint) shapes from restoring onto ``wanted`` (model) ones:
    ``["2 misshaped: trainable/a: checkpoint (3,) vs model (4,), …", "1 missing from the checkpoint: …"]``.

    If parameters (``trainable/``, ``frozen/``) differ, only they are listed: EMA and optimizer state follow them.
    """
    def order(path: str) -> tuple[int, str]:
        top = path.split("/", 1)[0]
        return (_STATE_ORDER.index(top) if top in _STATE_ORDER else len(_STATE_ORDER), path)

    is_param = lambda path: path.split("/", 1)[0] in _STATE_ORDER[:2]  # noqa: E731
    params = ({p: s for p, s in stored.items() if is_param(p)}, {p: s for p, s in wanted.items() if is_param(p)})
    if params[0] != params[1]:
        stored, wanted = params
    misshaped = [f"{p}: checkpoint {stored[p]} vs model {wanted[p]}"
                 for p in sorted(stored.keys() & wanted.keys(), key=order) if stored[p] != wanted[p]]
    missing = sorted(wanted.keys() - stored.keys(), key=order)
    unexpected = sorted(stored.keys() - wanted.keys(), key=order)
    return [_listing(kind, paths) for kind, paths in (("misshaped", misshaped), ("missing from the checkpoint",
                                                                                   missing),
                                                       ("not in the model", unexpected)) if paths]


class TrainCheckpointer:
    """Orbax ``CheckpointManager`` for training: ``DIR/<step>/{state, data, config}``.

    * ``state``: the whole train state (params, optimizer state, EMA, step, RNG, skip count), sharded arrays.
    * ``data``: the Grain iterator state, one JSON file per process (``grain.checkpoint.CheckpointHandler``).
    * ``config``: the run's config as JSON.

    Saves are asynchronous (``async_save``): ``save`` returns once arrays are copied off the devices and a background
    thread writes them. Orbax writes into a temporary directory and renames it when complete (on GCS: a
    ``commit_success`` marker), so a save cut short by pre-emption or ``SIGKILL`` is never listed by
    :meth:`latest_step` and never restored; leftovers are deleted when the next run opens the directory.
    """

    def __init__(self, directory: str, *, keep: int = 1, async_save: bool = True, read_only: bool = False):
        import grain  # deferred: only training needs it

        self.directory = absolute(directory)
        self._grain = grain
        if read_only and not epath.Path(self.directory).is_dir():
            raise FileNotFoundError(f"no training checkpoints in {self.directory!r}")
        # read_only (export, evaluation): never deletes anything, e.g. the temporary directory of a running save.
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                               cleanup_tmp_directories=not read_only,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=(STATE_ITEM, DATA_ITEM, CONFIG_ITEM))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any, config: Mapping[str, Any]) -> None:
        """Starts saving ``state``, the iterator position and ``config`` as checkpoint ``step``."""
        self.manager.save(step, force=True, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            DATA_ITEM: self._grain.checkpoint.CheckpointSave(data_iterator),
            CONFIG_ITEM: ocp.args.JsonSave(dict(config)),
        }))

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint ``step`` onto ``abstract_state`` 's shardings; moves ``data_iterator`` in place.

        Returns ``(state, config_dict)``. Raises :class:`StateMismatchError` naming every array whose path or shape
        differs (a changed model, trainable set or optimizer) before Orbax reads anything.
        """
        stored = array_shapes(ocp.PyTreeCheckpointHandler().metadata(
            epath.Path(self.directory) / str(step) / STATE_ITEM).tree)
        problems = state_differences(stored, array_shapes(abstract_state))
        if problems:
            raise StateMismatchError(f"checkpoint {step} in {self.directory!r} does not fit the train state of this "
                                     f"config: {'; '.join(problems)}")
        restored = self.manager.restore(step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardRestore(abstract_state),
            DATA_ITEM: self._grain.checkpoint.CheckpointRestore(data_iterator),
            CONFIG_ITEM: ocp.args.JsonRestore(),
        }))
        return restored[STATE_ITEM], dict(restored[CONFIG_ITEM])

    def restore_params(self, step: int, target: Mapping[str, Any]) -> dict[str, Any]:
        """Reads only the sub-tree ``target`` (e.g. ``{"trainable": …, "frozen": …}``) of checkpoint ``step`` 's
        state, as numpy arrays (``target`` leaves: ``jax.ShapeDtypeStruct`` without sharding)."""
        path = epath.Path(self.directory) / str(step) / STATE_ITEM
        restore_args = jax.tree.map(lambda x: ocp.RestoreArgs(restore_type=np.ndarray, dtype=x.dtype), target)
        return ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True))

    def read_config(self, step: int) -> dict[str, Any]:
        """The config saved with checkpoint ``step`` (JSON, as written by ``ocp.args.JsonSave``)."""
        return json.loads((epath.Path(self.directory) / str(step) / CONFIG_ITEM / "metadata").read_text())

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
