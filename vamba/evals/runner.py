"""The one multiple-choice video-QA runner behind `vamba eval` (DESIGN.md section 4).

For each video: decode its frames once, encode it once (Vamba: vision tower, mixers and every layer's video
keys/values, kept in a cache that each question forks), then answer all of its questions from that encoding;
results are appended per question to JSONL as they are produced (see `results.py`), so re-running skips what is
done and a killed run loses at most the question in flight. Under torchrun, videos are sharded across ranks and
rank 0 merges every rank's file into one report. A missing or unreadable video is recorded per question as an
error (wrong in the accuracy, listed in the report) and never stops the run.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..data.processor import VambaProcessor, patchify
from .report import write_report
from .results import ResultsWriter, read_results

logger = logging.getLogger(__name__)


@dataclass
class EvalModelConfig:
    path: str = "???"
    type: str = "vamba"  # vamba | qwen2_vl (the stock transformers model, video inline)
    processor: str | None = None  # processor directory (default: path); "tiny" for the offline tiny processor
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    attn_implementation: str = "sdpa"


@dataclass
class EvalConfig:
    """Every `vamba eval` option (Hydra overrides: `vamba eval benchmark=lvbench model.path=... frames=128`)."""

    benchmark: str = "???"
    data_dir: str = "???"
    annotation: str | None = None  # default: the benchmark's own file under data_dir
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    frames: str = "64"  # a number, or "auto" (as many as fit token_budget)
    token_budget: int | None = None  # visual tokens per video for frames=auto
    fps: float | None = None  # sample at this fps instead (frames = cap)
    min_pixels: int | None = None
    max_pixels: int | None = None
    scoring: str = "official"  # official | release
    subtitles: bool = False
    max_new_tokens: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    video_token_keep: float = 1.0  # <1 drops video tokens uniformly (Vamba-TR: 0.5)
    stream_chunk: int | None = None  # stream the video through the model this many frames at a time
    stream_above_frames: int | None = 256  # default: stream (64-frame chunks) videos longer than this
    encode_once: bool = True  # false: decode and encode the video again for every question (the release's way)
    max_videos: int | None = None
    max_questions: int | None = None
    output_dir: str = "outputs/eval/${benchmark}"
    seed: int = 0
    device: str = "auto"


# -- model ----------
def load_model(cfg: EvalModelConfig, device: torch.device):
    """(model, processor) for `vamba` or stock `qwen2_vl`, in eval mode on `device`."""
    from transformers import Qwen2VLForConditionalGeneration

    from ..modeling import VambaForConditionalGeneration

    if cfg.type not in ("vamba", "qwen2_vl"):
        raise ValueError(f"model.type must be 'vamba' or 'qwen2_vl', got {cfg.type!r}")
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    if not (Path(cfg.path) / "config.json").is_file():
        raise FileNotFoundError(f"model.path={cfg.path}: no config.json there (a local checkpoint directory is needed)")
    cls = VambaForConditionalGeneration if cfg.type == "vamba" else Qwen2VLForConditionalGeneration
    model = cls.from_pretrained(cfg.path, dtype=dtype, attn_implementation=cfg.attn_implementation).to(device).eval()
    layout = "vamba" if cfg.type == "vamba" else "qwen2_vl"
    source = cfg.processor or cfg.path
    if source == "tiny":
        processor = VambaProcessor.tiny(patch_size=model.config.vision_config.patch_size, layout=layout)
    else:
        processor = VambaProcessor.from_pretrained(source, layout=layout)
    return model, processor


# -- one video ----------
class VideoAnswerer:
    """Answers questions about one video; encodes it once (Vamba) and reuses the encoding."""

    def __init__(self, model, processor: VambaProcessor, cfg: EvalConfig, benchmark):
        self.model, self.processor, self.cfg, self.bench = model, processor, cfg, benchmark
        self.device = next(model.parameters()).device
        self.is_vamba = cfg.model.type == "vamba"

    def load_frames(self, path: Path, start: float | None = None, end: float | None = None,
                    folder_fps: float | None = None):
        """Frames as the eval config samples them, from the window [start, end] seconds when a question has one;
        `folder_fps` for a folder of frame images (MVBench's Episodic Reasoning)."""
        from ..data.video import load_video

        cfg, vision = self.cfg, self.processor.vision
        auto = str(cfg.frames) == "auto"
        return load_video(
            path,
            num_frames=None if auto or cfg.fps else int(cfg.frames),
            fps=cfg.fps,
            sample="auto" if auto else ("fps" if cfg.fps else "uniform"),
            max_frames=None if auto or not cfg.fps else int(cfg.frames),
            token_budget=cfg.token_budget,
            min_pixels=cfg.min_pixels or vision.min_pixels,
            max_pixels=cfg.max_pixels or vision.max_pixels,
            start=start,
            end=end,
            folder_fps=folder_fps,
        ).frames

    def encode(self, frames) -> dict[str, Any]:
        pixels, grid = patchify(frames, self.processor.vision)
        pixels = pixels.to(self.device, dtype=self.model.dtype)
        enc = {"pixels": pixels, "grid": grid[None].to(self.device), "frames": frames}
        if self.is_vamba:
            keep = self.cfg.video_token_keep if self.cfg.video_token_keep < 1 else None
            enc["cache"] = self.model.encode_video(
                pixel_values_videos=pixels,
                video_grid_thw=enc["grid"],
                video_token_keep=keep,
                chunk_frames=self.cfg.stream_chunk,
                stream_above_frames=self.cfg.stream_above_frames,
            )
        return enc

    def answer(self, q, enc: dict[str, Any], subtitles: str | None = None) -> tuple[str, str]:
        """(prompt text, model response) for one question."""
        cfg, bench = self.cfg, self.bench
        text = bench.prompt(q, cfg.scoring, subtitles=subtitles)
        messages = []
        system = bench.system_prompt(cfg.scoring)
        if system:
            messages.append({"role": "system", "content": system})
        messages.append(
            {"role": "user", "content": [{"type": "video", "video": enc["frames"]}, {"type": "text", "text": text}]}
        )
        if self.is_vamba and "cache" in enc:
            ids = self._text_ids(messages)
            extra = {"past_key_values": enc["cache"].fork()}
        else:
            batch = self.processor(messages, add_generation_prompt=True)
            ids = batch["input_ids"]
            extra = {"pixel_values_videos": enc["pixels"], "video_grid_thw": enc["grid"]}
            if "mm_token_type_ids" in batch:
                extra["mm_token_type_ids"] = batch["mm_token_type_ids"].to(self.device)
            if self.is_vamba and cfg.video_token_keep < 1:
                extra["video_token_keep"] = cfg.video_token_keep
        prefix = bench.response_prefix(cfg.scoring)
        if prefix:
            ids = torch.cat(
                [ids, self.processor.tokenizer(prefix, add_special_tokens=False, return_tensors="pt")["input_ids"]],
                dim=1,
            )
        ids = ids.to(self.device)
        gen = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=cfg.do_sample,
            pad_token_id=self.processor.tokenizer.pad_token_id,
        )
        if cfg.do_sample:
            gen["temperature"] = cfg.temperature
        gen.update(bench.generation_kwargs(cfg.scoring))  # e.g. HourVideo's release sampled at temperature 1
        with torch.no_grad():
            if self.is_vamba and "past_key_values" in extra and not gen.get("do_sample"):
                new_ids = self._greedy(ids, extra["past_key_values"], cfg.max_new_tokens)
            else:
                new_ids = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra, **gen)[
                    0, ids.shape[1] :
                ]
        prompt = self.processor.render(messages, add_generation_prompt=True) + prefix
        return prompt, self.processor.decode(new_ids)

    def _greedy(self, ids: torch.Tensor, cache, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding on a forked video cache without `generate`'s per-call setup, which dominates for short
        multiple-choice answers; gives the same tokens as `generate(do_sample=False)` (tested)."""
        stop = {self.processor.im_end_id, self.processor.tokenizer.eos_token_id}
        out = []
        step_ids = ids
        for _ in range(max_new_tokens):
            logits = self.model(input_ids=step_ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            token = int(logits[0, -1].argmax())
            out.append(token)
            if token in stop:
                break
            step_ids = torch.tensor([[token]], device=ids.device)
        return torch.tensor(out, dtype=torch.long)

    def _text_ids(self, messages) -> torch.Tensor:
        """Prompt ids without processing pixels again (the video is already encoded)."""
        text = self.processor.render(messages, add_generation_prompt=True)
        return self.processor.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


# -- the run ----------
def _resolve(data_dir: Path, video: str) -> Path:
    p = Path(video)
    return p if p.is_absolute() else data_dir / p


def _read_subtitles(data_dir: Path, q) -> str | None:
    if not q.subtitles:
        return None
    path = _resolve(data_dir, q.subtitles)
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def run_eval(cfg: EvalConfig | Any, model=None, processor=None) -> dict[str, Any]:
    """Evaluate; returns the summary dict (rank 0; other ranks return {}). `model`/`processor` may be given."""
    from .benchmarks import get_benchmark

    bench = get_benchmark(cfg.benchmark)
    if cfg.scoring not in ("official", "release"):
        raise ValueError(f"scoring must be 'official' or 'release', got {cfg.scoring!r}")
    rank, world = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if cfg.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    data_dir = Path(cfg.data_dir)
    questions = bench.load(data_dir, Path(cfg.annotation) if cfg.annotation else None)
    by_video: OrderedDict[str, list] = OrderedDict()
    for q in questions:
        by_video.setdefault(q.video, []).append(q)
    videos = sorted(by_video)[: cfg.max_videos] if cfg.max_videos else sorted(by_video)
    if cfg.max_questions:
        kept, n = [], 0
        for v in videos:
            if n >= cfg.max_questions:
                break
            by_video[v] = by_video[v][: cfg.max_questions - n]
            n += len(by_video[v])
            kept.append(v)
        videos = kept
    mine = videos[rank::world]

    out = Path(cfg.output_dir)
    results_path = out / ("results.jsonl" if world == 1 else f"results.rank{rank}.jsonl")
    done = {r["qid"] for p in out.glob("results*.jsonl") for r in read_results(p)} if out.is_dir() else set()
    todo = [(v, [q for q in by_video[v] if q.qid not in done]) for v in mine]
    todo = [(v, qs) for v, qs in todo if qs]
    total = sum(len(qs) for _, qs in todo)
    if total and model is None:
        model, processor = load_model(cfg.model, device)
    answerer = VideoAnswerer(model, processor, cfg, bench) if total else None

    with (
        ResultsWriter(results_path) as writer,
        tqdm(total=total, desc=f"{bench.name} (rank {rank})", unit="q", disable=rank != 0 or total == 0) as bar,
    ):
        for video, qs in todo:
            _answer_video(answerer, data_dir, video, qs, writer, bar)

    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return {}
    records = [r for p in sorted(out.glob("results*.jsonl")) for r in read_results(p)]
    wanted = {q.qid for v in videos for q in by_video[v]}
    records = [r for r in records if r["qid"] in wanted]
    summary = bench.aggregate(records, cfg.scoring, seed=cfg.seed)
    errors = [(r["qid"], r["error"]) for r in records if r.get("error")]
    meta = {
        "model": str(cfg.model.path),
        "model_type": cfg.model.type,
        "frames": str(cfg.frames),
        "scoring": cfg.scoring,
        "video_token_keep": cfg.video_token_keep,
        "encode_once": cfg.encode_once,
        "questions": len(records),
        "chance": 100.0 / len(bench.letters),
        "error_examples": errors[:20],
        "questions_per_s": _throughput(records),
    }
    paths = write_report(summary, meta, out)
    print(paths["md"].read_text())
    print(f"report: {paths['json']}, {paths['md']}, {paths['png']}")
    return {**summary, "meta": meta}


def _answer_video(answerer: VideoAnswerer, data_dir: Path, video: str, qs: list, writer: ResultsWriter, bar) -> None:
    """Answer the questions about one video. With `encode_once`, each clip window (the whole video, or a question's
    start/end bounds, e.g. MVBench) is encoded once and shared by the questions that ask about it."""
    from ..data.video import VideoReadError

    path = _resolve(data_dir, video)
    encodings: dict[tuple, tuple[Any, str | None]] = {}  # clip window -> (encoding, error)

    def encoding(q) -> Any:
        window = (q.start, q.end, q.extra.get("frames_fps"))
        if window not in encodings:
            try:  # ValueError here is a clip window the video cannot give (bounds past its end)
                encodings[window] = (answerer.encode(answerer.load_frames(path, *window)), None)
            except (VideoReadError, FileNotFoundError, ValueError) as e:
                encodings[window] = (None, f"video: {e}")
        enc, error = encodings[window] if answerer.cfg.encode_once else encodings.pop(window)
        if error is not None:
            raise _VideoError(error)
        return enc

    for q in qs:
        t1 = time.perf_counter()
        prompt = response = ""
        letter, q_error = None, None
        try:
            q_enc = encoding(q)
            prompt, response = answerer.answer(
                q, q_enc, _read_subtitles(data_dir, q) if answerer.cfg.subtitles else None
            )
            letter = answerer.bench.extract(response, q, answerer.cfg.scoring)
        except _VideoError as e:
            q_error = str(e)
        seconds = time.perf_counter() - t1  # the first question of a window also pays its encoding
        writer.write(
            {
                "qid": q.qid,
                "video": video,
                "prompt": prompt,
                "response": response,
                "letter": letter,
                "answer": q.answer,
                "correct": letter is not None and letter == q.answer,
                "categories": q.categories,
                "num_options": len(q.options),
                "error": q_error,
                "time_s": round(seconds, 4),
            }
        )
        bar.update(1)


class _VideoError(Exception):
    """A clip that could not be read or encoded (recorded once per question that asks about it)."""


def _throughput(records: list[dict[str, Any]]) -> float | None:
    seconds = sum(r.get("time_s", 0.0) for r in records)
    return round(len(records) / seconds, 3) if seconds > 0 else None
