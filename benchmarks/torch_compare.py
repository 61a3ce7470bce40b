r"""CPU float32 speed against PyTorch on the same random weights: prints ratios (torch time / ours; > 1: we are faster).

    python benchmarks/torch_compare.py [--reps 5] [--only ddim,unet3d,resnet,temp_conv,transformer3d]

* ``ddim``: DDIM (20 steps, eta 0) + classifier-free guidance (batch 2) on an SD-layout 2-D UNet (64, 128, 128),
  32² latents, 77-token context of width 1024: our UNet with one frame in a jitted ``lax.scan`` vs diffusers'
  ``UNet2DConditionModel`` + ``DDIMScheduler`` loop; the time is per step.
* ``unet3d``: one forward of the official release's 3-D UNet (64, 128, 256), 8 frames of 32² latents, vs the PyTorch
  restatement of the release (``tests/torch_reference.unet3d``: Conv3d Temp-Convs, Temp-Attn with the frame
  embedding in the residual stream, GroupNorms over the clip).
* ``resnet`` / ``temp_conv`` / ``transformer3d``: the first level's sub-layers of that UNet (64 channels, 8 x 32²).

Every pair is checked equal within float32 tolerance (``tests/numerics.assert_close``) before timing, then timed A/B
interleaved (torch, ours, torch, …) ``--reps`` times; the table gives medians with [min, max] and the ratio of the
medians with the [min, max] of the per-repetition ratios, and the load average before and after. PyTorch runs on
``--torch-threads`` threads (default 2); XLA's CPU client uses one intra-op thread per core (``os.cpu_count()``).
Our attention is ``--attention-impl`` (default ``auto``: ``chunked`` on CPU).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # torch_reference, numerics

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import torch_reference  # noqa: E402
from numerics import assert_close  # noqa: E402
from vidrd_jax.convert import naming  # noqa: E402
from vidrd_jax.models.layers import ResnetBlock  # noqa: E402
from vidrd_jax.models.temporal_layers import TemporalConv  # noqa: E402
from vidrd_jax.models.unet3d import Transformer3D, UNet3D, UNet3DConfig  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
TEXT_LENGTH, TEXT_WIDTH, LATENT, FRAMES, GUIDANCE = 77, 1024, 32, 8, 7.5
LAYER_OPS = 40  # roundings per conv / attention / norm layer (tests/numerics.py)


def diffusers_config(channels: tuple[int, ...]) -> dict:
    """An SD-2.1-layout ``UNet2DConditionModel`` config with head size 64 (SD-2 style head counts)."""
    n = len(channels)
    return dict(sample_size=LATENT, in_channels=4, out_channels=4, block_out_channels=list(channels),
                layers_per_block=2, down_block_types=["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
                up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
                attention_head_dim=[c // 64 for c in channels], cross_attention_dim=TEXT_WIDTH, norm_num_groups=32,
                use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0, norm_eps=1e-5)


def random_params(model: nn.Module, args: tuple, seed: int) -> dict:
    """Every parameter N(0, 0.05²) (norm scales 1 + N(0, 0.05²)), so zero-initialised layers are exercised too."""
    shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)["params"])
    rs = np.random.RandomState(seed)
    flat = {path: (0.05 * rs.randn(*leaf.shape)).astype(np.float32) + (path[-1] == "scale")
            for path, leaf in naming.flatten_params(shapes).items()}
    return naming.unflatten_params(flat)


def torch_state_dict(params: dict) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v, np.float32)) for k, v in naming.params_to_state_dict(params).items()}


def to_torch_video(x: np.ndarray) -> torch.Tensor:  # [B, F, H, W, C] -> (b, c, f, h, w)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))


def from_torch_video(x: torch.Tensor) -> np.ndarray:
    return x.numpy().transpose(0, 2, 3, 4, 1)


def block(x) -> None:
    jax.block_until_ready(x)


def interleave(torch_fn: Callable[[], object], ours_fn: Callable[[], object], reps: int) -> tuple[list, list]:
    """Times ``torch_fn`` then ``ours_fn``, ``reps`` times (after one warm-up call each); seconds."""
    torch_fn(), block(ours_fn())
    t_torch, t_ours = [], []
    for _ in range(reps):
        start = time.perf_counter()
        torch_fn()
        t_torch.append(time.perf_counter() - start)
        start = time.perf_counter()
        block(ours_fn())
        t_ours.append(time.perf_counter() - start)
    return t_torch, t_ours


def ddim_cfg(reps: int, impl: str, steps: int = 20) -> tuple[list, list, str]:
    from diffusers import DDIMScheduler, UNet2DConditionModel
    config = diffusers_config((64, 128, 128))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(steps)
    rs = np.random.RandomState(1)
    z0 = rs.randn(1, 4, LATENT, LATENT).astype(np.float32)
    context = rs.randn(2, TEXT_LENGTH, TEXT_WIDTH).astype(np.float32)  # [uncond, cond]

    def torch_loop() -> torch.Tensor:
        z, ctx = torch.from_numpy(z0), torch.from_numpy(context)
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = unet(torch.cat([z, z]), t, encoder_hidden_states=ctx).sample
                uncond, cond = eps.chunk(2)
                z = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, z).prev_sample
        return z

    cfg = UNet3DConfig.from_diffusers(config, use_temporal=False, groupnorm_scope="frame", attention_impl=impl)
    model = UNet3D(cfg)
    x = jnp.asarray(z0.transpose(0, 2, 3, 1)[:, None])  # [1, F=1, h, w, 4]
    shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.concatenate([x, x]),
                                          jnp.zeros((2,), jnp.int32), context)["params"])
    params, _ = naming.state_dict_to_params(unet.state_dict(), shapes, what="diffusers unet")
    timesteps = np.asarray(scheduler.timesteps, np.int32)
    alphas = scheduler.alphas_cumprod.numpy()
    prev = timesteps - scheduler.config.num_train_timesteps // steps
    a_t = alphas[timesteps]
    a_prev = np.where(prev >= 0, alphas[np.maximum(prev, 0)], scheduler.final_alpha_cumprod.numpy())

    @jax.jit
    def ours_loop(params, z, context):
        def step(z, xs):
            t, a, a_p = xs
            eps = model.apply({"params": params}, jnp.concatenate([z, z]), jnp.full((2,), t), context)
            uncond, cond = eps[:1], eps[1:]
            eps = uncond + GUIDANCE * (cond - uncond)
            x0 = (z - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
            return jnp.sqrt(a_p) * x0 + jnp.sqrt(1 - a_p) * eps, None
        return jax.lax.scan(step, z, (timesteps, a_t, a_prev))[0]

    ref = torch_loop().numpy().transpose(0, 2, 3, 1)[:, None]
    out = np.asarray(ours_loop(params, x, context))
    # 20 chained UNets of ~25 layers each; the guidance (x8.5) scales each step's error
    assert_close(out, ref, ops=steps * 25 * LAYER_OPS * (1 + GUIDANCE), err_msg="ddim")
    t_torch, t_ours = interleave(torch_loop, lambda: ours_loop(params, x, context), reps)
    return [t / steps for t in t_torch], [t / steps for t in t_ours], "per step"


def release_unet(impl: str):
    """Our release-layout UNet3D (64, 128, 256), random weights, and the same weights as a PyTorch state dict."""
    config = diffusers_config((64, 128, 256))
    cfg = UNet3DConfig.from_diffusers(config, attention_impl=impl)  # release defaults: clip GroupNorms, residual PE
    rs = np.random.RandomState(2)
    x = rs.randn(1, FRAMES, LATENT, LATENT, 4).astype(np.float32)
    t = np.array([500], np.int32)
    context = rs.randn(1, TEXT_LENGTH, TEXT_WIDTH).astype(np.float32)
    model = UNet3D(cfg)
    params = random_params(model, (x, t, context), seed=3)
    return config, cfg, model, params, torch_state_dict(params), (x, t, context)


def unet3d_forward(reps: int, impl: str) -> tuple[list, list, str]:
    config, _, model, params, sd, (x, t, context) = release_unet(impl)
    tx, tt, tc = to_torch_video(x), torch.from_numpy(t), torch.from_numpy(context)

    def torch_fn():
        with torch.no_grad():
            return torch_reference.unet3d(sd, config, tx, tt, tc)

    ours = jax.jit(model.apply)
    out = np.asarray(ours({"params": params}, x, t, context))
    assert_close(out, from_torch_video(torch_fn()), ops=30 * LAYER_OPS, err_msg="unet3d")
    return (*interleave(torch_fn, lambda: ours({"params": params}, x, t, context), reps), "forward")


def sub_layer(name: str, reps: int, impl: str) -> tuple[list, list, str]:
    """The first down level's ``resnets_0`` / ``temp_convs_0`` / ``attentions_0`` on 64 x 8 x 32² features."""
    _, cfg, _, params, sd, (_, t, context) = release_unet(impl)
    level = params["down_blocks_0"]
    rs = np.random.RandomState(4)
    h = rs.randn(1, FRAMES, LATENT, LATENT, 64).astype(np.float32)
    th, tcontext = to_torch_video(h), torch.from_numpy(context)
    groups, eps = cfg.norm_num_groups, cfg.norm_eps
    if name == "resnet":
        temb = rs.randn(1, 4 * 64).astype(np.float32)
        module, sub, args = ResnetBlock(64, groups, eps, cfg.groupnorm_scope), "resnets_0", (h, temb)
        ttemb = torch.from_numpy(temb)
        ref_fn = lambda: torch_reference.resnet_block_3d(sd, "down_blocks.0.resnets.0.", th, ttemb, groups, eps)  # noqa
    elif name == "temp_conv":
        module, sub, args = TemporalConv(cfg.temporal_conv_layers, *cfg.temporal_norm), "temp_convs_0", (h,)
        ref_fn = lambda: torch_reference.temporal_conv(sd, "down_blocks.0.temp_convs.0.", th, 4)  # noqa
    else:
        module, sub, args = Transformer3D(cfg, cfg.num_attention_heads[0]), "attentions_0", (h, context)
        ref_fn = lambda: torch_reference.transformer_3d(  # noqa
            sd, "down_blocks.0.attentions.0.", th, tcontext, cfg.num_attention_heads[0], groups)

    def torch_fn():
        with torch.no_grad():
            return ref_fn()

    ours = jax.jit(module.apply)
    variables = {"params": level[sub]}
    out = np.asarray(ours(variables, *args))
    assert_close(out, from_torch_video(torch_fn()), ops=6 * LAYER_OPS, err_msg=name)
    return (*interleave(torch_fn, lambda: ours(variables, *args), reps), "forward")


def fmt(times: list[float]) -> str:
    return f"{statistics.median(times) * 1e3:8.1f} [{min(times) * 1e3:.1f}, {max(times) * 1e3:.1f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default="ddim,unet3d,resnet,temp_conv,transformer3d")
    parser.add_argument("--attention-impl", default="auto")
    parser.add_argument("--torch-threads", type=int, default=2)
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = sorted(set(names) - {"ddim", "unet3d", "resnet", "temp_conv", "transformer3d"})
    if unknown or args.reps < 1:
        parser.error(f"unknown --only entries {unknown}" if unknown else "--reps must be >= 1")
    torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__} "
          f"({jax.default_backend()}, {os.cpu_count()} cores), attention_impl={args.attention_impl}, "
          f"reps={args.reps}, load average before {load_before[0]:.2f}")
    rows = []
    for name in names:
        if name == "ddim":
            t_torch, t_ours, unit = ddim_cfg(args.reps, args.attention_impl)
        elif name == "unet3d":
            t_torch, t_ours, unit = unet3d_forward(args.reps, args.attention_impl)
        else:
            t_torch, t_ours, unit = sub_layer(name, args.reps, args.attention_impl)
        ratios = [a / b for a, b in zip(t_torch, t_ours)]
        rows.append((f"{name} ({unit})", fmt(t_torch), fmt(t_ours),
                     f"{statistics.median(t_torch) / statistics.median(t_ours):.2f} "
                     f"[{min(ratios):.2f}, {max(ratios):.2f}]"))
        print(f"  done {name}: load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n| what | PyTorch ms median [min, max] | vidrd_jax ms median [min, max] | ratio torch/ours [min, max] |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
