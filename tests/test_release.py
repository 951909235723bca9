"""Release compatibility against the release's own output (`tests/fixtures/release_golden/`).

The golden directory is a tiny checkpoint written by the original release's `save_pretrained` (random weights), with
inputs and the logits/tokens the release computed (its PROVENANCE.md). Every test here loads it exactly as saved;
where the shared folder holds the original, the fixture is checked to be byte-identical to it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, SHARED
from safetensors.torch import load_file

from vamba.modeling import VambaConfig, VambaForConditionalGeneration
from vamba.modeling.compat import CACHE
from vamba.modeling.convert import export_checkpoint
from vamba.modeling.release_format import RELEASE_MIXER_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
GOLDEN = FIXTURES / "release_golden"
TOL = 1e-5


@pytest.mark.shared("release_golden")
def test_the_fixture_is_the_release_golden_byte_for_byte() -> None:
    for name in ("config.json", "generation_config.json", "golden.safetensors", "model.safetensors"):
        assert (GOLDEN / name).read_bytes() == (SHARED / "release_golden" / name).read_bytes(), name


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / "golden.safetensors"))


@pytest.fixture(scope="module")
def model64() -> VambaForConditionalGeneration:
    model, info = VambaForConditionalGeneration.from_pretrained(str(GOLDEN), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    return model.double().eval()


def _video(golden, dtype=torch.float64) -> dict[str, torch.Tensor]:
    return dict(pixel_values_videos=golden["pixel_values_videos"].to(dtype), video_grid_thw=golden["video_grid_thw"])


# -- load as saved -------------------------------------------------------------------------------------------------
def test_golden_config_is_read_as_the_release_defines_it():
    cfg = VambaConfig.from_pretrained(str(GOLDEN))
    text = cfg.text_config
    assert text.mixer_type == "mamba2" and text.use_alpha_balancing
    assert not text.cross_attn_use_layer_norm and not text.cross_attn_use_position_embeddings
    # the listed mixer fields, and the release's defaults for everything omitted
    m = text.mixer_config
    assert (m["d_state"], m["headdim"], m["chunk_size"]) == (16, 16, 8)
    assert (m["d_conv"], m["expand"], m["ngroups"], m["A_init_range"]) == (4, 2, 1, [1.0, 16.0])
    assert m["dt_limit"] == [0.0, math.inf] and not m["D_has_hdim"] and m["conv_bias"] and not m["bias"]
    assert text.rope_parameters["mrope_section"] == [2, 3, 3] and text.rms_norm_eps == 1e-6
    assert text.bos_token_id == 256 and text.eos_token_id is None  # the release's default, not transformers 5's
    assert cfg.vision_config.patch_size == 4 and cfg.vision_config.depth == 2


def test_prefill_logits_float64(model64, golden):
    with torch.no_grad():
        out = model64(input_ids=golden["input_ids_video"], **_video(golden)).logits
    assert rel(out, golden["logits_video_fp64"]) <= TOL


def test_prefill_logits_float32(golden):
    model = VambaForConditionalGeneration.from_pretrained(str(GOLDEN)).float().eval()
    with torch.no_grad():
        out = model(input_ids=golden["input_ids_video"], **_video(golden, torch.float32)).logits
    assert rel(out, golden["logits_video_fp32"]) <= TOL


def test_greedy_tokens_and_step_logits(model64, golden):
    out = model64.generate(
        input_ids=golden["input_ids_video"], **_video(golden), max_new_tokens=8, do_sample=False,
        output_logits=True, return_dict_in_generate=True, pad_token_id=0, eos_token_id=None,
    )
    prompt = golden["input_ids_video"].shape[1]
    assert out.sequences[:, prompt:].tolist() == golden["gen_tokens_fp64"].tolist()
    steps = torch.stack(out.logits, dim=1)
    assert rel(steps, golden["gen_logits_fp64"]) <= TOL


def test_full_sequence_without_cache(model64, golden):
    ids = torch.cat([golden["input_ids_video"], golden["gen_tokens_fp64"]], dim=1)
    with torch.no_grad():
        out = model64(input_ids=ids, **_video(golden), use_cache=False).logits
    assert rel(out, golden["logits_full_nocache_fp64"]) <= TOL


def test_encode_once_and_streaming_decode_the_release_tokens(model64, golden):
    ids = golden["input_ids_video"]
    for chunk in (None, 2):  # whole video, then 2 frames (one temporal patch) at a time
        cache = model64.encode_video(**_video(golden), chunk_frames=chunk)
        out = model64.generate(input_ids=ids, **{CACHE: cache.fork()}, max_new_tokens=8, do_sample=False,
                               pad_token_id=0, eos_token_id=None)
        assert out[:, ids.shape[1]:].tolist() == golden["gen_tokens_fp64"].tolist(), chunk


def test_release_style_image_prompt(model64, golden):
    ids = golden["input_ids_image_release_style"]
    assert 262 not in ids.tolist()[0]  # the release's layout: no <|image_pad|>
    with torch.no_grad():
        out = model64(input_ids=ids, pixel_values=golden["pixel_values"].double(),
                      image_grid_thw=golden["image_grid_thw"]).logits
    assert rel(out, golden["logits_image_release_style_fp64"]) <= TOL


def test_our_processor_writes_the_release_image_prompt(golden):
    """The image turn our processor writes is token for token the release's (the golden prompt's roles are
    abbreviated, so the user turn from the marker to <|im_end|> is compared)."""
    from vamba.data.processor import VambaProcessor

    proc = VambaProcessor.tiny(patch_size=4, max_pixels=32 * 48)  # 32x48 is kept as the release kept it
    ids = golden["input_ids_image_release_style"][0].tolist()
    start, end = ids.index(259), ids.index(258, ids.index(259))  # <|vision_start|> .. <|im_end|>
    question = proc.tokenizer.decode(ids[start + 2 : end])
    image = torch.zeros(32, 48, 3, dtype=torch.uint8).numpy()
    out = proc([{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}],
               add_generation_prompt=True)
    ours = out["input_ids"][0].tolist()
    mine = ours[ours.index(259):]
    assert mine[: end - start + 1] == ids[start : end + 1]
    assert out["image_grid_thw"].tolist() == golden["image_grid_thw"].tolist()


# -- configs: release defaults, unsupported fields, other formats ---------------------------------------------------
def _release_dict(**mixer) -> dict:
    d = json.loads((GOLDEN / "config.json").read_text())
    d["vision_mamba_mixer_config"] = {"enable": True, "hidden_dim": d["hidden_size"], "model_type": "qwen2_vl",
                                      **mixer}
    return d


def test_7b_release_config_resolves_to_the_design_defaults():
    d = _release_dict()
    d.update(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
             num_key_value_heads=4, vocab_size=152064)
    d["vision_mamba_mixer_config"] = {"enable": True, "hidden_dim": 3584, "model_type": "qwen2_vl"}
    m = VambaConfig.from_dict(d).text_config.mixer_config
    expected = {k: RELEASE_MIXER_DEFAULTS[k] for k in ("d_state", "d_conv", "expand", "headdim", "ngroups",
                                                      "chunk_size", "dt_min", "dt_max", "dt_init_floor")}
    assert {k: m[k] for k in expected} == expected == {
        "d_state": 128, "d_conv": 4, "expand": 2, "headdim": 64, "ngroups": 1, "chunk_size": 256,
        "dt_min": 0.001, "dt_max": 0.1, "dt_init_floor": 1e-4}
    assert m["A_init_range"] == [1.0, 16.0] and m["rescale_prenorm_residual"]
    with torch.device("meta"):
        from vamba.modeling.mamba2 import Mamba2Mixer

        mixer = Mamba2Mixer(3584, **{k: v for k, v in m.items() if k != "rescale_prenorm_residual"})
    assert (mixer.d_inner, mixer.nheads, mixer.in_proj.out_features) == (7168, 112, 2 * 7168 + 2 * 128 + 112)


@pytest.mark.parametrize("field,value", [
    ("norm_type", "layernorm"), ("residual_in_fp32", True), ("d_ssm", 64), ("rmsnorm", False),
    ("norm_before_gate", True), ("process_group", "tp"), ("hidden_dim", 32),
])
def test_unsupported_release_mixer_fields_are_rejected(field, value):
    with pytest.raises(ValueError, match=rf"{field}=") as err:
        VambaConfig.from_dict(_release_dict(**{field: value}))
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_release_mixer_fields_are_honoured_not_ignored():
    cfg = VambaConfig.from_dict(_release_dict(d_state=16, headdim=16, chunk_size=8, D_has_hdim=True, bias=True,
                                              conv_bias=False, dt_limit=[0.0, 0.5], conv_init=0.2,
                                              use_mem_eff_path=False, sequence_parallel=False))
    model = VambaForConditionalGeneration(cfg)
    mixer = model.model.language_model.layers[0].vision_mixer.mixer
    assert mixer.D.shape == (mixer.d_inner,) and mixer.in_proj.bias is not None and mixer.conv1d.bias is None
    assert mixer.dt_limit == (0.0, 0.5) and mixer.conv1d.weight.abs().max() <= 0.2
    off = VambaConfig.from_dict(_release_dict(rescale_prenorm_residual=False, d_state=16, headdim=16))
    assert VambaForConditionalGeneration(off).model.language_model.layers[0].vision_mixer.mixer.out_proj_scale == 1.0


def test_enable_false_means_no_mixer():
    d = _release_dict()
    d["vision_mamba_mixer_config"] = {"enable": False, "hidden_dim": 64, "model_type": "qwen2_vl"}
    assert VambaConfig.from_dict(d).text_config.mixer_type == "none"
    d.pop("vision_mamba_mixer_config")  # the release's default for the whole field: no mixer
    assert VambaConfig.from_dict(d).text_config.mixer_type == "none"


def test_a_config_of_another_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ValueError, match="vision_mamba_mixer_config.*model_type 'llama'"):
        VambaConfig.from_pretrained(str(tmp_path))


def test_missing_or_misshapen_weights_fail_loudly(tmp_path):
    weights = load_file(str(GOLDEN / "model.safetensors"))
    from safetensors.torch import save_file

    for name, edit in (("missing", lambda w: w.pop("model.layers.1.vision_mixer.mixer.A_log")),
                       ("mismatched", lambda w: w.update({"model.layers.0.alpha": torch.zeros(2)}))):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((GOLDEN / "config.json").read_text())
        w = dict(weights)
        edit(w)
        save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
        # ours names the key; for a shape mismatch transformers raises its own error after its load report
        with pytest.raises((ValueError, RuntimeError), match="A_log|ignore_mismatched_sizes"):
            VambaForConditionalGeneration.from_pretrained(str(d))
    empty = tmp_path / "no_weights"
    empty.mkdir()
    (empty / "config.json").write_text((GOLDEN / "config.json").read_text())
    with pytest.raises(OSError):
        VambaForConditionalGeneration.from_pretrained(str(empty))


# -- the other direction -------------------------------------------------------------------------------------------
def test_export_release_format_round_trips(tmp_path, golden):
    out = export_checkpoint(GOLDEN, tmp_path / "export", format="release")
    ours, theirs = json.loads((out / "config.json").read_text()), json.loads((GOLDEN / "config.json").read_text())

    def shape(d):  # keys and nesting, recursively
        return {k: shape(v) if isinstance(v, dict) else type(v).__name__ for k, v in d.items()}

    assert shape(ours) == shape(theirs)
    assert {k: v for k, v in ours.items() if k != "transformers_version"} == {
        k: v for k, v in theirs.items() if k != "transformers_version"}
    assert set(load_file(str(out / "model.safetensors"))) == set(load_file(str(GOLDEN / "model.safetensors")))
    model = VambaForConditionalGeneration.from_pretrained(str(out)).double().eval()
    with torch.no_grad():
        logits = model(input_ids=golden["input_ids_video"], **_video(golden)).logits
    assert rel(logits, golden["logits_video_fp64"]) <= TOL


def test_export_refuses_what_the_release_cannot_express(tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.modeling.tiny import tiny_qwen2vl_config

    model = from_qwen2vl(Qwen2VLForConditionalGeneration(tiny_qwen2vl_config()), mixer_type="mamba1")
    model.save_pretrained(tmp_path / "m1")
    with pytest.raises(ValueError, match="mamba1"):
        export_checkpoint(tmp_path / "m1", tmp_path / "out", format="release")
    assert not (tmp_path / "out").exists()


def test_vamba_chat_reads_the_release_directory(tmp_path):
    from vamba.data.mp4 import write_mp4

    video = tmp_path / "v.mp4"
    frames = torch.randint(0, 255, (8, 32, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    write_mp4(video, frames.numpy(), fps=4.0, codec="mpeg4", gop=4)
    proc = subprocess.run(
        [sys.executable, "-m", "vamba.cli", "chat", "What is shown?", "--model", str(GOLDEN), "--video", str(video),
         "--processor", "tiny", "--frames", "8", "--max-new-tokens", "4"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


# -- cross_attn_use_layer_norm as the release computes it ----------------------------------------------------------
def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_cross_attn_layer_norm_replaces_the_video_stream():
    """An independent re-statement of one layer with `cross_attn_use_layer_norm=true`: V is replaced by
    RMSNorm_in(V) for the whole layer (keys/values, the mixer block and its residual), as in the release."""
    d = json.loads((GOLDEN / "config.json").read_text())
    d["cross_attn_use_layer_norm"] = True
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(VambaConfig.from_dict(d)).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # norms and alpha away from their init, so they matter
            if name.endswith("layernorm.weight") or name.endswith("alpha"):
                p.uniform_(0.2, 0.9)
    lm = model.model.language_model
    layer = lm.layers[0]
    n, m, width = 6, 8, lm.config.hidden_size
    x, video = torch.randn(1, n, width, dtype=torch.float64), 3 * torch.randn(1, m, width, dtype=torch.float64)
    pos = torch.arange(n)[None]
    pe = lm.rotary_emb(x, pos[None].expand(3, 1, n))
    causal = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)[None, None]

    from vamba.modeling.modeling_vamba import CrossAttentionContext

    with torch.no_grad():
        got_x, got_v = layer(x, video, cross=CrossAttentionContext(visible=torch.ones(1, n, m, dtype=torch.bool)),
                             attention_mask=causal, position_ids=pos, position_embeddings=pe)
        eps = layer.input_layernorm.variance_epsilon
        h, vn = _rms(x, layer.input_layernorm.weight, eps), _rms(video, layer.input_layernorm.weight, eps)
        self_out = layer.self_attn(hidden_states=h, attention_mask=causal, position_embeddings=pe)[0]
        ca, hd = layer.cross_attn, layer.cross_attn.head_dim
        q = ca.q_proj(h).view(1, n, -1, hd).transpose(1, 2)
        k = ca.k_proj(vn).view(1, m, -1, hd).transpose(1, 2).repeat_interleave(q.shape[1] // 2, dim=1)
        v = ca.v_proj(vn).view(1, m, -1, hd).transpose(1, 2).repeat_interleave(q.shape[1] // 2, dim=1)
        cross = ca.o_proj((torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, -1) @ v).transpose(1, 2).reshape(1, n, -1))
        a = layer.alpha.clamp(0, 1)
        x1 = x + a * self_out + (1 - a) * cross
        want_x = x1 + layer.mlp(_rms(x1, layer.post_attention_layernorm.weight, eps))
        block = layer.vision_mixer
        want_v = vn + block.mixer(_rms(vn, block.norm.weight, block.norm.variance_epsilon))
    # (transformers' RMSNorm computes in float32, hence 1e-6 and not float64 rounding)
    assert rel(got_x, want_x) < 1e-6 and rel(got_v, want_v) < 1e-6
    # and not the old reading (normed keys/values only, raw stream into the mixer)
    assert rel(got_v, video + block.mixer(_rms(video, block.norm.weight, block.norm.variance_epsilon))) > 1e-3
    # streaming prefill takes the same path
    cache_full = model.encode_video(**_video(load_file(str(GOLDEN / "golden.safetensors"))))
    cache_stream = model.encode_video(**_video(load_file(str(GOLDEN / "golden.safetensors"))), chunk_frames=2)
    for i in cache_full.video_kv:
        assert rel(cache_stream.video_kv[i][0], cache_full.video_kv[i][0]) < 1e-8


def test_vamba_eval_scores_the_release_directory(synthetic_data, tmp_path):
    from vamba.cli import main

    assert main(["eval", "benchmark=synthetic", f"model.path={GOLDEN}", "model.processor=tiny",
                 f"data_dir={synthetic_data}", "frames.count=8", f"output_dir={tmp_path}", "max_new_tokens=2"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"]["total"] == 8 and summary["errors"] == 0
