"""The one runner behind `vamba eval` (DESIGN.md section 4): multiple-choice video QA, and captions scored by an LLM
judge after generation (`vamba.evals.benchmarks.captions`).

For each video: decode its frames once, encode it once (Vamba: vision tower, mixers and every layer's video
keys/values, kept in a cache that each question forks), then answer all of its questions from that encoding;
results are appended per question to JSONL as they are produced (see `results.py`), so re-running skips what is
done and a killed run loses at most the question in flight. Under torchrun, videos are sharded across ranks and
rank 0 merges every rank's file into one report. A missing or unreadable video is recorded per question as an
error (wrong in the accuracy, listed in the report) and never stops the run. A benchmark made of members
(HourEval) reads one data folder per member (`data_dirs.<member>=`), and each question is answered with its
member's settings, prompts and rules.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from tqdm import tqdm

from ..data.annotations import AnnotationError
from ..data.frames import FrameSpec, as_spec
from ..data.processor import VambaProcessor
from ..modeling.errors import UsageError
from ..parallel import ContextParallel, launch
from .inference import Encoded, EvalModelConfig, answer, encode, load_model
from .judge import JudgeConfig
from .protocol import Protocol, Settings, check_protocol, describe, resolve
from .report import selection_lines, write_report
from .results import ResultsWriter, read_results
from .subtitles import SubtitleError

logger = logging.getLogger(__name__)


@dataclass
class MemberPaths:
    """One path per member of a composite benchmark (HourEval): `data_dirs.videomme=/data/Video-MME`. A name that
    is not a member fails when the config is composed."""

    videomme: str | None = None
    mlvu: str | None = None
    longvideobench: str | None = None


@dataclass
class EvalConfig:
    """Every `vamba eval` option (Hydra overrides: `vamba eval benchmark=lvbench protocol=release model.path=...`).

    `protocol` fixes every setting per benchmark (`vamba.evals.protocol.Settings`); an option left at None takes the
    protocol's value, one given on the command line overrides it (the report lists both).
    """

    benchmark: str = "???"
    data_dir: str | None = None  # the benchmark's data folder (required, except for benchmark=houreval)
    annotation: str | None = None  # default: the benchmark's own file under data_dir
    data_dirs: MemberPaths = field(default_factory=MemberPaths)  # benchmark=houreval: one data folder per member
    annotations: MemberPaths = field(default_factory=MemberPaths)  # houreval: a member's full file (duration rule)
    members: list[str] | None = None  # houreval: evaluate only these members (default all; a partial run says so)
    dry_run: bool = False  # load and select the questions, print what would run (houreval: its subsets), stop
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    protocol: Protocol = Protocol.official  # official | release
    scoring: str | None = None  # deprecated name of `protocol` (still accepted, with a warning)
    # frames.count=256, frames.mode=auto frames.token_budget=16000, frames.mode=fps frames.fps=1 (count = the cap),
    # frames.min_pixels/max_pixels (default: the processor's), frames.longest_edge=0 (no pre-resize); unset fields
    # take the protocol's values (`vamba.data.frames.FrameSpec`)
    frames: FrameSpec = field(default_factory=FrameSpec)
    subtitles: bool | None = None  # Video-MME per-frame lines / LongVideoBench interleaved (default off)
    max_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # 0: no top-k filter
    video_token_keep: float = 1.0  # <1 drops video tokens uniformly (Vamba-TR: 0.5)
    stream_chunk: int | None = None  # stream the video through the model this many frames at a time
    stream_above_frames: int | None = 256  # default: stream (64-frame chunks) videos longer than this
    encode_once: bool = True  # false: decode and encode the video again for every question (the release's way)
    max_videos: int | None = None
    max_questions: int | None = None
    output_dir: str = "outputs/eval/${benchmark}"
    seed: int = 0
    device: str = "auto"
    # Under torchrun: ranks per video. The W ranks of a group split each video along time (vamba.parallel) and keep
    # only their slice's keys/values, so a video is not limited by one GPU's memory; W divides the world size.
    context_parallel: int = 1
    # caption benchmarks' LLM judge (dream1k: AutoDQ, captions: G-VEval): `vamba.evals.judge.JudgeConfig`
    judge: JudgeConfig = field(default_factory=JudgeConfig)


# -- one video ----------
class VideoAnswerer:
    """Answers questions about one video under one protocol; encodes it once (Vamba) and reuses the encoding."""

    def __init__(self, model, processor: VambaProcessor, cfg: EvalConfig, benchmark, protocol: str,
                 settings: Settings, context_parallel: ContextParallel | None = None):
        self.model, self.processor, self.cfg, self.bench = model, processor, cfg, benchmark
        self.context_parallel = context_parallel
        self.protocol, self.settings = protocol, settings
        self.frames = as_spec(cfg.frames)

    def load_frames(self, path: Path, q):
        """`VideoFrames` of the question's video as the protocol samples and resizes them; the command line's
        frame fields win, and a `frames.mode` given there replaces the protocol's sampler."""
        from ..data.video import load_video, read_image

        if q.extra.get("image"):  # a still image (caption sets): read whole; the processor sizes it as in training
            return SimpleNamespace(frames=read_image(path), indices=None, fps=None)
        spec = self.bench.frame_spec(q, self.settings)
        if self.frames.mode is not None:
            spec = replace(spec, sampler=None)
        vision = self.processor.vision
        spec = self.frames.over(spec).fill(min_pixels=vision.min_pixels, max_pixels=vision.max_pixels)
        return load_video(path, spec, folder_fps=q.extra.get("frames_fps"))

    def encode(self, video) -> dict[str, Any]:
        """The video ready for questions (`inference.encode`), with the sampled frames' indices and fps."""
        cfg = self.cfg
        if video.frames.ndim == 3:  # an image: Vamba reads it with the text, as in training
            return {"encoded": Encoded(video.frames), "indices": None, "fps": None}
        encoded = encode(self.model, self.processor, video.frames, video_token_keep=cfg.video_token_keep,
                         chunk_frames=cfg.stream_chunk, stream_above_frames=cfg.stream_above_frames,
                         context_parallel=self.context_parallel)
        return {"encoded": encoded, "indices": video.indices, "fps": video.fps}

    def answer(self, q, enc: dict[str, Any], subtitles: str | None = None) -> tuple[str, str]:
        """(prompt text, model response) for one question."""
        bench, protocol = self.bench, self.protocol
        messages = []
        system = bench.system_prompt(protocol)
        if system:
            messages.append({"role": "system", "content": system})
        text = bench.prompt(q, protocol, subtitles=subtitles)
        encoded = enc["encoded"]
        kind = "image" if encoded.frames.ndim == 3 else "video"
        messages.append({"role": "user", "content": [{"type": kind, kind: encoded.frames},
                                                     {"type": "text", "text": text}]})
        return answer(self.model, self.processor, messages, encoded, self.settings.generation_kwargs(),
                      prefix=bench.response_prefix(protocol), video_token_keep=self.cfg.video_token_keep)


# -- the run ----------
def _resolve(data_dir: Path, video: str) -> Path:
    p = Path(video)
    return p if p.is_absolute() else data_dir / p


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _protocol(cfg: EvalConfig | Any) -> str:
    """The protocol's name; the deprecated `scoring=` still works and wins, with a warning."""
    if getattr(cfg, "scoring", None) is not None:
        warnings.warn("`scoring=` is deprecated: use `protocol=` (same values)", DeprecationWarning, stacklevel=3)
        logger.warning("`scoring=%s` is deprecated; using protocol=%s", cfg.scoring, cfg.scoring)
        return check_protocol(cfg.scoring)
    return check_protocol(cfg.protocol)


def _select(questions: list, cfg: EvalConfig | Any) -> tuple[OrderedDict[str, list], list[str]]:
    """Questions grouped by video, and the videos to run (`max_videos` / `max_questions` applied)."""
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
    return by_video, videos


def _check_resume(out: Path, run: dict[str, Any], rank: int) -> None:
    """Results in `out` must come from the same protocol and settings; the first run writes `run.json`."""
    path = out / "run.json"
    if path.is_file():
        before = json.loads(path.read_text())
        diff = sorted(k for k in set(before) | set(run) if before.get(k) != run.get(k))
        if diff:
            raise UsageError(f"{out} holds results of another run ({', '.join(f'{k}: {before.get(k)!r}' for k in diff)}"
                             f"); use another output_dir or remove it")
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=2))


def _member_paths(cfg: EvalConfig | Any, key: str) -> dict[str, str]:
    """The member paths set under `data_dirs` / `annotations` (absent or unset ones left out)."""
    paths = getattr(cfg, key, None)
    if paths is None:
        return {}
    items = paths.items() if hasattr(paths, "items") else vars(paths).items()
    return {str(k): str(v) for k, v in items if v}


def _load(bench, cfg: EvalConfig | Any) -> tuple[list, Path, dict[str, Any] | None]:
    """(questions, the folder relative question paths start from, a composite benchmark's selection or None)."""
    dirs, annotations = _member_paths(cfg, "data_dirs"), _member_paths(cfg, "annotations")
    members = list(getattr(cfg, "members", None) or [])
    if not bench.members:
        if dirs or annotations or members:
            raise UsageError(f"data_dirs / annotations / members are for benchmarks made of members (houreval); "
                             f"benchmark={bench.name} reads data_dir=<folder>")
        if not cfg.data_dir:
            raise UsageError(f"benchmark={bench.name} needs data_dir=<its data folder>")
        data_dir = Path(cfg.data_dir)
        if not data_dir.is_dir():
            raise UsageError(f"data_dir={data_dir}: no such folder (expected {bench.name}'s data folder)")
        return bench.load(data_dir, Path(cfg.annotation) if cfg.annotation else None), data_dir, None
    if cfg.data_dir or cfg.annotation:
        raise UsageError(f"benchmark={bench.name} reads one data folder per member: "
                         + " ".join(f"data_dirs.{m}=<folder>" for m in bench.members) + " (not data_dir/annotation)")
    unknown = [m for m in members if m not in bench.members]
    if unknown:
        raise UsageError(f"members={members}: {', '.join(unknown)} not a member of {bench.name} "
                         f"({', '.join(bench.members)})")
    wanted = members or list(bench.members)
    missing = [m for m in wanted if m not in dirs]
    if missing:
        raise UsageError(f"benchmark={bench.name} needs " + " ".join(f"data_dirs.{m}=<folder>" for m in missing)
                         + " (members=[...] evaluates fewer members; the report then names those left out)")
    unused = sorted((set(dirs) | set(annotations)) - set(wanted))
    if unused:
        raise UsageError(f"data_dirs/annotations given for {', '.join(unused)}, which members={members} leaves out")
    if absent := [f"data_dirs.{m}={dirs[m]}" for m in wanted if not Path(dirs[m]).is_dir()]:
        raise UsageError(f"{', '.join(absent)}: no such folder (expected each member's data folder)")
    questions, selection = bench.load_members({m: Path(dirs[m]) for m in wanted},
                                              {m: Path(a) for m, a in annotations.items()})
    return questions, Path("."), selection


def _dry_run(bench, questions: list, by_video, videos: list[str], data_dir: Path) -> dict[str, Any]:
    """What a run would evaluate: question and video counts, load errors, videos not found; nothing is loaded."""
    wanted = [q for v in videos for q in by_video[v]]
    missing = [v for v in videos if not all(q.error for q in by_video[v]) and not _resolve(data_dir, v).exists()]
    out = {"benchmark": bench.name, "dry_run": True, "questions": len(wanted), "videos": len(videos),
           "load_errors": sum(bool(q.error) for q in wanted), "missing_videos": len(missing)}
    print(f"dry run: {bench.name}: {out['questions']} questions on {out['videos']} videos; {out['load_errors']} "
          f"records failed to load; {len(missing)} videos not found" + (f" (first: {missing[0]})" if missing else ""))
    return out


def _run_record(bench, protocol: str, cfg, resolved: dict[str, tuple], selection) -> dict[str, Any]:
    """What fixes the results of a run (`run.json`: a resume with anything else is refused)."""
    user = as_spec(cfg.frames)
    frames = str(user.mode) if user.mode in ("fps", "auto") else ",".join(
        dict.fromkeys(str(s.frames) for s, _ in resolved.values()))
    run = {"benchmark": bench.name, "protocol": protocol, "model": str(cfg.model.path), "model_type": cfg.model.type}
    if bench.members:
        parts = bench.parts()
        run["member_settings"] = {k: {**describe(s, o), "system_prompt": parts[k].system_prompt(protocol),
                                      "response_prefix": parts[k].response_prefix(protocol)}
                                  for k, (s, o) in resolved.items()}
    else:
        run.update(describe(*resolved[bench.name]))
    run.update(frames=frames, fps=user.fps, video_token_keep=cfg.video_token_keep,
               frame_overrides={k: str(v) if k == "mode" else v for k, v in vars(user).items() if v is not None})
    if selection is not None:
        run["selection"] = selection
    return run


def run_eval(cfg: EvalConfig | Any, model=None, processor=None) -> dict[str, Any]:
    """Evaluate; returns the summary dict (rank 0; other ranks return {}). `model`/`processor` may be given."""
    from .benchmarks import get_benchmark

    bench = get_benchmark(cfg.benchmark)
    protocol = _protocol(cfg)
    parts = bench.parts()
    resolved = {k: resolve(p.protocol_settings(protocol), cfg) for k, p in parts.items()}
    rank, world = _dist()
    questions, data_dir, selection = _load(bench, cfg)
    if selection is not None and rank == 0:
        print("\n".join(selection_lines(selection)))
    by_video, videos = _select(questions, cfg)
    if getattr(cfg, "dry_run", False):
        return _dry_run(bench, questions, by_video, videos, data_dir) if rank == 0 else {}
    scorer = bench.scorer(cfg)  # a judged benchmark's judge must answer before any caption is generated
    if world > 1:
        launch.init()
    if cfg.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    out = Path(cfg.output_dir)
    run = _run_record(bench, protocol, cfg, resolved, selection)
    cp = _context_parallel(cfg, world)
    shard, shards = (rank, world) if cp is None else (cp.dp_rank, cp.dp_size)  # a group shares its videos
    _check_resume(out, run, rank)
    mine = videos[shard::shards]
    results_path = out / ("results.jsonl" if shards == 1 else f"results.rank{shard}.jsonl")
    done = {r["qid"] for p in out.glob("results*.jsonl") for r in read_results(p)} if out.is_dir() else set()
    todo = [(v, [q for q in by_video[v] if q.qid not in done]) for v in mine]
    todo = [(v, qs) for v, qs in todo if qs]
    total = sum(len(qs) for _, qs in todo)
    if total and model is None:
        model, processor = load_model(cfg.model, device)
    answerers = {k: VideoAnswerer(model, processor, cfg, p, protocol, resolved[k][0], cp)
                 for k, p in parts.items()} if total else {}
    if cp is not None and cp.rank != 0:  # the group's other ranks compute with it; its first rank writes
        results_path = out / f".results.cp{rank}.jsonl.tmp"

    with (
        ResultsWriter(results_path) as writer,
        tqdm(total=total, desc=f"{bench.name} (rank {rank})", unit="q", disable=rank != 0 or total == 0) as bar,
    ):
        for video, qs in todo:  # a video's questions belong to one part (a composite's member)
            _answer_video(answerers[bench.part_of(qs[0])], data_dir, video, qs, writer, bar)

    if world > 1:
        torch.distributed.barrier()
    if cp is not None and cp.rank != 0:
        results_path.unlink(missing_ok=True)
    if rank != 0:
        return {}
    return _report(bench, protocol, cfg, run, out, [q for v in videos for q in by_video[v]], questions, model, scorer)


def _report(bench, protocol: str, cfg, run: dict[str, Any], out: Path, wanted: list, questions: list,
            model, scorer=None) -> dict[str, Any]:
    """Aggregate every rank's results (in annotation order, for the seeded random fallback) and write the report."""
    order = {q.qid: i for i, q in enumerate(questions)}
    ids = {q.qid for q in wanted}
    records = [r for p in sorted(out.glob("results*.jsonl")) for r in read_results(p) if r["qid"] in ids]
    records.sort(key=lambda r: order.get(r["qid"], len(order)))
    summary = scorer(records, wanted, out, protocol) if scorer else bench.aggregate(records, protocol, seed=cfg.seed)
    errors = [(r["qid"], r["error"]) for r in records if r.get("error")]
    subtitle_counts: dict[str, int] = {}
    for r in records:
        if r.get("subtitles"):
            subtitle_counts[r["subtitles"]] = subtitle_counts.get(r["subtitles"], 0) + 1
    gc = getattr(model, "generation_config", None) if model is not None else None
    options = [int(r["num_options"]) for r in records if r.get("num_options")]
    meta = {
        **run,
        "scoring": protocol,
        "encode_once": cfg.encode_once,
        "questions": len(records),
        "chance": 100.0 * sum(1 / n for n in options) / len(options) if options else 100.0 / len(bench.letters),
        **({} if bench.members else {"system_prompt": bench.system_prompt(protocol),
                                     "response_prefix": bench.response_prefix(protocol)}),
        "subtitle_files": subtitle_counts,
        "checkpoint_generation_config": {k: getattr(gc, k, None) for k in ("repetition_penalty", "temperature",
                                                                             "top_p", "top_k")} if gc else None,
        "error_examples": errors[:20],
        "questions_per_s": _throughput(records),
    }
    paths = write_report(summary, meta, out)
    print(paths["md"].read_text())
    print("report: " + ", ".join(str(p) for p in paths.values() if p.exists()))
    return {**summary, "meta": meta}


def _context_parallel(cfg: EvalConfig | Any, world: int) -> ContextParallel | None:
    """The run's `ContextParallel` (None for context_parallel = 1), checked before any model is loaded."""
    size = cfg.context_parallel
    if size == 1:
        return None
    if cfg.model.type != "vamba":
        raise UsageError("context_parallel applies to Vamba (model.type=vamba): Qwen2-VL has no video stream to split")
    if world % size:
        raise UsageError(f"context_parallel={size} must divide the world size {world}")
    return ContextParallel(size, allow_replicated=True)


def _frames_key(q) -> tuple:
    """Questions of one video share an encoding when these (the sampler's inputs) agree."""
    return q.start, q.end, q.extra.get("frames_fps"), q.extra.get("duration")


def _answer_one(answerer: VideoAnswerer, data_dir: Path, q, encoding) -> dict[str, Any]:
    """Prompt, response, letter, error and subtitle status of one question (an error never raises)."""
    bench, protocol = answerer.bench, answerer.protocol
    out: dict[str, Any] = {"prompt": "", "response": "", "letter": None, "error": q.error, "subtitles": None}
    if q.error:
        return out
    try:
        enc = encoding(q)
        subtitles = None
        if answerer.settings.subtitles:
            try:
                subtitles = bench.subtitle_text(q, data_dir, enc["indices"], enc["fps"])
                out["subtitles"] = "used" if subtitles else "none"
            except SubtitleError as e:
                logger.warning("%s: %s; answering without subtitles", q.qid, e)
                out["subtitles"] = "unparsable"
        out["prompt"], out["response"] = answerer.answer(q, enc, subtitles)
        out["letter"] = bench.extract(out["response"], q, protocol)
    except (_VideoError, AnnotationError) as e:
        out["error"] = str(e)
    return out


def _answer_video(answerer: VideoAnswerer, data_dir: Path, video: str, qs: list, writer: ResultsWriter, bar) -> None:
    """Answer the questions about one video. With `encode_once`, each frame selection (the whole video, or a
    question's clip, e.g. MVBench) is encoded once and shared by the questions that ask about it."""
    from ..data.video import VideoReadError

    path = _resolve(data_dir, video)
    encodings: dict[tuple, tuple[Any, str | None]] = {}  # frame selection -> (encoding, error)

    def encoding(q) -> Any:
        key = _frames_key(q)
        if key not in encodings:
            try:  # ValueError here is a selection the video cannot give (bounds past its end)
                encodings[key] = (answerer.encode(answerer.load_frames(path, q)), None)
            except AnnotationError:  # a field the protocol's sampler needs: the question's error, not the video's
                raise
            except (VideoReadError, FileNotFoundError, ValueError) as e:
                encodings[key] = (None, f"video: {e}")
        enc, error = encodings[key] if answerer.cfg.encode_once else encodings.pop(key)
        if error is not None:
            raise _VideoError(error)
        return enc

    bench, protocol = answerer.bench, answerer.protocol
    for q in qs:
        t1 = time.perf_counter()
        res = _answer_one(answerer, data_dir, q, encoding)
        gold = bench.gold(q, protocol)
        writer.write({
            "qid": q.qid, "video": video, "prompt": res["prompt"], "response": res["response"],
            "letter": res["letter"], "answer": gold,
            "correct": res["letter"] is not None and gold is not None and gold in res["letter"],
            "categories": bench.categories_for(q, protocol), "num_options": len(q.options), "error": res["error"],
            "subtitles": res["subtitles"], "time_s": round(time.perf_counter() - t1, 4),
        })
        bar.update(1)


class _VideoError(Exception):
    """A clip that could not be read or encoded (recorded once per question that asks about it)."""


def _throughput(records: list[dict[str, Any]]) -> float | None:
    seconds = sum(r.get("time_s", 0.0) for r in records)
    return round(len(records) / seconds, 3) if seconds > 0 else None


ConfigStore.instance().store(name="eval_schema", node=EvalConfig)  # configs/eval.yaml is validated against it
