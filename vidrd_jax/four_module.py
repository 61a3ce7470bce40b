"""``python -m vidrd_jax.four_module --config configs/four_module.py --workdir DIR``: the command of the four-module
long-video framework, :mod:`vidrd_jax.recipes.four_module` (a CLI alias; nothing imports this module)."""
import sys

from vidrd_jax.recipes.four_module import main

if __name__ == "__main__":
    sys.exit(main())
