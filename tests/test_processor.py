"""The processor: ChatML with visual markers, assistant-only labels, and Qwen2-VL's exact pixel layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vamba.data.processor import IGNORE_INDEX, VambaProcessor, VisionSettings, patchify
from vamba.modeling.tiny import IM_END, IMAGE_PAD, VISION_END, VISION_START


@pytest.fixture(scope="module")
def proc() -> VambaProcessor:
    return VambaProcessor.tiny(patch_size=14)


def _frames(t: int, h: int = 56, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_image_patches_match_transformers_image_processor():
    settings = VisionSettings(patch_size=14, min_pixels=28 * 28, max_pixels=112 * 112)
    image = _frames(1, 56, 84)[0]
    ref = Qwen2VLImageProcessorPil(patch_size=14, temporal_patch_size=2, merge_size=2,
                                   min_pixels=28 * 28, max_pixels=112 * 112)(images=[image], return_tensors="pt")
    pixels, grid = patchify(image[None], settings)
    assert grid.tolist() == ref["image_grid_thw"][0].tolist() == [1, 4, 6]
    torch.testing.assert_close(pixels, ref["pixel_values"], atol=1e-5, rtol=1e-5)


def test_video_patches_follow_qwen2vl_layout():
    settings = VisionSettings(patch_size=14, min_pixels=28 * 28, max_pixels=112 * 112)
    frames = _frames(4)
    pixels, grid = patchify(frames, settings)
    assert grid.tolist() == [2, 4, 4] and pixels.shape == (32, 3 * 2 * 14 * 14)
    # Row 0 is temporal patch 0, merge window (0, 0), its top-left patch; its first pixel values are frame 0's
    # top-left pixel (channel 0), then frame 1's (same channel) after p*p entries.
    mean, std = settings.image_mean[0], settings.image_std[0]
    expect0 = (frames[0, 0, 0, 0] / 255 - mean) / std
    expect1 = (frames[1, 0, 0, 0] / 255 - mean) / std
    assert pixels[0, 0].item() == pytest.approx(expect0, abs=1e-5)
    assert pixels[0, 14 * 14].item() == pytest.approx(expect1, abs=1e-5)
    # Row 1 is the patch right of it inside the same 2x2 merge window (columns 14..27 of row 0).
    assert pixels[1, 0].item() == pytest.approx((frames[0, 0, 14, 0] / 255 - mean) / std, abs=1e-5)
    # Odd frame counts repeat the last frame.
    _, grid3 = patchify(frames[:3], settings)
    assert grid3.tolist() == [2, 4, 4]


def test_chat_rendering_markers_and_labels(proc):
    messages = [
        {"role": "user", "content": [{"type": "video", "video": _frames(4)}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "B"},
    ]
    text = proc.render(messages)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|vision_end|>Colour?<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n")
    out = proc(messages)
    ids, labels = out["input_ids"][0], out["labels"][0]
    trained = ids[labels != IGNORE_INDEX].tolist()
    assert trained == proc.tokenizer("B", add_special_tokens=False)["input_ids"] + [IM_END]
    assert (ids == VISION_START).sum() == 1 and (ids == VISION_END).sum() == 1
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert proc.visual_tokens(out) == 8


def test_generation_prompt_and_images(proc):
    messages = [{"role": "user", "content": [{"type": "image", "image": _frames(1)[0]}, {"type": "text", "text": "?"}]}]
    out = proc(messages, add_generation_prompt=True)
    assert proc.render(messages, add_generation_prompt=True).endswith("<|im_start|>assistant\n")
    assert (out["labels"] == IGNORE_INDEX).all()
    ids = out["input_ids"][0].tolist()
    i = ids.index(VISION_START)
    # the release's layout: an image is marked like a video, with no <|image_pad|> between the two tokens
    assert ids[i : i + 2] == [VISION_START, VISION_END] and IMAGE_PAD not in ids
    assert out["mm_token_type_ids"][0].tolist() == [1 if j == i else 0 for j in range(len(ids))]
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]] and "pixel_values_videos" not in out


def test_mixed_images_and_videos_are_typed_in_text_order(proc):
    content = [{"type": "video", "video": _frames(4)}, {"type": "image", "image": _frames(1)[0]},
               {"type": "text", "text": "?"}]
    out = proc([{"role": "user", "content": content}], add_generation_prompt=True)
    ids, types = out["input_ids"][0], out["mm_token_type_ids"][0]
    assert types[ids == VISION_START].tolist() == [2, 1]
    assert int((types != 0).sum()) == 2 and IMAGE_PAD not in ids.tolist()


def test_processor_feeds_the_model(proc):
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.modeling.tiny import tiny_qwen2vl_config

    torch.manual_seed(0)
    qwen = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14}))
    model = from_qwen2vl(qwen, mixer_config={"d_state": 8, "headdim": 16, "chunk_size": 8})
    out = proc([{"role": "user", "content": [{"type": "video", "video": _frames(6)}, {"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "A"}])
    loss = model(**out).loss
    assert torch.isfinite(loss) and loss > 0


def test_save_and_reload(proc, tmp_path):
    proc.save_pretrained(tmp_path)
    again = VambaProcessor.from_pretrained(tmp_path)
    assert again.vision == proc.vision
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    assert torch.equal(again(msgs)["input_ids"], proc(msgs)["input_ids"])


def test_bad_messages(proc):
    with pytest.raises(ValueError, match="role"):
        proc([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="max_length"):
        proc([{"role": "user", "content": "x" * 50}], max_length=10)
    with pytest.raises(ValueError, match="4-D"):
        patchify(np.zeros((56, 56, 3)), proc.vision)


def test_qwen2vl_layout_puts_visual_tokens_inline_for_the_baseline():
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.modeling.tiny import VIDEO_PAD, tiny_qwen2vl_config

    proc = VambaProcessor.tiny(patch_size=14, layout="qwen2_vl")
    out = proc([{"role": "user", "content": [{"type": "video", "video": _frames(4)}, {"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "A"}])
    assert (out["input_ids"] == VIDEO_PAD).sum() == 8 == (out["mm_token_type_ids"] == 2).sum()
    torch.manual_seed(0)
    loss = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14}))(**out).loss
    assert torch.isfinite(loss)


# Tiny tokenizer with merges -------------------------------------------------------------------------------------
def test_learn_merges_takes_the_most_frequent_pair_and_stops_below_two():
    from tokenizers.pre_tokenizers import WhitespaceSplit

    from vamba.data.processor import learn_merges

    words = WhitespaceSplit()
    # ab x3, abc x1: (a, b) occurs 4 times, (b, c) once; after merging, (ab, c) occurs once -> stop.
    assert learn_merges(["ab ab ab", "abc"], words, 10) == [("a", "b")]
    # Ties go to the smallest pair; the cap is respected.
    assert learn_merges(["xy xy ab ab"], words, 1) == [("a", "b")]
    assert learn_merges(["xy xy ab ab"], words, 5) == [("a", "b"), ("x", "y")]


def test_tiny_tokenizer_with_merges_is_deterministic_lossless_and_shortens_prompts(tmp_path):
    from vamba.data.processor import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer
    from vamba.evals.benchmark import Question
    from vamba.evals.benchmarks.synthetic import BENCHMARK

    plain, merged, again = build_tiny_tokenizer(), build_tiny_tokenizer(256), build_tiny_tokenizer(256)
    assert merged.get_vocab() == again.get_vocab() and 264 < len(merged) <= 264 + 256
    assert merged.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)) == list(range(256, 264))
    q = Question(qid="1", video="v.mp4", question="What color was the triangle that appeared in the video?",
                 options=["red", "green", "blue", "yellow"], answer="A", categories={})
    prompt = BENCHMARK.prompt(q)
    short, long = merged(prompt)["input_ids"], plain(prompt)["input_ids"]
    assert len(long) > 3 * len(short)
    for text in (prompt, "Ünïcödé, emoji 🙂 and words never seen: zyzzyva\n\t"):
        assert merged.decode(merged(text)["input_ids"]) == text
    # Saved with a checkpoint and reloaded (what training and evaluation do): the same ids.
    proc = VambaProcessor.tiny(merges=256)
    proc.save_pretrained(tmp_path)
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": "A"}]
    assert torch.equal(VambaProcessor.from_pretrained(tmp_path)(msgs)["input_ids"], proc(msgs)["input_ids"])
