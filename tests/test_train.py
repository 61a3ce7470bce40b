"""In-process trainer tests on the 8 fake CPU devices, with the tiny config (``configs/tiny.py``).

The module builds two trainers for the same config, one on a 2 x 4 (data x fsdp) mesh and one on a single device,
creates the state once (sharded: restored onto the shardings, optimizer state and EMA made by ``jit(out_shardings=
...)``) and compiles each step once; the tests share them.
"""
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P
from numerics import assert_close

import data_pipelines
from vidrd_jax import checkpoints, parallel, train, train_config
from vidrd_jax import train_state as ts
from vidrd_jax.tasks import Task
from vidrd_jax.tasks.denoising import PAPER_TRAINABLE_REGEX, DenoisingTask

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _assert_trees_equal(a, b):
    """Bitwise equality (same dtype, same bits; NaN == NaN)."""
    la, lb = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), jax.tree_util.keystr(path)


def write_random_checkpoint(config, directory: str, seed: int = 0) -> str:
    """Random weights for ``config`` 's models drawn on the host (nothing to compile), as an inference checkpoint."""
    task = DenoisingTask(config)
    shapes, _ = task.abstract_params()
    rng = np.random.default_rng(seed)

    def leaf(path, x):
        name = path[-1].key
        if name in ("scale", "bias"):
            return np.full(x.shape, name == "scale", x.dtype)
        std = 1.0 / np.sqrt(np.prod(x.shape[:-1])) if name == "kernel" else 0.02
        return (std * rng.standard_normal(x.shape)).astype(x.dtype)

    params, model_config = task.export(jax.tree_util.tree_map_with_path(leaf, shapes), "float32")
    return checkpoints.save_inference_checkpoint(directory, params, model_config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_config):
    config = tiny_config()
    # Start from a checkpoint (the SD-2.1 path): no init program to compile. Fresh init: test_train_processes.py.
    config.model.init_from = write_random_checkpoint(config, str(tmp_path_factory.mktemp("init")))
    config.batch_size = 8  # 8 batch shards on the 2 x 4 mesh
    config.optimizer.warmup_steps = 0  # a non-zero learning rate from the first step
    # A large Adam epsilon makes the first update linear in the gradient (instead of ~lr * sign(g), which turns
    # float rounding noise in near-zero gradients into lr-sized differences), so the comparison tests the gradients.
    config.optimizer.eps = 1e-3
    config.mesh.update({"data": 2, "fsdp": 4, "tensor": 1})
    sharded = train.build_trainer(config)
    single_config = config.copy_and_resolve_references()
    single_config.mesh.update({"data": -1, "fsdp": 1, "tensor": 1})
    single = train.build_trainer(single_config, devices=jax.devices()[:1])
    iterator = data_pipelines.make_iterator(config.data, batch_size=config.batch_size, seed=config.seed)
    batches = [sharded.task.host_batch(next(iterator)) for _ in range(3)]
    iterator.close()
    with parallel.activation_rules_context(sharded.mesh, sharded.rules):
        state = sharded.init_state()
        shardings = {k: sharded.batch_sharding((8,) + v.shape[1:]) for k, v in batches[0].items()}
        step_sharded = sharded.make_step(shardings)
    single_shardings = {k: single.batch_sharding((8,) + v.shape[1:]) for k, v in batches[0].items()}
    step_single = single.make_step(single_shardings)
    return dict(config=config, sharded=sharded, single=single, batches=batches, state=state,
                host_state=_host(state), step_sharded=step_sharded, step_single=step_single)


def test_parameters_missing_from_the_checkpoint_get_the_full_inits_values(tmp_path, tiny_config):
    """Over a checkpoint, only the missing parameters are initialised (XLA drops the rest of the init program); they
    get exactly the values of the whole model's init from the run's seed, the others the checkpoint's."""
    config = tiny_config()
    config.mesh.update({"data": -1, "fsdp": 1, "tensor": 1})
    init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]  # the trainer's init key (the other: the state's)
    options = {"xla_backend_optimization_level": 0}  # as the trainer's init (compiles faster)
    fresh = ts.flatten(_host(jax.jit(DenoisingTask(config).init_params, compiler_options=options)(init_rng)))
    params, model_config = checkpoints.load_inference_checkpoint(write_random_checkpoint(config, str(tmp_path / "all")))
    kept = {p: v for p, v in ts.flatten(params).items() if "/temp_" not in p}  # like SD-2.1: no temporal layers
    config.model.init_from = checkpoints.save_inference_checkpoint(str(tmp_path / "image"), ts.unflatten(kept),
                                                                   model_config)
    config.model.allow_missing = "/temp_"
    loaded = ts.flatten(_host(train.build_trainer(config, devices=jax.devices()[:1]).init_state().params()))
    missing = sorted(loaded.keys() - kept.keys())
    assert missing and all(re.search("/temp_", p) for p in missing)
    assert all(np.array_equal(loaded[p], fresh[p]) for p in missing)
    assert all(np.array_equal(loaded[p], kept[p]) for p in kept)
    assert any(not np.array_equal(kept[p], fresh[p]) for p in kept)  # the checkpoint is not the fresh init


def test_state_is_created_sharded_over_the_mesh(setup):
    state, sharded = setup["state"], setup["sharded"]
    specs = {jax.tree_util.keystr(p): x.sharding.spec for p, x in jax.tree.leaves_with_path(state.trainable)}
    kernel = next(k for k in specs if k.endswith("['attn1']['to_q']['kernel']"))
    assert specs[kernel] == P("fsdp", None)  # ("embed", "heads") -> (fsdp, tensor=1)
    assert sum("fsdp" in str(s) for s in specs.values()) > len(specs) // 2
    # Optimizer moments follow their parameters; the step counter is replicated.
    mu = optax.tree_utils.tree_get(state.opt_state, "mu")
    assert jax.tree.map(lambda x: x.sharding.spec, mu) == jax.tree.map(lambda x: x.sharding.spec, state.trainable)
    assert state.step.sharding.spec == P() and int(state.step) == 0
    assert jax.tree.structure(state) == jax.tree.structure(sharded.abstract_state)


def test_sharded_step_matches_single_device_step(setup):
    """One step on a 2 x 4 (data x fsdp) mesh equals the single-device step.

    Tolerance (numerics.py): the tiny UNet's forward + backward (chains of ~100 roundings) with sums reduced in
    another order across 8 devices: 256 roundings of each leaf's scale; parameters and EMA also get the learning
    rate, the most one Adam step moves them (the scale their updates differ at).
    """
    sharded, single = setup["sharded"], setup["single"]
    host_state, host_batch = setup["host_state"], setup["batches"][0]
    with parallel.activation_rules_context(sharded.mesh, sharded.rules):
        state = jax.device_put(host_state, sharded.state_shardings)
        new_sharded, m_sharded = setup["step_sharded"](state, sharded.global_batch(host_batch))
    with parallel.activation_rules_context(single.mesh, single.rules):
        state = jax.device_put(host_state, single.state_shardings)
        new_single, m_single = setup["step_single"](state, single.global_batch(host_batch))
    a, b = _host(new_sharded), _host(new_single)
    assert int(a.step) == int(b.step) == 1 and int(a.skipped) == 0
    assert_close(float(m_sharded["loss"]), float(m_single["loss"]), ops=256)
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a.trainable),
                                                             jax.tree.leaves(host_state.trainable)))
    assert moved > 1e-4  # the step really changed the parameters
    lr = setup["config"].optimizer.learning_rate
    for name in ("trainable", "opt_state", "ema"):
        for x, y in zip(jax.tree.leaves(getattr(a, name)), jax.tree.leaves(getattr(b, name))):
            if not np.issubdtype(np.asarray(y).dtype, np.floating):
                np.testing.assert_array_equal(x, y, err_msg=name)
                continue
            moved = lr if name in ("trainable", "ema") else 0.0
            assert_close(x, y, ops=256, scale=np.abs(y).max() + moved, err_msg=name)
    _assert_trees_equal(a.frozen, b.frozen)


def test_frozen_params_stay_bit_identical_and_nonfinite_batches_are_skipped(setup):
    single = setup["single"]
    host_state, batches = setup["host_state"], setup["batches"]
    poisoned = dict(batches[2], video=np.full_like(batches[2]["video"], np.nan))
    with parallel.activation_rules_context(single.mesh, single.rules):
        state = jax.device_put(host_state, single.state_shardings)
        for batch in batches[:2]:
            state, metrics = setup["step_single"](state, single.global_batch(batch))
        before = _host(state)
        state, metrics = setup["step_single"](state, single.global_batch(poisoned))
        after = _host(state)
        assert float(metrics["nonfinite"]) == 1.0 and int(metrics["skipped_steps"]) == 1
        assert np.isnan(float(metrics["loss"]))
        assert int(after.step) == 3 and int(after.skipped) == 1
        for name in ("trainable", "opt_state", "ema"):  # the update was dropped entirely
            _assert_trees_equal(getattr(after, name), getattr(before, name))
        state, metrics = setup["step_single"](state, single.global_batch(batches[0]))
        final = _host(state)
    assert float(metrics["nonfinite"]) == 0.0 and int(final.skipped) == 1  # training goes on after a skip
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(final.trainable),
                                                         jax.tree.leaves(after.trainable)))
    _assert_trees_equal(final.frozen, host_state.frozen)  # VAE, text encoder and frozen UNet leaves untouched
    assert set(final.frozen) == {"vae", "text_encoder"}  # tiny: all of the UNet trains
    # Frozen parameters have no optimizer state (Adam keeps 2 moments per trainable value, plus scalar counters).
    size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    assert 0 <= size(final.opt_state) - 2 * size(final.trainable) < 10 < size(final.frozen)
    assert size(final.ema) == size(final.trainable)


def test_paper_trainable_set_at_sd21_size():
    """§4.1/§5.1: temporal layers + spatial transformer blocks train: 565 M of the UNet, 316 M of them temporal."""
    from vidrd_jax.models import factory
    from vidrd_jax.models.unet3d import UNet3DConfig

    shapes = {"unet": factory.abstract_params("unet", UNet3DConfig.sd21())}
    labels = ts.regex_labels(shapes, {"unet": PAPER_TRAINABLE_REGEX})
    sizes = {p: int(np.prod(x.shape)) for p, x in ts.flatten(shapes).items()}
    trainable = sum(n for p, n in sizes.items() if labels[p] != ts.FROZEN)
    temporal = sum(n for p, n in sizes.items() if labels[p] != ts.FROZEN and "temp_" in p)
    assert sum(sizes.values()) == 1_182_401_284
    assert temporal == 316_490_560  # reference README: 266,891,520 Temp-Conv + 49,599,040 Temp-Attn
    assert trainable == 565_288_960  # + 248,798,400 in the spatial transformer blocks
    assert not any(labels[p] != ts.FROZEN for p in sizes if re.search(r"resnets_\d+/|proj_in|proj_out", p))


def test_config_errors_name_the_field(tiny_config):
    cases = [("grad_accum_steps", 3, "config.grad_accum_steps"), ("ema.decay", 1.0, "config.ema.decay"),
             ("optimizer.schedule", "step", "config.optimizer.schedule"),
             ("trainable_regex", "(", "config.trainable_regex"), ("model.preset", "huge", "config.model.preset"),
             ("checkpoint.keep", 0, "config.checkpoint.keep"),
             ("timestep_logit_normal", (1.0, 0.0), "config.timestep_logit_normal must be () (uniform) or (mean"),
             ("model.scheduler.beta_ends", 0.02, "config.model.scheduler: unknown fields ['beta_ends']"),
             ("model.scheduler.rescale_betas_zero_snr", True, "config.model.scheduler: rescale_betas_zero_snr=True")]
    for field, value, message in cases:
        config = tiny_config()
        *parents, leaf = field.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
        with pytest.raises(ValueError, match=re.escape(message)):
            train_config.validate_config(config)
    config = tiny_config()
    config.batch_size = 6
    with pytest.raises(ValueError, match=r"config.batch_size / config.grad_accum_steps = 6 .* 4 batch shards"):
        train.build_trainer(config, devices=jax.devices()[:4])
    config = tiny_config()
    config.trainable_regex = r"^nothing/"
    with pytest.raises(ValueError, match=re.escape("config.trainable_regex='^nothing/' matches no parameter")):
        train.build_trainer(config, devices=jax.devices()[:1])


def test_lr_mults_give_matching_parameters_their_own_scaled_optimizer_group(tiny_config):
    config = tiny_config()
    config.trainable_regex = r"^(unet|text_encoder)/"
    config.lr_mults = ((r"^text_encoder/.*embeddings", 0.5), (r"^text_encoder/", 0.1))
    task = DenoisingTask(config)
    labels = task.param_labels(task.abstract_params()[0])
    groups = task.optimizer_groups()
    lr = config.optimizer.learning_rate
    assert {k: g.learning_rate for k, g in groups.items()} == {"unet": lr, "unet_lr0": lr * 0.5, "unet_lr1": lr * 0.1}
    for path, label in labels.items():
        expected = ("unet_lr0" if "embeddings" in path else "unet_lr1") if path.startswith("text_encoder/") else (
            "unet" if path.startswith("unet/") else ts.FROZEN)
        assert label == expected, path
    config.lr_mults = ((r"^vae/", 0.1),)  # frozen parameters are not a group
    with pytest.raises(ValueError, match=re.escape("config.lr_mults[0]: '^vae/' matches no trainable parameter")):
        DenoisingTask(config).param_labels(task.abstract_params()[0])
    for bad, message in (((("(", 0.1),), "config.lr_mults[0]: invalid regex"),
                         (((r"^unet/", 0.0),), "config.lr_mults[0] must be (regex, factor > 0)")):
        config.lr_mults = bad
        with pytest.raises(ValueError, match=re.escape(message)):
            train_config.validate_config(config)


class LinearTask(Task):
    """``y = (x @ kernel + bias) * frozen_scale``: the smallest task, to test the trainer's own machinery.

    Two optimizer groups (kernel, bias) show how a task with several players (a GAN) gets one optimizer each.
    """

    def abstract_params(self):
        f32 = np.float32
        shapes = {"linear": {"kernel": jax.ShapeDtypeStruct((8, 3), f32), "bias": jax.ShapeDtypeStruct((3,), f32)},
                  "frozen_scale": jax.ShapeDtypeStruct((3,), f32)}
        specs = {"linear": {"kernel": P("embed", "mlp"), "bias": P("mlp")}, "frozen_scale": P(None)}
        return shapes, specs

    def init_params(self, rng):
        return {"linear": {"kernel": jax.random.normal(rng, (8, 3)), "bias": jnp.zeros((3,))},
                "frozen_scale": jnp.full((3,), 2.0)}

    def param_labels(self, shapes):
        return {"linear/kernel": "kernel", "linear/bias": "bias", "frozen_scale": ts.FROZEN}

    def optimizer_groups(self):
        bias = self.config.optimizer.copy_and_resolve_references()
        bias.learning_rate = self.config.optimizer.learning_rate / 10
        return {"kernel": self.config.optimizer, "bias": bias}

    def host_batch(self, batch):
        return dict(batch)

    def preprocess(self, params, batch, rng):
        return batch

    def loss(self, params, inputs, rng, step):
        pred = (inputs["x"] @ params["linear"]["kernel"] + params["linear"]["bias"]) * params["frozen_scale"]
        return jnp.mean(jnp.square(pred - inputs["y"])), {"pred_mean": jnp.mean(pred)}

    def export(self, params, dtype):
        return params, {}


def test_gradient_accumulation_equals_the_full_batch_step(monkeypatch):
    """grad_accum_steps=4 (lax.scan over strided micro-batches, on a 2 x 4 mesh) == one full-batch step (to rounding),
    with a pluggable task and two optimizer groups."""
    monkeypatch.setattr(train, "get_task_class", lambda name: LinearTask)
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((32, 8)).astype(np.float32), "y": rng.standard_normal((32, 3)).astype(np.float32)}
    results = []
    for accum in (1, 4):
        config = train_config.base_config()
        config.update(batch_size=32, grad_accum_steps=accum, total_steps=10)
        config.optimizer.update(warmup_steps=0, eps=1e-3, learning_rate=0.1)
        config.mesh.update({"data": 2, "fsdp": 4, "tensor": 1})
        trainer = train.build_trainer(config)
        with parallel.activation_rules_context(trainer.mesh, trainer.rules):
            state = trainer.init_state()
            assert state.trainable["linear"]["kernel"].sharding.spec == P("fsdp", None)
            global_batch = trainer.global_batch(batch)
            state, metrics = trainer.make_step({k: v.sharding for k, v in global_batch.items()})(state, global_batch)
        results.append((_host(state), jax.device_get(metrics)))
    (a, ma), (b, mb) = results
    ops = 64  # sums over 32 examples of 8-term dots, regrouped into 4 micro-batches, then Adam
    for name in ("loss", "grad_norm", "pred_mean", "lr/kernel", "lr/bias"):
        assert_close(ma[name], mb[name], ops=ops, err_msg=name)
    assert_close(ma["lr/bias"], ma["lr/kernel"] / 10, ops=1)
    for x, y in zip(jax.tree.leaves((a.trainable, a.opt_state, a.ema)), jax.tree.leaves((b.trainable, b.opt_state,
                                                                                           b.ema))):
        if not np.issubdtype(np.asarray(y).dtype, np.floating):
            np.testing.assert_array_equal(x, y)
            continue
        assert_close(x, y, ops=ops, scale=np.abs(y).max() + 0.1)  # + the learning rate: one Adam step's reach
    np.testing.assert_array_equal(a.frozen["frozen_scale"], np.full((3,), 2.0, np.float32))


def test_cli_user_errors_are_one_line_with_status_2(tmp_path, capsys):
    """``python -m vidrd_jax.train`` (run in-process): user errors print one ``error: ...`` line naming the flag,
    field or file and return 2 (they were tracebacks with status 1); ``--help`` returns 0."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    tiny = ["train", "--config", str(TINY_CONFIG), "--workdir", str(tmp_path / "w")]
    cases = [(tiny + ["--config.foo=1"], "error: --config.foo: the config has no field 'foo'"),
             (tiny + ["--config.model.unet.fooo=1"], "error: --config.model.unet.fooo: the config has no field 'fooo'"),
             (["train", "--config", str(tmp_path / "missing.py"), "--workdir", str(tmp_path / "w")],
              f"error: --config: [Errno 2] No such file or directory: '{tmp_path / 'missing.py'}'"),
             (tiny + ["--config.total_steps=abc"], "error: flag --config.total_steps=abc: invalid literal for int()"),
             (tiny[:3], "error: --workdir is required"),
             (tiny + ["--config.total_steps=0"], "error: config.total_steps: must be a positive int, got 0"),
             (tiny[:4] + [str(a_file)], f"error: --workdir {str(a_file)!r} is a file, not a directory")]
    for argv, message in cases:
        assert train.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err, (argv, err)
    assert not (tmp_path / "w").exists()  # nothing was created before the errors
    assert train.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--workdir" in out and "Exit status" in out and "--verbosity" in out
