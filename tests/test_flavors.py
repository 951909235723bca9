"""Model flavors: one registry of sizes (`vamba.modeling.flavors`) that configs, tests and `vamba bench` name."""

from __future__ import annotations

import pytest
import torch

from vamba.config import compose
from vamba.modeling.flavors import FLAVORS, qwen2vl_config, vamba_config
from vamba.train.trainer import build_model, build_processor


def test_a_training_config_picks_a_flavor_by_name_with_overrides():
    """`model.flavor=quickstart` builds that size in code, with `flavor_overrides` applied and the vocabulary fitted
    to the tiny tokenizer; an unknown name fails naming the known ones."""
    cfg = compose("train", ["model.flavor=quickstart", "+model.flavor_overrides.num_hidden_layers=3"]).model
    tokens = len(build_processor(cfg).tokenizer)
    text = build_model(cfg, torch.float32, vocab_size=tokens).config.text_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (128, 256, 3)
    assert (text.mixer_config["d_state"], text.mixer_config["headdim"]) == (16, 32)
    assert text.vocab_size % 8 == 0 and tokens <= text.vocab_size < tokens + 8
    with pytest.raises(ValueError, match="unknown model flavor 'huge'.*quickstart"):
        build_model(compose("train", ["model.flavor=huge"]).model, torch.float32)


def test_the_7b_flavor_is_qwen2vl_7b_and_vamba_7b():
    """DESIGN.md section 2: 28 layers of width 3584, GQA 28/4, MLP 18944, vocab 152064, M-RoPE [16, 24, 24]; ViT
    depth 32, width 1280, patch 14, temporal patch 2, 2x2 merge; Mamba-2 d_state 128, expand 2, headdim 64."""
    qwen, vamba = qwen2vl_config("7b"), vamba_config("7b")
    t, v = qwen.text_config, qwen.vision_config
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads) == (28, 3584, 28, 4)
    assert (t.intermediate_size, t.vocab_size, t.rope_parameters["mrope_section"]) == (18944, 152064, [16, 24, 24])
    assert (v.depth, v.embed_dim, v.patch_size, v.temporal_patch_size, v.spatial_merge_size) == (32, 1280, 14, 2, 2)
    mixer = vamba.text_config.mixer_config
    assert (mixer["d_state"], mixer["expand"], mixer["headdim"], mixer["chunk_size"]) == (128, 2, 64, 256)
    assert FLAVORS["7b"].dtype == torch.bfloat16 and qwen.video_token_id == 151656


def test_every_flavor_builds_both_models_of_the_same_size():
    """Vamba adds cross-attention and a mixer to the same Qwen2-VL: shared fields agree for every flavor."""
    for name in FLAVORS:
        qwen, vamba = qwen2vl_config(name), vamba_config(name)
        for part in ("text_config", "vision_config"):
            ours = getattr(vamba, part).to_dict()
            assert all(ours[k] == v for k, v in getattr(qwen, part).to_dict().items() if k not in ("model_type",)), (
                name, part)
