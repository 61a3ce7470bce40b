"""vidrd_jax: VidRD (Reuse and Diffuse) text-to-long-video diffusion in JAX/Flax."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "ml_collections==1.1.0",
    "einops==0.8.2",
    "absl-py",
    "numpy",
    "transformers==5.23.0",  # tokenizers and configs only (no Flax models in 5.x)
    "safetensors",
    "av==18.1.0",
    "openai-clip==1.0.1",  # ships the CLIP BPE vocabulary offline
    "ftfy",
    "regex",
    "pillow",
    "scikit-image",  # the built-in dataset's photos (skimage.data)
    "msgpack",
    "tqdm",
    "tensorboardX",
    "scipy",  # Fréchet distance (FVD)
    "opencv-python-headless==5.1.0.95",  # optical flow for the dynamic-degree metric
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest",
        "chex",
        "portpicker",  # free ports for the multi-process (jax.distributed) tests
        "torch==2.13.0",  # CPU wheel; any other spec pulls CUDA wheels
        "diffusers==0.42.1",
    ],
    "caption": ["torch==2.13.0"],  # BLIP-2 / CLIP captioning tools (transformers PyTorch models)
    "tfds": ["tensorflow-datasets", "array_record"],
}

setup(
    name="vidrd_jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["vidrd_jax", "vidrd_jax.*", "data_pipelines", "data_pipelines.*"]),
    package_data={"vidrd_jax.evaluate": ["ucf101_prompts.txt"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
