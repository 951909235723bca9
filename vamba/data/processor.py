"""Turn chat messages with images and videos into Vamba model inputs (DESIGN.md section 2, "Two streams").

Text: Qwen's ChatML, with each visual item reduced to the marker `<|vision_start|><|vision_end|>`, images and
videos alike, exactly as the original release writes its prompts (Vamba keeps the visual tokens in a stream of their
own). `mm_token_type_ids` says which kind each marker is (1 image, 2 video at its `<|vision_start|>`), so batches
that mix images and videos stay unambiguous. Labels train only on assistant turns (their text and closing
`<|im_end|>`); everything else is -100.

Pixels: exactly Qwen2-VL's layout (`pixel_values_videos` (patches, C*tp*p*p) with `video_grid_thw`, same for
images), so the stock vision tower reads them. transformers' Qwen2-VL *video* processor needs torchvision, which
has no build for the CPU torch this project tests with, so `patchify` does the same arithmetic in torch; it is
checked against transformers' PIL image processor in the tests (an image is a video of `tp` equal frames).

A checkpoint directory's own tokenizer and preprocessor settings are used with `from_pretrained`; `tiny()` builds
an offline byte-level Qwen2 tokenizer in code for tests and the CPU quickstart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.models import BPE
from tokenizers.pre_tokenizers import ByteLevel, PreTokenizer
from tokenizers.trainers import BpeTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2Tokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from .prompts import CAPTION_PROMPT

IGNORE_INDEX = -100
DEFAULT_SYSTEM = "You are a helpful assistant."
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# The release marks an image like a video: no <|image_pad|> between the two tokens (its models never saw one there).
VISION_MARKER = "<|vision_start|><|vision_end|>"
MM_TYPES = {"image": 1, "video": 2}


@dataclass
class VisionSettings:
    """Pixel layout of the vision tower; defaults are Qwen2-VL-7B's (patch 14, temporal 2, merge 2)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_STD))
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280

    @property
    def factor(self) -> int:
        """Frame sides must be multiples of this (one merged token covers factor x factor pixels)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dir(cls, path: str | Path) -> VisionSettings:
        """Read `preprocessor_config.json` (Qwen2-VL image processor format) if present, else defaults."""
        data: dict[str, Any] = {}
        for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
            f = Path(path) / name
            if f.is_file():
                data = {**json.loads(f.read_text()), **data}
        size = data.get("size") or {}
        out = cls()
        for key in ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std"):
            if key in data:
                setattr(out, key, data[key])
        out.min_pixels = int(data.get("min_pixels", size.get("shortest_edge", out.min_pixels)))
        out.max_pixels = int(data.get("max_pixels", size.get("longest_edge", out.max_pixels)))
        return out

    def to_preprocessor_config(self) -> dict[str, Any]:
        """The `preprocessor_config.json` content transformers' Qwen2-VL image processor reads."""
        return {
            "image_processor_type": "Qwen2VLImageProcessor",
            **asdict(self),
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "do_resize": True,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "do_convert_rgb": True,
        }


def _as_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) or (T, 3, H, W), uint8 or float in [0, 255] -> float32 (T, 3, H, W)."""
    # Decoders may hand out read-only arrays; copy only then (torch warns on non-writable memory).
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.require(frames, requirements="W"))
    if x.ndim != 4:
        raise ValueError(f"frames must be 4-D (T, H, W, 3) or (T, 3, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"frames must have 3 colour channels, got shape {tuple(x.shape)}")
    return x.float()


def patchify(frames: np.ndarray | torch.Tensor, settings: VisionSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize, normalise and cut frames into Qwen2-VL patches.

    Args:
        frames: (T, H, W, 3) or (T, 3, H, W) in [0, 255]. T is padded to a multiple of the temporal patch by
            repeating the last frame (what Qwen2-VL does); sides are resized to multiples of `settings.factor`
            within [min_pixels, max_pixels] (no-op when they already are).

    Returns:
        pixels (grid_t * grid_h * grid_w, 3 * tp * p * p) float32, grid_thw (3,) long.
    """
    s = settings
    x = _as_tchw(frames)
    t, _, h, w = x.shape
    rh, rw = smart_resize(h, w, factor=s.factor, min_pixels=s.min_pixels, max_pixels=s.max_pixels)
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
    if t % s.temporal_patch_size:
        x = torch.cat([x, x[-1:].expand(s.temporal_patch_size - t % s.temporal_patch_size, -1, -1, -1)])
    mean = torch.tensor(s.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(s.image_std).view(1, 3, 1, 1)
    x = (x / 255.0 - mean) / std
    p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
    gt, gh, gw = x.shape[0] // tp, rh // p, rw // p
    x = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p)
    # Order: time, merged row, merged col, row and col in the merge window | channel, time, pixel row, pixel col
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, 3 * tp * p * p), torch.tensor([gt, gh, gw])


def learn_merges(texts: Sequence[str], pre_tokenizer: PreTokenizer, max_merges: int) -> list[tuple[str, str]]:
    """Byte-pair merges learned from ``texts`` by the `tokenizers` library's BPE trainer, most frequent pair first.

    ``pre_tokenizer`` splits texts into the words the tokenizer will use (merges never cross them). Stops after
    ``max_merges`` or when no pair occurs twice. Deterministic: ties go to the pair of smaller ids (byte-level
    alphabet in code-point order, then merges in the order learned), independent of the trainer's threads.
    """
    model = Tokenizer(BPE())
    model.pre_tokenizer = pre_tokenizer
    alphabet = ByteLevel.alphabet()
    trainer = BpeTrainer(vocab_size=len(alphabet) + max_merges, min_frequency=2, initial_alphabet=alphabet,
                         show_progress=False)
    model.train_from_iterator(texts, trainer)
    return [tuple(pair) for pair in json.loads(model.to_str())["model"]["merges"]]


def build_tiny_tokenizer(merges: int = 0) -> Qwen2Tokenizer:
    """A real byte-level Qwen2 tokenizer with Qwen's special tokens, built offline.

    Ids: bytes 0-255, then `QWEN_SPECIAL_TOKENS` at 256-263 (the ids `vamba.modeling.tiny` uses), then up to
    ``merges`` BPE merges learned from the project's own prompts (`vamba.data.needles.prompt_corpus`, the chat
    roles, the caption prompt). Merges shrink the LVBench prompt from ~280 byte tokens to ~80, which makes tiny-model
    steps ~2.5x faster and their learning steadier (measurements in docs/synthetic_data.md).
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_vocab = {char: byte for byte, char in bytes_to_unicode().items()}
    learned: list[tuple[str, str]] = []
    if merges > 0:
        from .needles import prompt_corpus

        pre = Qwen2Tokenizer(vocab=byte_vocab, merges=[]).backend_tokenizer.pre_tokenizer
        chat = [DEFAULT_SYSTEM, CAPTION_PROMPT, "system\n", "user\n", "assistant\n"]
        texts = [*chat, *chat, *prompt_corpus()]  # twice: a merge needs a pair seen at least twice
        learned = learn_merges(texts, pre, merges)
    vocab = {**byte_vocab, **{t: 256 + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)}}
    for a, b in learned:
        vocab.setdefault(a + b, len(vocab))
    tok = Qwen2Tokenizer(vocab=vocab, merges=learned)
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    tok.eos_token = "<|im_end|>"
    ids = tok.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    if ids != list(range(256, 256 + len(QWEN_SPECIAL_TOKENS))):
        raise RuntimeError(f"tiny tokenizer special ids moved: {ids}")
    return tok


Message = dict[str, Any]


class VambaProcessor:
    """Chat messages + images/videos -> `input_ids`, `labels`, `attention_mask` and Qwen2-VL pixel tensors.

    Messages follow the transformers chat format: `{"role": "system"|"user"|"assistant", "content": str | list}`
    where list items are `{"type": "text", "text": ...}`, `{"type": "video", "video": frames}` or
    `{"type": "image", "image": frame}`; frames are arrays as `vamba.data.load_video` returns them.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vision: VisionSettings | None = None,
                 system_prompt: str | None = DEFAULT_SYSTEM, layout: str = "vamba"):
        if layout not in ("vamba", "qwen2_vl"):
            raise ValueError(f"layout must be 'vamba' or 'qwen2_vl', got {layout!r}")
        self.tokenizer = tokenizer
        self.vision = vision or VisionSettings()
        self.system_prompt = system_prompt
        # "qwen2_vl" puts the visual tokens inline as <|video_pad|>/<|image_pad|> runs (for the baseline model).
        self.layout = layout
        self.pad_ids = {k: tokenizer.convert_tokens_to_ids(f"<|{k}_pad|>") for k in ("image", "video")}
        unknown = (None, tokenizer.unk_token_id)
        missing = [t for t in QWEN_SPECIAL_TOKENS[1:5] if tokenizer.convert_tokens_to_ids(t) in unknown]
        if missing:
            raise ValueError(f"tokenizer lacks Qwen special tokens {missing}")
        self.im_end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")

    @classmethod
    def tiny(cls, patch_size: int = 14, layout: str = "vamba", merges: int = 0, **vision: Any) -> VambaProcessor:
        """Offline processor for tests and the CPU quickstart (byte-level tokenizer, optionally with ``merges`` BPE
        merges learned from the project's prompts; small frames)."""
        side = 2 * patch_size
        settings = VisionSettings(patch_size=patch_size, min_pixels=side**2, max_pixels=(4 * side) ** 2)
        for key, value in vision.items():
            setattr(settings, key, value)
        return cls(build_tiny_tokenizer(merges), settings, layout=layout)

    @classmethod
    def from_pretrained(cls, path: str | Path, layout: str = "vamba") -> VambaProcessor:
        """Load the tokenizer and pixel settings saved in a checkpoint directory (local files only)."""
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(tokenizer, VisionSettings.from_dir(path), layout=layout)

    def save_pretrained(self, path: str | Path) -> None:
        """Write tokenizer files and a Qwen2-VL-style `preprocessor_config.json`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        (path / "preprocessor_config.json").write_text(json.dumps(self.vision.to_preprocessor_config(), indent=2))

    # -- text ---------------------------------------------------------------------------------------------------
    def _pieces(self, messages: Sequence[Message], add_generation_prompt: bool):
        """Yield (text, trainable, visual) pieces of the ChatML rendering, in order."""
        if self.system_prompt is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        for msg in messages:
            role = msg.get("role")
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"message role must be system/user/assistant, got {role!r}")
            trainable = role == "assistant"
            yield f"<|im_start|>{role}\n", False, None
            content = msg.get("content", "")
            items = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for item in items:
                kind = item.get("type")
                if kind == "text":
                    yield item["text"], trainable, None
                elif kind in ("video", "image"):
                    yield VISION_MARKER, False, (kind, item[kind])
                else:
                    raise ValueError(f"content item type must be text/image/video, got {kind!r}")
            yield "<|im_end|>", trainable, None
            yield "\n", False, None
        if add_generation_prompt:
            yield "<|im_start|>assistant\n", False, None

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        """The ChatML text the model sees (visual items as markers)."""
        return "".join(text for text, _, _ in self._pieces(messages, add_generation_prompt))

    def __call__(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Process one conversation.

        Returns:
            input_ids, attention_mask, labels, mm_token_type_ids: (1, N) long; plus `pixel_values_videos`
            (patches, C*tp*p*p) and `video_grid_thw` (videos, 3) when there are videos, `pixel_values` /
            `image_grid_thw` for images. `mm_token_type_ids` is 1/2 at each marker's `<|vision_start|>` (Vamba
            layout) or on every inline visual token (Qwen2-VL layout), 0 elsewhere.

        Raises:
            ValueError: a conversation with no assistant text to train on (when `add_generation_prompt` is False
                and labels would be all -100), or text longer than `max_length` tokens.
        """
        ids: list[int] = []
        labels: list[int] = []
        types: list[int] = []
        visuals: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"image": [], "video": []}
        merge = self.vision.merge_size**2
        for text, trainable, visual in self._pieces(messages, add_generation_prompt):
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if visual is not None:
                kind, frames = visual
                frames = frames if kind == "video" else np.asarray(frames)[None]
                pixels, grid = patchify(frames, self.vision)
                visuals[kind].append((pixels, grid))
                if self.layout == "qwen2_vl":  # <|vision_start|> + one pad token per visual token + <|vision_end|>
                    n = int(grid.prod()) // merge
                    piece = [piece[0]] + [self.pad_ids[kind]] * n + [piece[-1]]
                    types += [0] + [MM_TYPES[kind]] * n + [0]
                else:
                    types += [MM_TYPES[kind]] + [0] * (len(piece) - 1)
            else:
                types += [0] * len(piece)
            ids += piece
            labels += piece if trainable else [IGNORE_INDEX] * len(piece)
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"conversation is {len(ids)} tokens, over max_length={max_length}")
        out = {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "labels": torch.tensor([labels]),
            "mm_token_type_ids": torch.tensor([types]),
        }
        for kind, pixels_key, grid_key in (("video", "pixel_values_videos", "video_grid_thw"),
                                           ("image", "pixel_values", "image_grid_thw")):
            if visuals[kind]:
                out[pixels_key] = torch.cat([p for p, _ in visuals[kind]])
                out[grid_key] = torch.stack([g for _, g in visuals[kind]])
        return out

    def visual_tokens(self, sample: dict[str, torch.Tensor]) -> int:
        """Number of visual-stream tokens a processed sample contributes (for packing budgets)."""
        merge = self.vision.merge_size**2
        return sum(int(sample[k].prod(-1).sum()) // merge for k in ("video_grid_thw", "image_grid_thw") if k in sample)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
