"""Structured config schemas registered with Hydra's ConfigStore, so shipped YAML is validated on load.

Every YAML under `configs/<group>/` starts with `defaults: [<group>_schema, _self_]`, which merges it over the
dataclass schema: a misspelt or unknown key fails at composition time instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

from .data.mixture import MixtureConfig
from .evals.runner import EvalConfig
from .train.config import DeepSpeedConfig, ModelConfig, StageConfig, TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def register_configs() -> None:
    """Register the schemas (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(group="data", name="data_schema", node=MixtureConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="train", name="stage_schema", node=StageConfig)
    cs.store(group="deepspeed", name="deepspeed_schema", node=DeepSpeedConfig)


register_configs()
