"""The Vamba model against transformers' Qwen2-VL and against itself (caching, packing, batching, gradients)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2VLForConditionalGeneration

from vamba import VambaConfig, VambaForConditionalGeneration, from_qwen2vl
from vamba.modeling import VambaCache
from vamba.modeling.compat import CACHE
from vamba.modeling.tiny import (
    BOS,
    EOS,
    IMAGE_PAD,
    VISION_END,
    VISION_START,
    random_video,
    tiny_qwen2vl_config,
    tiny_vamba_config,
)


def _seed(n: int = 0) -> torch.Generator:
    torch.manual_seed(n)
    return torch.Generator().manual_seed(n)


@pytest.fixture(scope="module")
def qwen() -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(tiny_qwen2vl_config()).eval()


@pytest.fixture(scope="module")
def vamba(qwen) -> VambaForConditionalGeneration:
    torch.manual_seed(1)
    model = from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 8}).eval()
    # Move alpha off 0.5 and make the mixers non-trivial so that mistakes in either path show up.
    with torch.no_grad():
        for i, layer in enumerate(model.model.language_model.layers):
            layer.alpha.fill_(0.3 + 0.2 * i)
            layer.vision_mixer.mixer.out_proj.weight.mul_(20)
    return model


def _prompt(n_text: int, video: bool, gen: torch.Generator) -> torch.Tensor:
    body = torch.randint(1, 200, (n_text,), generator=gen)
    head = [BOS] + ([VISION_START, VISION_END] if video else [])
    return torch.cat([torch.tensor(head), body])


# 1. Text-only parity with transformers' Qwen2-VL --------------------------------------------------------------
def test_text_only_matches_qwen2vl_with_padding(qwen, vamba):
    gen = _seed(0)
    ids = torch.randint(1, 200, (2, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding on the second row
    with torch.no_grad():
        ref = qwen(input_ids=ids, attention_mask=mask).logits
        out = vamba(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    assert (ref[valid] - out[valid]).abs().max().item() < 1e-4
    assert ref.abs().max() > 0.1  # the comparison is not between two near-zero tensors


# 2. Conversion copies self-attention into cross-attention -----------------------------------------------------
def test_conversion_copies_self_attention(qwen):
    model = from_qwen2vl(qwen)
    for layer, base in zip(model.model.language_model.layers, qwen.model.language_model.layers):
        for name, p in layer.cross_attn.named_parameters():
            assert torch.equal(p, dict(layer.self_attn.named_parameters())[name]), name
        assert torch.equal(layer.self_attn.q_proj.weight, base.self_attn.q_proj.weight)
        assert layer.alpha.item() == 0.5
        mixer = layer.vision_mixer.mixer
        A = torch.exp(mixer.A_log)
        assert A.min() >= 1 and A.max() <= 16
    assert torch.equal(model.lm_head.weight, qwen.lm_head.weight)
    assert torch.equal(model.model.visual.patch_embed.proj.weight, qwen.model.visual.patch_embed.proj.weight)
    names = {n for n, _ in model.model.language_model.layers[0].cross_attn.named_parameters()}
    assert names == {
        "q_proj.weight",
        "q_proj.bias",
        "k_proj.weight",
        "k_proj.bias",
        "v_proj.weight",
        "v_proj.bias",
        "o_proj.weight",
    }


def test_random_cross_attention_init_differs(qwen):
    model = from_qwen2vl(qwen, cross_attn_init="random")
    layer = model.model.language_model.layers[0]
    assert not torch.equal(layer.cross_attn.q_proj.weight, layer.self_attn.q_proj.weight)
    assert layer.cross_attn.q_proj.weight.std() < 0.05  # initializer_range-scaled normal init


# The video path -----------------------------------------------------------------------------------------------
def _video_batch(config, rows: list[tuple[int, int | None]], seed: int = 0):
    """rows: (text length, frames or None). Returns left-padded input_ids, attention_mask, pixels, grid."""
    gen = _seed(seed)
    prompts = [_prompt(n, frames is not None, gen) for n, frames in rows]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    videos = [random_video(config, frames, generator=gen) for _, frames in rows if frames is not None]
    pixels = torch.cat([v[0] for v in videos]) if videos else None
    grid = torch.cat([v[1] for v in videos]) if videos else None
    return ids, mask, pixels, grid


def test_video_changes_logits_and_alpha_matters(vamba):
    ids, mask, pixels, grid = _video_batch(vamba.config, [(8, 4)])
    with torch.no_grad():
        with_video = vamba(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid).logits
        other = vamba(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels + 1, video_grid_thw=grid).logits
    assert (with_video - other).abs().max() > 1e-3


# 5. Cached generation equals greedy decoding by full recomputation --------------------------------------------
def test_generate_with_cache_equals_full_recomputation(vamba):
    ids, mask, pixels, grid = _video_batch(vamba.config, [(6, 4), (9, 8)], seed=3)
    steps = 6
    with torch.no_grad():
        out = vamba.generate(
            input_ids=ids,
            attention_mask=mask,
            pixel_values_videos=pixels,
            video_grid_thw=grid,
            max_new_tokens=steps,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        seq, m = ids, mask
        for _ in range(steps):
            logits = vamba(
                input_ids=seq, attention_mask=m, pixel_values_videos=pixels, video_grid_thw=grid, use_cache=False
            ).logits
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            seq, m = torch.cat([seq, nxt], 1), torch.cat([m, torch.ones_like(nxt)], 1)
    assert torch.equal(out, seq)


def test_decoding_never_reruns_mixer_or_video_projection(vamba):
    ids, mask, pixels, grid = _video_batch(vamba.config, [(6, 4)], seed=4)
    calls = {"mixer": 0, "project": 0}
    layer = vamba.model.language_model.layers[0]
    hooks = [
        layer.vision_mixer.register_forward_hook(lambda *a: calls.__setitem__("mixer", calls["mixer"] + 1)),
    ]
    original = layer.cross_attn.project_video

    def counting(*a, **k):
        calls["project"] += 1
        return original(*a, **k)

    layer.cross_attn.project_video = counting
    try:
        with torch.no_grad():
            vamba.generate(
                input_ids=ids,
                attention_mask=mask,
                pixel_values_videos=pixels,
                video_grid_thw=grid,
                max_new_tokens=5,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
    finally:
        del layer.cross_attn.project_video
        for h in hooks:
            h.remove()
    assert calls == {"mixer": 1, "project": 1}


# 6. Packing and padding ---------------------------------------------------------------------------------------
def test_packed_row_equals_separate_samples(vamba):
    gen = _seed(5)
    lengths, frames = [7, 5, 9], [4, None, 8]  # the middle sample is text-only
    prompts = [_prompt(n, f is not None, gen) for n, f in zip(lengths, frames)]
    videos = [random_video(vamba.config, f, generator=gen) for f in frames if f is not None]
    with torch.no_grad():
        separate, vi = [], 0
        for p, f in zip(prompts, frames):
            kw = {}
            if f is not None:
                kw = dict(pixel_values_videos=videos[vi][0], video_grid_thw=videos[vi][1])
                vi += 1
            separate.append(vamba(input_ids=p[None], use_cache=False, **kw).logits[0])
        packed_ids = torch.cat(prompts)[None]
        positions = torch.cat([torch.arange(len(p)) for p in prompts])[None]
        packed = vamba(
            input_ids=packed_ids,
            position_ids=positions,
            use_cache=False,
            pixel_values_videos=torch.cat([v[0] for v in videos]),
            video_grid_thw=torch.cat([v[1] for v in videos]),
        ).logits[0]
    torch.testing.assert_close(packed, torch.cat(separate), atol=1e-4, rtol=1e-4)


def test_padded_batch_equals_separate_runs(vamba):
    rows = [(6, 4), (11, 8), (4, None)]
    ids, mask, pixels, grid = _video_batch(vamba.config, rows, seed=6)
    with torch.no_grad():
        batched = vamba(
            input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid, use_cache=False
        ).logits
        offset = 0
        for i, (_, frames) in enumerate(rows):
            keep = mask[i].bool()
            kw = {}
            if frames is not None:
                n = int(grid[offset].prod())
                start = int(grid[:offset].prod(-1).sum())
                kw = dict(pixel_values_videos=pixels[start : start + n], video_grid_thw=grid[offset : offset + 1])
                offset += 1
            single = vamba(input_ids=ids[i, keep][None], use_cache=False, **kw).logits[0]
            torch.testing.assert_close(batched[i, keep], single, atol=1e-4, rtol=1e-4)


def test_text_only_row_in_video_batch_matches_qwen2vl(qwen, vamba):
    ids, mask, pixels, grid = _video_batch(vamba.config, [(7, 4), (7, None)], seed=7)
    with torch.no_grad():
        out = vamba(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid).logits
        ref = qwen(input_ids=ids[1:], attention_mask=mask[1:]).logits
    keep = mask[1].bool()
    assert (out[1, keep] - ref[0, keep]).abs().max() < 1e-4


def test_images_and_videos_share_the_stream(vamba):
    gen = _seed(8)
    image_pixels, image_grid = random_video(vamba.config, frames=2, generator=gen)  # one image = 2 equal frames
    video_pixels, video_grid = random_video(vamba.config, frames=4, generator=gen)
    ids = torch.tensor([[BOS, VISION_START, IMAGE_PAD, VISION_END, 5, VISION_START, VISION_END, 6, 7]])
    with torch.no_grad():
        out = vamba(
            input_ids=ids,
            pixel_values=image_pixels,
            image_grid_thw=image_grid,
            pixel_values_videos=video_pixels,
            video_grid_thw=video_grid,
            use_cache=False,
        ).logits
        swapped = vamba(
            input_ids=ids,
            pixel_values=video_pixels[: len(image_pixels)],
            image_grid_thw=image_grid,
            pixel_values_videos=video_pixels,
            video_grid_thw=video_grid,
            use_cache=False,
        ).logits
    assert out.shape == (1, 9, 272)
    assert (out - swapped).abs().max() > 1e-4  # the image contributes
    # The release's layout marks both kinds alike; mm_token_type_ids says which marker is which (as the processor
    # emits it). Same function as the old layout minus the <|image_pad|> text token.
    release_ids = torch.tensor([[BOS, VISION_START, VISION_END, 5, VISION_START, VISION_END, 6, 7]])
    types = torch.tensor([[0, 1, 0, 0, 2, 0, 0, 0]])
    kw = dict(pixel_values=image_pixels, image_grid_thw=image_grid, pixel_values_videos=video_pixels,
              video_grid_thw=video_grid, use_cache=False)
    with torch.no_grad():
        typed = vamba(input_ids=release_ids, mm_token_type_ids=types, **kw).logits
        flipped = vamba(input_ids=release_ids, mm_token_type_ids=torch.tensor([[0, 2, 0, 0, 1, 0, 0, 0]]), **kw).logits
    # the types decide which item a marker holds (flipped: video first, so the mixer sees another sequence)
    assert typed.shape == (1, 8, 272) and (typed - flipped).abs().max() > 1e-4
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        vamba(input_ids=release_ids, **kw)


def test_release_image_layout_without_types(vamba):
    """One kind present: markers need no types, and an image reads exactly as in the old layout."""
    pixels, grid = random_video(vamba.config, frames=2, generator=_seed(3))
    old = torch.tensor([[BOS, VISION_START, IMAGE_PAD, VISION_END, 5, 6]])
    new = torch.tensor([[BOS, VISION_START, VISION_END, 5, 6]])
    with torch.no_grad():
        a = vamba(input_ids=new, pixel_values=pixels, image_grid_thw=grid, use_cache=False).logits
        b = vamba(input_ids=new, pixel_values_videos=pixels, video_grid_thw=grid, use_cache=False).logits
        c = vamba(input_ids=old, pixel_values=pixels, image_grid_thw=grid, use_cache=False).logits
    assert (a - b).abs().max() < 1e-5  # an image is a video of two equal frames to the vision tower
    assert (a[0, -1] - c[0, -1]).abs().max() > 1e-6  # the extra <|image_pad|> text token changes the answer


# 7. Stage-1 gradients -----------------------------------------------------------------------------------------
def test_stage1_trainable_parameters_get_gradients(qwen):
    model = from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 8}).train()
    patterns = ("cross_attn.", "vision_mixer.", ".alpha")
    for name, p in model.named_parameters():
        p.requires_grad_(any(t in name for t in patterns))
    ids, mask, pixels, grid = _video_batch(model.config, [(8, 4), (6, 8)], seed=9)
    out = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid, labels=ids)
    out.loss.backward()
    last = len(model.model.language_model.layers) - 1
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
        elif f"layers.{last}.vision_mixer." in name:
            # The last layer's V' feeds nothing (DESIGN.md: video tokens skip the MLP; no layer follows).
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_same_gradients(qwen):
    ids, mask, pixels, grid = _video_batch(tiny_vamba_config(), [(8, 4)], seed=10)
    grads, calls = [], []
    for checkpointing in (False, True):
        torch.manual_seed(2)
        model = from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 8}).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        count = [0]

        def bump(*_, count=count):
            count[0] += 1

        model.model.language_model.layers[0].vision_mixer.register_forward_pre_hook(bump)
        model(
            input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid, labels=ids
        ).loss.backward()
        grads.append(model.model.language_model.layers[0].vision_mixer.mixer.in_proj.weight.grad.clone())
        calls.append(count[0])
    assert calls == [1, 2]  # the checkpointed layer really recomputed its forward in backward
    torch.testing.assert_close(grads[0], grads[1])


# Alpha balancing and the ablation switches --------------------------------------------------------------------
def test_alpha_is_clamped_without_changing_the_parameter(vamba):
    ids, mask, pixels, grid = _video_batch(vamba.config, [(6, 4)], seed=11)
    layer = vamba.model.language_model.layers[0]
    kw = dict(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid, use_cache=False)
    saved = layer.alpha.detach().clone()
    try:
        with torch.no_grad():
            layer.alpha.fill_(1.0)
            at_one = vamba(**kw).logits
            layer.alpha.fill_(3.0)
            above = vamba(**kw).logits
            assert layer.alpha.item() == 3.0  # clamped out of place, not written back
    finally:
        with torch.no_grad():
            layer.alpha.copy_(saved)
    torch.testing.assert_close(at_one, above)


@pytest.mark.parametrize(
    "fields",
    [
        dict(mixer_type="none"),
        dict(mixer_type="mamba1", mixer_config={"d_state": 4}),
        dict(use_alpha_balancing=False),
        dict(cross_attn_use_position_embeddings=True, cross_attn_use_layer_norm=True),
    ],
)
def test_ablation_variants_run_and_keep_text_only_parity(qwen, fields):
    model = from_qwen2vl(qwen, **fields).eval()
    layer = model.model.language_model.layers[0]
    assert (layer.vision_mixer is None) == (fields.get("mixer_type") == "none")
    assert (layer.alpha is None) == (fields.get("use_alpha_balancing") is False)
    ids, mask, pixels, grid = _video_batch(model.config, [(6, 4), (5, None)], seed=12)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid).logits
        ref = qwen(input_ids=ids[1:], attention_mask=mask[1:]).logits
    keep = mask[1].bool()
    assert torch.isfinite(out).all()
    assert (out[1, keep] - ref[0, keep]).abs().max() < 1e-4


def test_cross_attention_position_switch_changes_output(qwen):
    ids, mask, pixels, grid = _video_batch(tiny_vamba_config(), [(6, 8)], seed=13)
    outs = []
    for rope in (False, True):
        torch.manual_seed(3)
        model = from_qwen2vl(qwen, cross_attn_use_position_embeddings=rope).eval()
        with torch.no_grad():
            for layer in model.model.language_model.layers:  # peaky attention, so positions matter visibly
                layer.cross_attn.q_proj.weight.mul_(30)
                layer.cross_attn.k_proj.weight.mul_(30)
            outs.append(
                model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid).logits
            )
    assert (outs[0] - outs[1]).abs().max() > 1e-5


# Save / load --------------------------------------------------------------------------------------------------
def test_save_and_load_roundtrip(vamba, tmp_path):
    vamba.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = VambaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.model_type == "vamba"
    ids, mask, pixels, grid = _video_batch(vamba.config, [(6, 4)], seed=14)
    kw = dict(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kw).logits, vamba(**kw).logits)


def test_auto_classes_load_vamba(vamba, tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    vamba.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VambaConfig)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), VambaForConditionalGeneration)


def test_convert_cli_writes_loadable_directory(qwen, tmp_path):
    from vamba.cli import main

    qwen.save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "tokenizer_config.json").write_text("{}")
    assert main(["convert", "--base", str(tmp_path / "base"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "tokenizer_config.json").is_file()
    model = VambaForConditionalGeneration.from_pretrained(tmp_path / "out")
    layer = model.model.language_model.layers[1]
    assert torch.equal(layer.cross_attn.v_proj.weight, layer.self_attn.v_proj.weight)
    assert torch.equal(layer.self_attn.v_proj.weight, qwen.model.language_model.layers[1].self_attn.v_proj.weight)


@pytest.mark.parametrize("mixer_type", ["mamba2", "mamba1"])
def test_converting_a_checkpoint_directory_initialises_the_mixers(qwen, tmp_path, mixer_type):
    """Regression: loading a Qwen2-VL directory left A_log/D/dt_bias as uninitialised memory (NaN logits)."""
    from vamba.modeling.convert import convert_checkpoint

    qwen.save_pretrained(tmp_path / "base")
    cfg = {"d_state": 16, "headdim": 16, "chunk_size": 8} if mixer_type == "mamba2" else {"d_state": 16}
    convert_checkpoint(tmp_path / "base", tmp_path / "out", mixer_type=mixer_type, mixer_config=cfg)
    model = VambaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    for layer in model.model.language_model.layers:
        mixer = layer.vision_mixer.mixer
        assert torch.equal(mixer.D, torch.ones_like(mixer.D))  # mamba_ssm: D = 1
        a = -torch.exp(mixer.A_log.float())
        if mixer_type == "mamba2":  # A in -[1, 16], dt = softplus(dt_bias) in [dt_min, dt_max]
            assert ((a <= -1 + 1e-5) & (a >= -16 - 1e-4)).all()
            dt = torch.nn.functional.softplus(mixer.dt_bias)
            assert ((dt >= 1e-4 - 1e-7) & (dt <= 0.1 + 1e-6)).all()
        else:  # S4D-real: A[:, n] = -(n + 1)
            assert torch.allclose(a, -torch.arange(1, 17.0).expand_as(a))
    pixels, grid = random_video(model.config, frames=4, height=16, width=16, generator=_seed())
    ids = torch.tensor([[BOS, VISION_START, VISION_END, 5, 6, 7]])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid).logits).all()
    # A Vamba checkpoint's own mixer weights are loaded, not re-initialised.
    with torch.no_grad():
        model.model.language_model.layers[0].vision_mixer.mixer.D.fill_(3.0)
    model.save_pretrained(tmp_path / "again")
    again = VambaForConditionalGeneration.from_pretrained(tmp_path / "again")
    assert (again.model.language_model.layers[0].vision_mixer.mixer.D == 3.0).all()


# Bad input ----------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(vamba):
    ids, mask, pixels, grid = _video_batch(vamba.config, [(6, 4)], seed=16)
    with pytest.raises(ValueError, match="describes .* patches"):
        vamba(input_ids=ids, pixel_values_videos=pixels[:-1], video_grid_thw=grid)
    with pytest.raises(ValueError, match="marker"):
        vamba(input_ids=ids)  # marker without a video
    with pytest.raises(ValueError, match="marker"):
        vamba(input_ids=ids[:, 3:], pixel_values_videos=pixels, video_grid_thw=grid)  # video without a marker
    with pytest.raises(ValueError, match="needs text"):
        vamba(input_ids=ids[:, :0], pixel_values_videos=pixels, video_grid_thw=grid)
    with pytest.raises(ValueError, match="floating-point"):
        vamba(input_ids=ids, pixel_values_videos=pixels.to(torch.uint8), video_grid_thw=grid)
    with pytest.raises(ValueError, match="without video_grid_thw"):
        vamba(input_ids=ids, pixel_values_videos=pixels)
    with pytest.raises(ValueError, match="is on meta"):
        vamba(input_ids=ids, pixel_values_videos=pixels.to("meta"), video_grid_thw=grid)
    with pytest.raises(ValueError, match="mixer_type"):
        VambaConfig(mixer_type="mamba3")


def test_cache_is_vamba_cache(vamba):
    ids, mask, pixels, grid = _video_batch(vamba.config, [(6, 4)], seed=17)
    with torch.no_grad():
        out = vamba(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid, use_cache=True)
    assert isinstance(out[CACHE], VambaCache)
    assert set(out[CACHE].video_kv) == {0, 1}
    k, v = out[CACHE].video_kv[0]
    assert k.shape == (1, 2, 8, 16)  # (batch, kv heads, M = 2 x 4 x 4 patches / 2x2 merge, head dim)
    assert EOS != BOS


def test_training_text_only_batch_runs_every_module_with_zero_effect(qwen):
    """ZeRO-3/DDP need the same modules on every rank: a text-only training batch still runs the vision tower,
    cross-attention and mixers, on a placeholder no text token can see, and the loss is unchanged."""
    model = from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 8})
    ids = torch.randint(1, 200, (2, 9), generator=_seed(20))
    called = set()
    for name in (
        "model.visual",
        "model.language_model.layers.0.cross_attn",
        "model.language_model.layers.0.vision_mixer",
    ):
        model.get_submodule(name).register_forward_pre_hook(lambda *a, name=name: called.add(name))
    train_loss = model.train()(input_ids=ids, labels=ids).loss
    assert len(called) == 3
    train_loss.backward()
    assert model.model.language_model.layers[0].cross_attn.k_proj.weight.grad.abs().sum() == 0
    with torch.no_grad():
        eval_loss = model.eval()(input_ids=ids, labels=ids).loss
        ref = qwen(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(train_loss.detach(), eval_loss)
    torch.testing.assert_close(eval_loss, ref, atol=1e-5, rtol=1e-5)


def test_encode_once_then_answer_many_questions_equals_encoding_per_question(vamba):
    gen = _seed(21)
    pixels, grid = random_video(vamba.config, 8, generator=gen)
    video_cache = vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid)
    for n in (5, 9):
        ids = _prompt(n, True, gen)[None]
        with torch.no_grad():
            once = vamba.generate(
                input_ids=ids,
                **{CACHE: video_cache.fork()},
                max_new_tokens=4,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
            per_question = vamba.generate(
                input_ids=ids,
                pixel_values_videos=pixels,
                video_grid_thw=grid,
                max_new_tokens=4,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
            logits_once = vamba(input_ids=ids, **{CACHE: video_cache.fork()}).logits
            logits_full = vamba(input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grid).logits
        assert torch.equal(once, per_question)
        torch.testing.assert_close(logits_once, logits_full)
    assert video_cache.get_seq_length() > 0 and video_cache.fork().get_seq_length() == 0


def test_token_reduction_keeps_a_uniform_fraction(vamba):
    pixels, grid = random_video(vamba.config, 8, generator=_seed(22))  # 4 x 2 x 2 = 16 visual tokens
    full = vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid)
    half = vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid, video_token_keep=0.5)
    assert full.video_kv[0][0].shape[2] == 16 and half.video_kv[0][0].shape[2] == 8
    with pytest.raises(ValueError, match="video_token_keep"):
        vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid, video_token_keep=1.5)


@pytest.mark.parametrize("chunk", [2, 4, 6])
def test_streaming_prefill_equals_full_prefill(vamba, chunk):
    pixels, grid = random_video(vamba.config, 16, generator=_seed(23))  # 8 temporal patches
    full = vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid)
    streamed = vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid, chunk_frames=chunk)
    for layer in full.video_kv:
        torch.testing.assert_close(streamed.video_kv[layer][0], full.video_kv[layer][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(streamed.video_kv[layer][1], full.video_kv[layer][1], atol=1e-5, rtol=1e-5)
    ids = _prompt(6, True, _seed(24))[None]
    with torch.no_grad():
        a = vamba(input_ids=ids, **{CACHE: full.fork()}).logits
        b = vamba(input_ids=ids, **{CACHE: streamed.fork()}).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_long_videos_stream_by_default(vamba, monkeypatch):
    pixels, grid = random_video(vamba.config, 16, generator=_seed(25))
    calls = []
    original = vamba.encode_video_streaming
    monkeypatch.setattr(vamba, "encode_video_streaming", lambda *a, **k: calls.append(a) or original(*a, **k))
    vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid, stream_above_frames=8)
    assert len(calls) == 1  # 16 frames > 8: streamed
    vamba.encode_video(pixel_values_videos=pixels, video_grid_thw=grid)  # default threshold 256: not streamed
    assert len(calls) == 1


def test_a_transformers_release_outside_the_range_fails_at_import(monkeypatch):
    """vamba.modeling.compat names the tested range; a release outside it is refused before any model code runs."""
    import importlib

    import transformers

    from vamba.modeling import compat

    for version in ("5.22.2", "5.26.0", "6.0.0.dev0"):
        monkeypatch.setattr(transformers, "__version__", version)
        with pytest.raises(ImportError, match=rf"transformers >=5\.23,<5\.26 \(tested: 5\.23, 5\.24, 5\.25\), found "
                                              rf"{version}: pip install 'transformers>=5\.23,<5\.26'"):
            importlib.reload(compat)
    monkeypatch.undo()
    assert importlib.reload(compat).RELEASE == tuple(int(p) for p in transformers.__version__.split(".")[:2])


def test_cross_attention_blocks_equal_the_mask():
    """`attention_blocks` (mask-free SDPA calls: one for the batch, or one per packed sample) gives the masked
    attention's output and gradients; a layout blocks cannot describe (a sample's video in two runs) keeps the
    mask."""
    from vamba.modeling.cross_attention import VambaCrossAttention, attention_blocks

    attn = VambaCrossAttention(tiny_vamba_config().text_config, 0).double()
    g = _seed(41)
    heads, dim = attn.config.num_key_value_heads, attn.head_dim
    layouts = {  # (text sample per token, video sample per token; -1 = padding) per row
        "whole video": ([[0] * 5, [0] * 5], [[0] * 7, [0] * 7]),
        "packed + text-only + padded": ([[0, 0, 1, 1, 1, 2, 2]], [[0] * 3 + [1] * 4 + [-1] * 2]),
        "padded rows": ([[0] * 4, [0] * 4], [[0] * 6, [0] * 4 + [-1] * 2]),
    }
    for name, (text, video) in layouts.items():
        text, video = torch.tensor(text), torch.tensor(video)
        blocks = attention_blocks(text, video)
        assert blocks is not None, name
        visible = text[:, :, None] == video[:, None, :]
        hidden = torch.randn(*text.shape, attn.config.hidden_size, generator=g, dtype=torch.float64)
        kv = [torch.randn(video.shape[0], heads, video.shape[1], dim, generator=g, dtype=torch.float64)
              for _ in range(2)]
        results = []
        for use in (None, blocks):
            inputs = [t.clone().requires_grad_(True) for t in (hidden, *kv)]
            out, has_video = attn(inputs[0], tuple(inputs[1:]), visible, blocks=use)
            out.square().sum().backward()
            results.append([out, has_video, *(t.grad for t in inputs)])
        for masked, free in zip(*results):
            torch.testing.assert_close(free, masked, msg=name)
    assert attention_blocks(text, video)[0] == (0, 0, 4, 0, 6)
    assert attention_blocks(torch.tensor([[0, 0, 1]]), torch.tensor([[0, 1, 0]])) is None  # sample 0 split
