"""CLIP image tower + projections: parity with transformers CLIPModel / CLIPVisionModelWithProjection (tiny, random),
CLIPImageProcessor preprocessing, CLIPSIM and frame consistency, sharded extraction."""
import numpy as np
import pytest
import torch
import transformers

from tests.numerics import assert_close
from vidrd_jax.convert import naming
from vidrd_jax.evaluate import clip_metrics, clip_vision
from vidrd_jax.models.tokenizer import load_tokenizer

TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, hidden_act="quick_gelu")
VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8, hidden_act="gelu")
PROMPTS = ["a panda playing guitar", "", "two dogs run across a snowy field at sunset"]
# ops per output element: 2 layers x (LN, 3 projections over <= 96 inputs, softmax, MLP) + embeddings/projection.
PARITY_OPS = 400


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial LayerNorm affine parameters and class embedding, so their mapping is exercised."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "class_embedding" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """(folder, torch CLIPModel): a tiny random CLIPModel saved with transformers, plus the CLIP tokenizer."""
    torch.manual_seed(0)
    config = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    config._attn_implementation = "eager"
    model = _perturb(transformers.CLIPModel(config))
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    load_tokenizer(cache_dir=tmp_path_factory.mktemp("vocab"), pad_token="<|endoftext|>").save(folder)
    return str(folder), model


@pytest.fixture(scope="module")
def embedder(clip_folder):
    return clip_metrics.CLIPEmbedder.from_folder(clip_folder[0], batch_size=4)


def _pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 32, 32, 3)).astype(np.float32)


def test_image_and_text_features_match_transformers_clip_model(clip_folder):
    folder, model = clip_folder
    config, params, tokenizer, _ = clip_vision.load_clip(folder)
    assert config.text is not None and config.projection_dim == 16 and config.vision.image_size == 32
    pixels = _pixels(3, 1)
    ours = clip_vision.CLIPModel(config).apply({"params": params}, pixels, method="image_features")
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
        ref = getattr(ref, "pooler_output", ref).numpy()
    assert ours.shape == (3, 16)
    assert_close(ours, ref, ops=PARITY_OPS)
    ids = tokenizer.encode(PROMPTS)
    ours = clip_vision.CLIPModel(config).apply({"params": params}, ids, method="text_features")
    with torch.no_grad():
        ref = model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64)))
        ref = getattr(ref, "pooler_output", ref).numpy()
    assert_close(ours, ref, ops=PARITY_OPS)


def test_vision_model_with_projection_folder_is_image_only(tmp_path):
    torch.manual_seed(1)
    config = transformers.CLIPVisionConfig(**VISION, projection_dim=8)
    config._attn_implementation = "eager"
    model = _perturb(transformers.CLIPVisionModelWithProjection(config))
    model.save_pretrained(tmp_path)
    ours_cfg, params, tokenizer, preprocess = clip_vision.load_clip(str(tmp_path))
    assert ours_cfg.text is None and tokenizer is None and ours_cfg.projection_dim == 8
    assert preprocess == clip_vision.ClipPreprocess(32, 32)
    pixels = _pixels(2, 2)
    ours = clip_vision.CLIPModel(ours_cfg).apply({"params": params}, pixels, method="image_features")
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).image_embeds.numpy()
    assert_close(ours, ref, ops=PARITY_OPS)


def test_conversion_reports_missing_and_misshapen_tensors(clip_folder):
    folder, model = clip_folder
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    config = clip_vision.CLIPConfig.from_transformers(model.config.to_dict())
    del state["visual_projection.weight"]
    state["vision_model.post_layernorm.bias"] = np.zeros(5, np.float32)
    with pytest.raises(naming.ConversionError, match=r"(?s)missing.*visual_projection.weight.*wrong shape.*post_"):
        clip_vision.convert_clip_state(state, config)


def test_preprocessing_matches_clip_image_processor():
    frames = np.random.default_rng(3).integers(0, 256, (2, 45, 70, 3), dtype=np.uint8)  # landscape, odd crop margin
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ref = processor(images=list(frames), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    ours = clip_vision.preprocess_frames(frames, clip_vision.ClipPreprocess(32, 32))
    assert ours.shape == (2, 32, 32, 3)
    # /255, -mean, /std: 3 roundings at the scale of the largest normalised value (~2.1).
    assert_close(ours, ref, ops=4)
    portrait = clip_vision.preprocess_frames(frames.transpose(0, 2, 1, 3), clip_vision.ClipPreprocess(32, 32))
    ref = processor(images=list(frames.transpose(0, 2, 1, 3)), return_tensors="np")["pixel_values"]
    assert_close(portrait, ref.transpose(0, 2, 3, 1), ops=4)


def test_clipsim_and_frame_consistency(embedder, clip_folder):
    _, model = clip_folder
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)  # 6 frames: not a multiple of the 8 devices
    image = embedder.image_embeds(frames)
    text = embedder.text_embeds(PROMPTS[:2])
    pixels = clip_vision.preprocess_frames(frames, embedder.preprocess)
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
        ref = getattr(ref, "pooler_output", ref).numpy()
    assert_close(image, ref, ops=PARITY_OPS)  # sharded, padded batches = the reference
    cos = (image @ text[0]) / (np.linalg.norm(image, axis=1) * np.linalg.norm(text[0]))
    assert clip_metrics.clipsim(text[0], image) == pytest.approx(cos.mean(), abs=1e-6)
    # per-clip prompts: frames 0-2 against prompt 0, frames 3-5 against prompt 1
    cos1 = (image @ text[1]) / (np.linalg.norm(image, axis=1) * np.linalg.norm(text[1]))
    mixed = clip_metrics.clipsim(text, image, np.array([0, 0, 0, 1, 1, 1]))
    assert mixed == pytest.approx(np.concatenate([cos[:3], cos1[3:]]).mean(), abs=1e-6)
    still = embedder.image_embeds(np.repeat(frames[:1], 4, axis=0))
    assert clip_metrics.frame_consistency(still) == pytest.approx(1.0, abs=1e-6)
    assert clip_metrics.frame_consistency(image) < 0.999  # random frames are not identical
    with pytest.raises(ValueError, match="clip_index"):
        clip_metrics.clipsim(text, image, np.array([0, 0, 0, 1, 1, 2]))


def test_sparse_transformers_config_takes_transformers_defaults():
    """A checkpoint config may list only non-default fields: the gaps get transformers' CLIP defaults (not SD's)."""
    sparse = {"text_config": {"hidden_size": 64}, "vision_config": {"patch_size": 16}}
    ours = clip_vision.CLIPConfig.from_transformers(sparse)
    ref = transformers.CLIPConfig(**sparse)
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "max_position_embeddings", "hidden_act", "layer_norm_eps"):
        assert getattr(ours.text, name) == getattr(ref.text_config, name), name
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                 "patch_size", "num_channels", "hidden_act", "layer_norm_eps"):
        assert getattr(ours.vision, name) == getattr(ref.vision_config, name), name
    assert (ours.projection_dim, ours.eos_token_id) == (ref.projection_dim, ref.text_config.eos_token_id)
