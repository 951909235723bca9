"""lmms-eval model plugin, registered without forking lmms-eval (STYLE.md section 8).

lmms-eval (>= 0.6) loads the entry point group `lmms_eval.models`; ours (pyproject.toml) resolves to `manifests()`,
which returns a `ModelManifest` naming `Vamba` below as the "simple" model (video paths, or PIL images, from
`doc_to_visual`; this model does its own frame sampling, as lmms-eval's Video-MME/MLVU/LongVideoBench tasks expect).
Then (README, "Evaluate"):

    pip install 'vamba[lmms]'
    lmms-eval --model vamba --model_args pretrained=/ckpt/vamba,max_num_frames=128 --tasks videomme,mlvu_dev

Under torchrun or `accelerate launch` lmms-eval shards documents by `RANK`/`WORLD_SIZE`; each process loads the model
onto `cuda:{LOCAL_RANK}` (or the CPU), as lmms-eval's own models do. `scripts/test_lmms.sh` runs the real thing.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..data.frames import FrameSpec
from .inference import answer, encode

try:  # optional extra
    from lmms_eval.api.model import lmms as _LmmsBase
except ImportError:  # pragma: no cover - exercised when the extra is absent
    _LmmsBase = object


def manifests():
    """Entry point `lmms_eval.models`: the manifest lmms-eval registers (with overwrite) at import."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="vamba", simple_class_path="vamba.evals.lmms_eval_adapter.Vamba")


class Vamba(_LmmsBase):
    """`--model vamba --model_args pretrained=<dir>[,name=value...]`; unknown names are refused.

    - `max_num_frames`: frames per video (default 64, or the protocol's); `max_pixels`: the per-frame (and per-image)
      area cap of Qwen2-VL's resize rule (default: the processor's);
    - `protocol=official|release`: read each video as `vamba eval protocol=...` does for the benchmark the task's
      name starts with (`videomme`, `mlvu_dev`, `lvbench`, ...): its frame count, sampler and pre-resize;
    - `dtype` (auto, bfloat16, float16, float32), `attn_implementation` (sdpa, eager, flash_attention_2),
      `model_type` (vamba, qwen2_vl), `video_token_keep`, `device` (default cuda if present, else cpu).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        max_num_frames: int | None = None,
        max_pixels: int | None = None,
        protocol: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        model_type: str = "vamba",
        video_token_keep: float = 1.0,
        device: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        **unknown: Any,
    ):
        if unknown:
            known = [p for p in inspect.signature(Vamba.__init__).parameters if p not in ("self", "unknown")]
            raise TypeError(f"vamba: unknown model_args {', '.join(sorted(unknown))}; known: {', '.join(known)}")
        if _LmmsBase is not object:
            super().__init__()
        from .inference import EvalModelConfig, load_model
        from .protocol import check_protocol

        if int(batch_size) != 1:
            raise ValueError("vamba's lmms-eval adapter answers one request at a time (batch_size=1)")
        if dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"vamba: dtype={dtype!r}; expected auto, bfloat16, float16 or float32")
        self.protocol = check_protocol(protocol) if protocol else None
        self._device = self.bind_device(device)
        self._rank, self._world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.model, self.processor = load_model(EvalModelConfig(path=pretrained, type=model_type, dtype=dtype,
                                                                attn_implementation=attn_implementation), self.device)
        if max_pixels:
            self.processor.vision = replace(self.processor.vision, max_pixels=int(max_pixels))
        self.max_num_frames = int(max_num_frames) if max_num_frames else None
        self.video_token_keep = float(video_token_keep)
        if not hasattr(self, "task_dict"):
            self.task_dict: dict = {}

    @staticmethod
    def bind_device(device: str | None = None) -> torch.device:
        """`device` (default cuda if present, else cpu); under several processes (torchrun, accelerate launch) a
        GPU becomes this process's own, `cuda:{LOCAL_RANK}`, as lmms-eval's own models bind it."""
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dev.type == "cuda" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return dev

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def frame_spec(self, task: str, path: str) -> FrameSpec:
        """How a video of `task` is read: `max_num_frames` over the protocol's frames (or 64 segment middles)."""
        spec = FrameSpec(count=64)
        if self.protocol:
            from .benchmark import Question
            from .benchmarks import get_benchmark

            try:
                bench = get_benchmark(task.split("_")[0])
            except ValueError as e:
                raise ValueError(f"task {task!r}: protocol={self.protocol} needs a task named after a benchmark "
                                 f"({e})") from None
            spec = bench.frame_spec(Question(path, path, "", [], None, {}), bench.protocol_settings(self.protocol))
        v = self.processor.vision
        return replace(spec, count=self.max_num_frames or spec.count).fill(min_pixels=v.min_pixels,
                                                                            max_pixels=v.max_pixels)

    def _content(self, visual: Any, task: str) -> dict[str, Any]:
        """One chat content item: a video path (or lmms-eval's `{"url": path}`), else a PIL image."""
        from ..data.video import load_video

        if isinstance(visual, (str, os.PathLike)) or (isinstance(visual, dict) and "url" in visual):
            path = str(visual["url"] if isinstance(visual, dict) else visual)
            return {"type": "video", "video": load_video(path, self.frame_spec(task, path)).frames}
        if hasattr(visual, "convert") and hasattr(visual, "size"):  # PIL.Image.Image
            return {"type": "image", "image": np.asarray(visual.convert("RGB"))}
        kind = f"dict with keys {sorted(visual)}" if isinstance(visual, dict) else type(visual).__name__
        raise ValueError(f"vamba's lmms-eval adapter: task {task!r} passes a {kind} visual; it reads videos (a path) "
                         "and images (PIL) only")

    def generate_until(self, requests) -> list[str]:
        """Each request's `args` = (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
        outputs = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
            visuals = visuals if isinstance(visuals, list) else [visuals]
            content = [self._content(v, task) for v in visuals if v is not None]
            content.append({"type": "text", "text": context})
            gen = {
                "max_new_tokens": int(gen_kwargs.get("max_new_tokens", 32)),
                "do_sample": bool(gen_kwargs.get("do_sample", False) or (gen_kwargs.get("temperature") or 0) > 0),
            }
            if gen["do_sample"]:
                gen["temperature"] = float(gen_kwargs.get("temperature") or 1.0)
                gen["top_p"] = float(gen_kwargs.get("top_p") or 1.0)
            # One video alone: encoded once (Vamba) as every front end does; otherwise the messages are processed whole.
            videos = [c["video"] for c in content if c["type"] == "video"]
            encoded = encode(self.model, self.processor, videos[0], video_token_keep=self.video_token_keep) \
                if len(videos) == len(content) - 1 == 1 else None
            _, text = answer(self.model, self.processor, [{"role": "user", "content": content}], encoded, gen,
                             video_token_keep=self.video_token_keep)
            until = gen_kwargs.get("until") or []
            for stop in [until] if isinstance(until, str) else until:
                if stop and stop in text:
                    text = text.split(stop)[0]
            outputs.append(text)
        return outputs

    def loglikelihood(self, requests):
        raise NotImplementedError("vamba's lmms-eval adapter supports generation tasks only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("vamba's lmms-eval adapter supports single-round generation only")
