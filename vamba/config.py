"""Where the shipped Hydra configs live, and composing one of them outside a Hydra app.

Each package registers its own structured schemas with Hydra's ConfigStore when its config module is imported
(`vamba.train.config`: the train config and its model/train/deepspeed groups; `vamba.data.mixture`: the data
group; `vamba.evals.runner`: the eval config), so composing `train` never loads the evaluation stack. Every YAML
under `configs/<group>/` starts with `defaults: [<group>_schema, _self_]`, which merges it over the schema: a
misspelt or unknown key fails at composition time instead of being silently ignored.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose(config_name: str, overrides: Sequence[str] = ()):
    """`configs/<config_name>.yaml` with `overrides` applied, validated against its package's schema (DictConfig).

    Inside a running Hydra app (`vamba train`) the app's own config search path is used.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    importlib.import_module("vamba.evals.runner" if config_name == "eval" else "vamba.train.config")
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
