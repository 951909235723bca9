"""Where the shipped Hydra configs live, and composing one of them outside a Hydra app.

Each package registers its own structured schemas with Hydra's ConfigStore when its config module is imported
(`vamba.train.config`: the train config and its model/train/deepspeed groups; `vamba.data.mixture`: the data
group; `vamba.evals.runner`: the eval config), so composing `train` never loads the evaluation stack. Every YAML
under `configs/<group>/` starts with `defaults: [<group>_schema, _self_]`, which merges it over the schema: a
misspelt or unknown key fails at composition time instead of being silently ignored (`+key=`: `check_keys`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SCHEMAS = {"eval": "eval_schema", "train": "train_schema"}  # top-level configs and the schemas they must fit


def compose(config_name: str, overrides: Sequence[str] = ()):
    """`configs/<config_name>.yaml` with `overrides`, validated against its package's schema (DictConfig); inside
    a running Hydra app (`vamba train`) the app's own config search path is used."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    importlib.import_module("vamba.evals.runner" if config_name == "eval" else "vamba.train.config")
    with nullcontext() if GlobalHydra.instance().is_initialized() else initialize_config_dir(
            config_dir=str(CONFIG_DIR), version_base="1.3"):
        return check_keys(hydra_compose(config_name=config_name, overrides=list(overrides)), config_name)


def check_keys(cfg, config_name: str):
    """`cfg`, once every key in it is in its schema (`SCHEMAS`): Hydra's `+key=value` opens a struct config to add
    a key, so `vamba eval +frame.count=8` (a typo) would compose and then be ignored."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    from .modeling.errors import UsageError

    try:
        if config_name in SCHEMAS:
            schema = ConfigStore.instance().load(f"{SCHEMAS[config_name]}.yaml").node
            OmegaConf.merge(schema, OmegaConf.to_container(cfg, resolve=False))
    except ConfigKeyError as e:
        raise UsageError(f"unknown config key {e.full_key or e.key!r}: {e.msg.splitlines()[0]} (`+key=value` cannot "
                         f"add a key the {config_name} schema lacks)") from None
    return cfg
