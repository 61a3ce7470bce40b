r"""Sampling settings for ``python -m vidrd_jax.generate`` (paper 002 §4.3 and §5.3 defaults).

    python -m vidrd_jax.generate --config configs/generate_default.py --checkpoint ckpt/vidrd \
        --prompt "a corgi running on the beach" --num_clips 4 --out out/corgi.mp4
    # any field: --config.num_steps=25 --config.vidrd.dsg_beta=0.2 --config.codenoise.weighting=pyramid

``vidrd`` holds VidRD's clip-by-clip settings (Algorithm 1), ``codenoise`` the co-denoising settings (paper 000
§3.4); the top-level fields are shared. Validated by ``vidrd_jax.generate_config.validate_config``.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "vidrd"  # "vidrd" (clip by clip, FNR + PNS + DSG) | "codenoise" (overlapping windows, eq. 18-19)
    c.seed = 0  # the only source of randomness: same seed, same frames
    c.resolution = 256  # frame height = width in pixels (VidRD: 256); a multiple of the VAE x UNet downsampling
    c.num_steps = 50  # DDIM steps S (§5.3)
    c.eta = 0.0  # DDIM eta (0: deterministic DDIM)
    c.solver = "ddim"  # "ddim" | "dpm_solver++" (DPM-Solver++(2M), deterministic: eta must be 0); both modes
    c.guidance_scale = 10.0  # classifier-free guidance w (§5.3)
    c.negative_prompt = "watermark"  # the unconditional branch's prompt
    c.fps = 8.0  # frame rate of the written mp4/GIF
    c.data_parallel_devices = 1  # devices the batch of videos is split over (-1: all; a batch must be a multiple)

    c.vidrd = ml_collections.ConfigDict()
    c.vidrd.num_clips = 4  # K clips (--num_clips)
    c.vidrd.num_frames = 8  # N frames per clip
    c.vidrd.num_prompt_frames = 4  # M prompt frames, 0 <= M <= N
    c.vidrd.pns_alpha = 4.0  # alpha of PNS (eq. 7), >= 0; inf: FNR only (eq. 6)
    c.vidrd.dsg_beta = 0.4  # beta of DSG (eq. 8), in [0, 1]
    c.vidrd.frame_mapping = "reverse"  # "reverse" (paper: z^{i,j} <- z^{i-1,N-1-j}) | "forward"
    c.vidrd.output = "all_frames"  # "all_frames" | "drop_prompt_frames" (clips >= 1 lose their first M frames)

    c.codenoise = ml_collections.ConfigDict()
    c.codenoise.num_frames = 32  # L = window_size + n * stride (--num_frames)
    c.codenoise.window_size = 8  # K frames per window
    c.codenoise.stride = 4  # S frames between window starts, 1 <= S <= K
    c.codenoise.weighting = "uniform"  # "uniform" | "pyramid" | "gaussian" window weights (eq. 19)
    c.codenoise.gaussian_sigma = 0.25  # "gaussian" weights' std, as a fraction of window_size
    c.codenoise.window_chunk_size = 0  # windows per vmap call (0: all at once; smaller bounds memory)
    c.codenoise.decode_frames = 8  # frames per temporal-decoder call (the last call takes the remainder)
    c.codenoise.split_windows = False  # data_parallel_devices > 1: split each step's windows, not the batch

    c.contact_sheet = ml_collections.ConfigDict()
    c.contact_sheet.max_frames = 32  # frames on the PNG contact sheet, evenly spaced over the video
    c.contact_sheet.columns = 8
    return c
