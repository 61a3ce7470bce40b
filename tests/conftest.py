"""Test-session setup: 8 fake CPU devices (sharding tests), offline Hugging Face, fp32 matmuls; shared fixtures."""
import os
import sys
from pathlib import Path
from typing import Callable

_DEVICES_FLAG = "--xla_force_host_platform_device_count"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):  # keep a user's flags (e.g. --xla_cpu_max_isa=AVX2)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES_FLAG}=8".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
import ml_collections  # noqa: E402
import pytest  # noqa: E402

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"


@pytest.fixture(scope="session")
def tiny_config() -> Callable[[], ml_collections.ConfigDict]:
    """A factory of fresh copies of ``configs/tiny.py``'s config: the smallest trainer run (the trainer tests')."""
    from vidrd_jax.config_loading import load_config

    return lambda: load_config(TINY_CONFIG)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Starts the end-to-end demo run now when its test is selected, so it runs beside the rest of the suite."""
    if not config.option.collectonly and any(item.path.name == "test_demo.py" for item in items):
        import test_demo

        test_demo.start(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stops the demo run if the session ends before its test waited for it."""
    if "test_demo" in sys.modules:
        sys.modules["test_demo"].stop(config)
