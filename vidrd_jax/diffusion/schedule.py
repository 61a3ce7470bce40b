"""Noise schedule and the sampling timesteps (paper 002 §3.1, eq. 1-2).

Variance preserving: ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with ``abar_t = prod_{s<=t} (1 - beta_s)``
(eq. 2 writes ``abar_t`` as the product of the per-step alphas). The defaults are Stable Diffusion 2.1-base's scheduler:
``scaled_linear`` betas from 0.00085 to 0.012 over 1000 training steps, ``epsilon`` prediction, DDIM timesteps with
``leading`` spacing and ``steps_offset=1`` (50 steps -> 981, 961, ..., 1) and, for the last step, the final alpha
``alphas_cumprod[0]`` (``set_alpha_to_one=False``). ``rescale_betas_zero_snr`` rescales the betas so that the last
training step is pure noise (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Alg. 1);
it needs ``v_prediction`` (an epsilon model cannot recover x0 at SNR 0) and goes with ``trailing`` spacing, whose first
DDIM step is that pure-noise step. The solvers (``solvers.py``) build their tables from this on the host in float64
and hand them to the device as float32.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np

BETA_SCHEDULES = ("scaled_linear", "linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing")
# diffusers scheduler_config.json keys that change the sampler's arithmetic; any other value than this is refused.
_UNSUPPORTED_DIFFUSERS_KEYS = {"clip_sample": False, "thresholding": False, "trained_betas": None}


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """Training noise schedule plus the scheduler settings that fix DDIM's timestep table.

    Field names follow diffusers' ``scheduler_config.json`` so that ``from_diffusers(to_dict())`` round-trips.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 1
    set_alpha_to_one: bool = False
    rescale_betas_zero_snr: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an int >= 2, got {self.num_train_timesteps!r}")
        if not 0.0 < self.beta_start < 1.0:
            raise ValueError(f"beta_start must be in (0, 1), got {self.beta_start!r}")
        if not self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"beta_end must be in [beta_start={self.beta_start}, 1), got {self.beta_end!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {self.timestep_spacing!r}")
        if not isinstance(self.steps_offset, int) or not 0 <= self.steps_offset < self.num_train_timesteps:
            raise ValueError(f"steps_offset must be an int in [0, num_train_timesteps), got {self.steps_offset!r}")
        if not isinstance(self.set_alpha_to_one, bool):
            raise ValueError(f"set_alpha_to_one must be a bool, got {self.set_alpha_to_one!r}")
        if not isinstance(self.rescale_betas_zero_snr, bool):
            raise ValueError(f"rescale_betas_zero_snr must be a bool, got {self.rescale_betas_zero_snr!r}")
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            raise ValueError("rescale_betas_zero_snr=True needs prediction_type='v_prediction' (the last step has SNR "
                             f"0, where an epsilon prediction cannot give x0), got {self.prediction_type!r}")

    @classmethod
    def sd21_base(cls) -> "NoiseSchedule":
        """Stable Diffusion 2.1-base (the VidRD base model): epsilon prediction."""
        return cls()

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], **overrides: Any) -> "NoiseSchedule":
        """Builds the schedule from a diffusers ``scheduler_config.json`` dict (DDIM, PNDM, ... all share the keys).

        Missing keys take diffusers' defaults (``timestep_spacing`` "leading", ``steps_offset`` 0, ...); settings this
        sampler does not implement (clipping, thresholding, explicit betas) raise ``ValueError``.
        """
        for key, supported in _UNSUPPORTED_DIFFUSERS_KEYS.items():
            if config.get(key, supported) not in (supported,):
                raise ValueError(f"scheduler config {key}={config[key]!r} is not supported (only {supported!r})")
        defaults = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                    "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 0,
                    "set_alpha_to_one": True, "rescale_betas_zero_snr": False}
        kwargs = {name: config.get(name, default) for name, default in defaults.items()}
        kwargs.update(overrides)
        kwargs["num_train_timesteps"] = int(kwargs["num_train_timesteps"])
        kwargs["steps_offset"] = int(kwargs["steps_offset"])
        kwargs["beta_start"] = float(kwargs["beta_start"])
        kwargs["beta_end"] = float(kwargs["beta_end"])
        kwargs["rescale_betas_zero_snr"] = bool(kwargs["rescale_betas_zero_snr"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """diffusers-style dict (``from_diffusers(to_dict())`` is the identity); stored in inference checkpoints."""
        return {"_class_name": "DDIMScheduler", "clip_sample": False, **dataclasses.asdict(self)}

    @property
    def betas(self) -> np.ndarray:
        """float64 [T] per-step betas."""
        return _betas(self.beta_schedule, self.beta_start, self.beta_end, self.num_train_timesteps,
                      self.rescale_betas_zero_snr)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """float64 [T]: ``abar_t`` of eq. 2 for t = 0 .. T-1."""
        return _alphas_cumprod(self.beta_schedule, self.beta_start, self.beta_end, self.num_train_timesteps,
                               self.rescale_betas_zero_snr)

    @property
    def final_alpha_cumprod(self) -> float:
        """``abar`` after the last DDIM step: 1 or ``alphas_cumprod[0]`` (``set_alpha_to_one``)."""
        return 1.0 if self.set_alpha_to_one else float(self.alphas_cumprod[0])

    def ddim_timesteps(self, num_steps: int) -> np.ndarray:
        """int64 [num_steps] DDIM timesteps, noisiest first (diffusers' ``set_timesteps``)."""
        if not isinstance(num_steps, int) or not 1 <= num_steps <= self.num_train_timesteps:
            raise ValueError(f"num_steps must be an int in [1, num_train_timesteps={self.num_train_timesteps}], "
                             f"got {num_steps!r}")
        t_total = self.num_train_timesteps
        if self.timestep_spacing == "leading":
            timesteps = np.arange(num_steps)[::-1] * (t_total // num_steps) + self.steps_offset
        else:  # trailing
            timesteps = np.round(np.arange(t_total, 0, -t_total / num_steps)).astype(np.int64) - 1
        if timesteps.max() >= t_total or timesteps.min() < 0:
            raise ValueError(f"num_steps={num_steps} with timestep_spacing={self.timestep_spacing!r} and "
                             f"steps_offset={self.steps_offset} gives timesteps outside [0, {t_total})")
        return timesteps.astype(np.int64)


# The integer validator shared by the sampler configs (solvers, long video, co-denoising).
def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Raises unless ``value`` is an int in [low, high] (message names ``name``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


@functools.lru_cache(maxsize=16)
def _betas(beta_schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int,
           zero_terminal_snr: bool) -> np.ndarray:
    if beta_schedule == "scaled_linear":
        betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=np.float64) ** 2
    else:  # linear
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if zero_terminal_snr:  # shift and scale sqrt(abar) so that it keeps its first value and ends at exactly 0
        sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
        first, last = sqrt_abar[0], sqrt_abar[-1]
        abar = ((sqrt_abar - last) * first / (first - last)) ** 2
        betas = 1.0 - np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    betas.setflags(write=False)
    return betas


@functools.lru_cache(maxsize=16)
def _alphas_cumprod(beta_schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int,
                    zero_terminal_snr: bool) -> np.ndarray:
    alphas_cumprod = np.cumprod(1.0 - _betas(beta_schedule, beta_start, beta_end, num_train_timesteps,
                                             zero_terminal_snr))
    alphas_cumprod.setflags(write=False)
    return alphas_cumprod
