"""lmms-eval model plugin, registered without forking lmms-eval (STYLE.md section 8).

lmms-eval (>= 0.6) loads the entry point group `lmms_eval.models`; ours (pyproject.toml) resolves to `manifests()`,
which returns a `ModelManifest` naming `Vamba` below as the "simple" model (video paths from `doc_to_visual`; this
model does its own frame sampling, like lmms-eval's Video-MME/MLVU/LongVideoBench tasks expect). Then:

    pip install 'vamba[lmms]'
    lmms_eval --model vamba --model_args pretrained=/ckpt/vamba,max_num_frames=128 --tasks videomme,mlvu_dev

Without lmms-eval installed the class still imports (its base is `object`), so its request handling is tested
here with fake `Instance`s; the registration itself is tested only where lmms-eval is installed.
"""

from __future__ import annotations

from typing import Any

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
    """`--model vamba --model_args pretrained=<dir>[,max_num_frames=64,model_type=vamba,video_token_keep=1.0]`."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        max_num_frames: int = 64,
        model_type: str = "vamba",
        video_token_keep: float = 1.0,
        device: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        **kwargs: Any,
    ):
        if _LmmsBase is not object:
            super().__init__()
        from .inference import EvalModelConfig, load_model

        if int(batch_size) != 1:
            raise ValueError("vamba's lmms-eval adapter answers one request at a time (batch_size=1)")
        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.processor = load_model(EvalModelConfig(path=pretrained, type=model_type), dev)
        self.frames = FrameSpec(count=int(max_num_frames))
        self.video_token_keep = float(video_token_keep)
        self.device_ = dev
        if not hasattr(self, "task_dict"):
            self.task_dict: dict = {}

    def _frames(self, visual: Any):
        from ..data.video import load_video

        v = self.processor.vision
        path = visual.get("url") if isinstance(visual, dict) else visual
        return load_video(path, self.frames.fill(min_pixels=v.min_pixels, max_pixels=v.max_pixels)).frames

    def generate_until(self, requests) -> list[str]:
        """Each request's `args` = (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
        outputs = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
            content: list[dict[str, Any]] = [{"type": "video", "video": self._frames(v)} for v in visuals]
            content.append({"type": "text", "text": context})
            gen = {
                "max_new_tokens": int(gen_kwargs.get("max_new_tokens", 32)),
                "do_sample": bool(gen_kwargs.get("do_sample", False) or gen_kwargs.get("temperature", 0) > 0),
            }
            if gen["do_sample"]:
                gen["temperature"] = float(gen_kwargs.get("temperature", 1.0))
                gen["top_p"] = float(gen_kwargs.get("top_p") or 1.0)
            # One video: encoded once (Vamba) as every front end does; otherwise the messages are processed whole.
            videos = [c["video"] for c in content if c["type"] == "video"]
            encoded = encode(self.model, self.processor, videos[0], video_token_keep=self.video_token_keep) \
                if len(videos) == 1 else None
            _, text = answer(self.model, self.processor, [{"role": "user", "content": content}], encoded, gen,
                             video_token_keep=self.video_token_keep)
            for stop in gen_kwargs.get("until") or []:
                if stop and stop in text:
                    text = text.split(stop)[0]
            outputs.append(text)
        return outputs

    def loglikelihood(self, requests):
        raise NotImplementedError("vamba's lmms-eval adapter supports generation tasks only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("vamba's lmms-eval adapter supports single-round generation only")
