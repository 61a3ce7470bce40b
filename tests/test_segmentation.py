"""Segmenters of paper 000 eq. 9: file masks, the built-in renderer's exact masks, SAM (tiny, random) from a folder."""
import numpy as np
import pytest

from data_pipelines import builtin
from vidrd_jax.segmentation import (BuiltinMasks, FileMasks, SamMasks, latent_mask, make_segmenter, save_masks)

PROMPT = "a red circle moving right"
RENDER = dict(background="textured", seed=3)


@pytest.fixture(scope="module")
def clip():
    return builtin.render_clip("red", "circle", "right", num_frames=4, height=32, width=32, **RENDER)


@pytest.mark.parametrize("name", ["masks.npy", "pngs"])
def test_file_masks_round_trip(tmp_path, clip, name):
    masks = np.random.default_rng(0).random(clip.shape[:3]) < 0.4
    path = str(tmp_path / name)
    save_masks(path, masks)
    loaded = make_segmenter("files", path)(clip, PROMPT)
    assert loaded.dtype == np.bool_
    np.testing.assert_array_equal(loaded, masks)


def test_file_masks_errors_name_the_file(tmp_path, clip):
    path = str(tmp_path / "bad.npy")
    np.save(path, np.full(clip.shape[:3], 2, np.uint8))
    with pytest.raises(ValueError, match="bad.npy"):
        FileMasks(path)(clip, PROMPT)
    np.save(path, np.zeros((1, 32, 32), bool))
    with pytest.raises(ValueError, match=r"masks .*bad.npy.*\(1, 32, 32\)"):
        FileMasks(path)(clip, PROMPT)
    with pytest.raises(FileNotFoundError, match="missing"):
        FileMasks(str(tmp_path / "missing"))


def test_builtin_masks_are_the_renderers_object_pixels(clip):
    """Rendered again in another colour (same seed: same background, size, path), the clip changes exactly inside
    the mask: outside it the two renders are bit-identical, and every changed pixel is inside."""
    masks = BuiltinMasks(builtin.object_alpha, **RENDER)(clip, PROMPT)
    assert masks.shape == clip.shape[:3] and masks.dtype == np.bool_
    other = builtin.render_clip("blue", "circle", "right", num_frames=4, height=32, width=32, **RENDER)
    np.testing.assert_array_equal(clip[~masks], other[~masks])
    changed = (clip != other).any(-1)
    assert not (changed & ~masks).any()
    # only anti-aliased edge pixels with a tiny coverage may round to the same value in both colours
    assert changed[masks].mean() > 0.9
    assert (masks.sum((1, 2)) > 0).all()


def test_builtin_masks_follow_the_prompt(clip):
    masks = BuiltinMasks(builtin.object_alpha, **RENDER)(clip, PROMPT)
    left = BuiltinMasks(builtin.object_alpha, **RENDER)(clip, "a red circle moving left")
    assert not np.array_equal(masks, left)
    with pytest.raises(ValueError, match="colour shape direction"):
        BuiltinMasks(builtin.object_alpha, **RENDER)(clip, "a photo of a cat")


def test_latent_mask_marks_cells_with_any_foreground():
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 1, 6] = True
    out = np.asarray(latent_mask(mask, 4))
    assert out.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(out[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="multiples"):
        latent_mask(np.zeros((1, 6, 8), bool), 4)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    import torch
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    config = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=(1,), num_pos_feats=8,
                           mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=16))
    torch.manual_seed(0)
    folder = str(tmp_path_factory.mktemp("tiny_sam"))
    SamModel(config).eval().save_pretrained(folder)
    SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 64},
                                                      pad_size={"height": 64, "width": 64})).save_pretrained(folder)
    return folder


def test_tiny_random_sam_gives_masks_of_the_frames_shape(tiny_sam, clip):
    masks = make_segmenter("sam", tiny_sam)(clip, PROMPT)
    assert masks.shape == clip.shape[:3] and masks.dtype == np.bool_


def test_sam_prompt_point_is_on_the_object(clip):
    """The salient point (farthest from the median colour) lies on the rendered object in every frame."""
    exact = BuiltinMasks(builtin.object_alpha, **RENDER)(clip, PROMPT)
    points = SamMasks.salient_points(clip)
    assert all(exact[t, y, x] for t, (x, y) in enumerate(points))


def test_sam_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="sam"):
        make_segmenter("sam", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="segmenter.kind"):
        make_segmenter("grabcut")
