"""Synthetic long-video data: schema, determinism, and that every answer can be read back from the decoded pixels.

The pixel checks are deliberately independent of the generator's bookkeeping: needles are found in the decoded mp4
by saturation, their colour is the nearest palette entry to the mean pixel, their shape the best-matching template
at the mask's bounding box, and the question's subject is parsed from the question text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from vamba.data import synthetic  # noqa: E402
from vamba.data.frames import FrameSpec  # noqa: E402
from vamba.data.synthetic import PALETTE, SHAPES, SyntheticConfig, generate, shape_mask  # noqa: E402
from vamba.data.video import load_video, sample_indices  # noqa: E402

TINY = SyntheticConfig(
    train_videos=2, eval_videos=3, questions_per_video=15, num_frames=64, width=56, height=56, max_needles=5,
    num_images=12, seed=7,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> synthetic.SyntheticDataset:
    return generate(tmp_path_factory.mktemp("syn"), TINY)


def decode(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames via PyAV, independent of vamba's own loader."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def parse_options(question: str) -> tuple[str, dict[str, str]]:
    stem, *lines = question.split("\n")
    options = {}
    for line in lines:
        m = re.fullmatch(r"\(([A-D])\) (.+)", line)
        assert m, line
        options[m.group(1)] = m.group(2)
    return stem, options


def saturated(frame: np.ndarray) -> np.ndarray:
    """Strongly coloured pixels: the needle's interior (the grey background has none)."""
    return (frame.max(-1).astype(int) - frame.min(-1).astype(int)) > 80


def outline(frame: np.ndarray) -> np.ndarray:
    """Pixels whose luma stands out from the background: the needle's shape at full resolution (yuv420p keeps
    colour at half resolution, so a saturation mask of a small red shape is blocky)."""
    luma = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.abs(luma - np.median(luma)) > 20


def nearest_color(pixels: np.ndarray) -> str:
    mean = pixels.reshape(-1, 3).mean(0)
    return min(PALETTE, key=lambda name: float(((np.array(PALETTE[name]) - mean) ** 2).sum()))


def best_shape(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cy, cx, size = (y0 + y1) / 2, (x0 + x1) / 2, max(y1 - y0, x1 - x0)

    def iou(shape: str) -> float:
        t = shape_mask(shape, *mask.shape, cy, cx, size)
        return (t & mask).sum() / (t | mask).sum()

    return max(SHAPES, key=iou)


def detect(frames: np.ndarray) -> tuple[list[tuple[int, int, str, str]], list[tuple[str, str] | None]]:
    """Episodes (start, end, colour, shape) found in the pixels, and the per-frame label (None = background)."""
    labels: list[tuple[str, str] | None] = []
    for frame in frames:
        mask = saturated(frame)
        labels.append((nearest_color(frame[mask]), best_shape(outline(frame))) if mask.mean() > 0.05 else None)
    episodes = []
    for t, label in enumerate(labels):
        if label is None:
            continue
        if episodes and episodes[-1][1] == t and episodes[-1][2:] == label:
            episodes[-1] = (episodes[-1][0], t + 1, *label)
        else:
            episodes.append((t, t + 1, *label))
    return episodes, labels


def test_lvbench_schema(data):
    rows = read_jsonl(data.eval_meta)
    assert len(rows) == TINY.eval_videos
    uids = []
    for row in rows:
        assert set(row) == {"key", "type", "video_info", "qa"}
        assert isinstance(row["key"], str) and isinstance(row["type"], str)
        info = row["video_info"]
        assert set(info) == {"duration_minutes", "fps", "resolution"}
        assert isinstance(info["duration_minutes"], float) and isinstance(info["fps"], float)
        assert info["resolution"] == {"width": TINY.width, "height": TINY.height}
        assert (data.root / "videos" / f"{row['key']}.mp4").is_file()
        assert len(row["qa"]) >= 10  # several needles per video allow LVBench-like question density
        for qa in row["qa"]:
            assert set(qa) == {"uid", "question", "answer", "question_type", "time_reference"}
            assert type(qa["uid"]) is int
            uids.append(qa["uid"])
            _, options = parse_options(qa["question"])
            assert list(options) == ["A", "B", "C", "D"] and len(set(options.values())) == 4
            assert qa["answer"] in options
            assert isinstance(qa["question_type"], list) and qa["question_type"][0] in synthetic.TASKS
            assert all(isinstance(t, str) for t in qa["question_type"])
            assert re.fullmatch(r"\d\d:\d\d-\d\d:\d\d", qa["time_reference"])
    assert len(uids) == len(set(uids))


def test_letters_and_tasks_not_degenerate(data):
    qas = [qa for row in read_jsonl(data.eval_meta) + read_jsonl(data.train_meta) for qa in row["qa"]]
    letters = Counter(qa["answer"] for qa in qas)
    assert all(letters[L] >= 0.1 * len(qas) for L in "ABCD"), letters
    tasks = Counter(qa["question_type"][0] for qa in qas)
    assert set(tasks) == set(synthetic.TASKS), tasks


@pytest.mark.parametrize("split", ["eval", "train"])
def test_answers_readable_from_pixels(data, split):
    meta = read_jsonl(data.eval_meta if split == "eval" else data.train_meta)
    truth = json.loads((data.needles_eval if split == "eval" else data.needles_train).read_text())["videos"]
    for row, gt in zip(meta, truth):
        assert row["key"] == gt["key"]
        frames = decode(data.root / gt["video"])
        assert frames.shape == (gt["num_frames"], TINY.height, TINY.width, 3)
        episodes, _ = detect(frames)
        expected = [(n["start_frame"], n["end_frame"], n["color"], n["shape"]) for n in gt["needles"]]
        assert episodes == expected
        for qa in row["qa"]:
            stem, options = parse_options(qa["question"])
            answer = options[qa["answer"]]
            task = qa["question_type"][0]
            if task == "needle_color":
                shape = re.fullmatch(r"What color was the (\w+) that appeared in the video\?", stem).group(1)
                assert {e[2] for e in episodes if e[3] == shape} == {answer}
            elif task == "needle_shape":
                color = re.fullmatch(r"What shape was the (\w+) object that appeared in the video\?", stem).group(1)
                assert {e[3] for e in episodes if e[2] == color} == {answer}
            elif task == "count":
                color, shape = re.fullmatch(r"How many times did the (\w+) (\w+) appear in the video\?", stem).groups()
                assert sum(e[2:] == (color, shape) for e in episodes) == int(answer)
            else:
                first = {}
                for start, _, color, shape in episodes:
                    first.setdefault(f"{color} {shape}", start)
                present = {o: first[o] for o in options.values() if o in first}
                assert len(present) >= 2  # decided by order, not by presence alone
                assert min(present, key=present.get) == answer


@pytest.mark.parametrize("frames,eval_frames", [(48, 16), (64, 8), (20, 16), (16, 16)])
def test_needles_fill_aligned_pairs_of_sampled_frames(tmp_path, frames, eval_frames):
    """Sampling eval_frames with the project's sampler, each needle fills exactly one whole 2-frame patch."""
    config = SyntheticConfig(train_videos=0, eval_videos=2, num_frames=frames, eval_frames=eval_frames, width=28,
                             height=28, num_images=0, questions_per_video=4, seed=3)
    out = generate(tmp_path, config)
    truth = json.loads(out.needles_eval.read_text())["videos"]
    project = sample_indices(frames, config.fps, "uniform", num_frames=eval_frames)
    samplers = [project]
    stride = (frames - 1) / (eval_frames - 1)
    if stride == 1 or stride >= 2:  # the documented range for the original Vamba sampler
        samplers.append(np.linspace(0, frames - 1, eval_frames).astype(int))
    for gt in truth:
        _, labels = detect(decode(out.root / gt["video"]))
        assert gt["sample_indices"] == project.tolist()
        for indices in samplers:
            seen = [labels[i] for i in indices]
            for needle in gt["needles"]:
                k = needle["slot"]
                assert seen[2 * k] == seen[2 * k + 1] == (needle["color"], needle["shape"])
            assert sum(s is not None for s in seen) == 2 * len(gt["needles"])
        # The project's reader returns the same frames, so the needles reach the model as planned.
        loaded = load_video(out.root / gt["video"], FrameSpec(count=eval_frames), resize=False)
        assert loaded.indices.tolist() == project.tolist()
        assert detect(loaded.frames)[1] == [labels[i] for i in project]


@pytest.mark.parametrize("size,codec", [(28, "auto"), (56, "mpeg4")])
def test_deterministic_and_seed_sensitive(tmp_path, size, codec):
    config = SyntheticConfig(train_videos=2, eval_videos=2, num_frames=16, width=size, height=size, num_images=4,
                             seed=1, codec=codec)
    a, b = generate(tmp_path / "a", config), generate(tmp_path / "b", config)
    c = generate(tmp_path / "c", SyntheticConfig(**{**config.to_dict(), "seed": 2}))
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    for rel in files:
        # Same machine and library build: even the mp4 bytes repeat (x264 runs single-threaded, cpu-independent).
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
        if rel.suffix == ".mp4":
            assert np.array_equal(decode(a.root / rel), decode(b.root / rel))
            assert not np.array_equal(decode(a.root / rel), decode(c.root / rel))
    assert a.eval_meta.read_bytes() != c.eval_meta.read_bytes()


def test_train_eval_disjoint(data):
    eval_keys = {row["key"] for row in read_jsonl(data.eval_meta)}
    train = json.loads(data.train_json.read_text())
    assert train == read_jsonl(data.train_jsonl)
    train_videos = {s["video"] for s in train}
    assert train_videos == {f"videos/{p.name}" for p in data.train_videos}
    assert not eval_keys & {Path(v).stem for v in train_videos}
    eval_first = [decode(p)[:8] for p in data.eval_videos]
    for path in data.train_videos:
        assert all(not np.array_equal(decode(path)[:8], e) for e in eval_first)
    eval_uids = {qa["uid"] for row in read_jsonl(data.eval_meta) for qa in row["qa"]}
    assert not eval_uids & {qa["uid"] for row in read_jsonl(data.train_meta) for qa in row["qa"]}


def test_train_conversations(data):
    train = json.loads(data.train_json.read_text())
    assert len(train) == data.num_train_samples > 0
    for sample in train:
        assert set(sample) >= {"id", "video", "conversations"}
        human, gpt = sample["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<video>\n") and "(D) " in human["value"]
        assert "letter" in human["value"] and gpt["value"] in "ABCD"
        assert (data.root / sample["video"]).is_file()


def test_captions_match_images(data):
    rows = read_jsonl(data.captions)
    assert len(rows) == TINY.num_images
    for row in rows:
        with av.open(str(data.root / row["image"])) as container:
            image = next(container.decode(video=0)).to_ndarray(format="rgb24")
        mask = saturated(image)
        words = set(re.findall(r"\w+", row["caption"].lower()))
        (color,) = words & set(PALETTE)
        (shape,) = words & set(SHAPES)
        assert nearest_color(image[mask]) == color
        assert best_shape(outline(image)) == shape
        ys, xs = np.nonzero(mask)
        fy, fx = synthetic.POSITIONS[row["position"]]
        assert row["position"] in row["caption"]
        assert abs(ys.mean() / image.shape[0] - fy) < 0.12 and abs(xs.mean() / image.shape[1] - fx) < 0.12


def test_skip_regenerate_and_atomic(tmp_path, monkeypatch):
    config = SyntheticConfig(train_videos=3, eval_videos=2, num_frames=16, width=28, height=28, num_images=3)
    first = generate(tmp_path, config)
    assert not first.skipped
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = generate(tmp_path, config)
    assert again.skipped and again.num_eval_questions == first.num_eval_questions
    assert stamp == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}

    first.train_videos[0].unlink()  # an incomplete output is regenerated
    assert not generate(tmp_path, config).skipped and first.train_videos[0].is_file()

    smaller = SyntheticConfig(**{**config.to_dict(), "train_videos": 1, "num_images": 1})
    out = generate(tmp_path, smaller)
    assert not out.skipped
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == sorted(
        p.name for p in out.eval_videos + out.train_videos)
    assert len(list((tmp_path / "images").iterdir())) == 1

    # A failure mid-run leaves no marker (so the next call redoes the work) and no temporary files.
    calls = {"n": 0}
    real = synthetic.write_mp4

    def flaky(path, frames, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            next(iter(frames))
            raise RuntimeError("interrupted")
        return real(path, frames, *args, **kwargs)

    monkeypatch.setattr(synthetic, "write_mp4", flaky)
    with pytest.raises(RuntimeError):
        generate(tmp_path, config)
    assert not (tmp_path / synthetic.CONFIG_FILE).exists()
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(synthetic, "write_mp4", real)
    assert not generate(tmp_path, config).skipped
    assert generate(tmp_path, config).skipped
    assert not list(tmp_path.rglob("*.tmp"))


def test_curriculum_and_mpeg4(tmp_path):
    config = SyntheticConfig(train_videos=4, eval_videos=1, num_frames=16, train_frames_schedule=(8, 16), width=28,
                             height=28, num_images=0, codec="mpeg4", tasks=("needle_color",), max_needles=1,
                             questions_per_video=1, answer_style="sentence")
    out = generate(tmp_path, config)
    assert out.codec == "mpeg4"
    train = json.loads(out.train_json.read_text())
    assert [s["num_frames"] for s in train] == [8, 8, 16, 16]
    assert all(re.fullmatch(r"The answer is \([A-D]\) \w+\.", s["conversations"][1]["value"]) for s in train)
    truth = json.loads(out.needles_train.read_text())["videos"]
    for gt in truth:
        frames = decode(out.root / gt["video"])
        assert len(frames) == gt["num_frames"] and len(gt["needles"]) == 1
        episodes, _ = detect(frames)
        n = gt["needles"][0]
        assert [e[2] for e in episodes] == [n["color"]]
        assert n["end_frame"] - n["start_frame"] == 2 and n["start_frame"] % 2 == 0  # one aligned temporal patch


def test_cli(tmp_path, capsys):
    """`python -m vamba.data.synthetic` takes Hydra overrides of the `SyntheticConfig` fields."""
    argv = [f"out={tmp_path}", "train_videos=1", "eval_videos=1", "num_frames=8", "width=28", "height=28",
            "num_images=1", "tasks=[needle_color,count]", "answer_style=text", "needle_scale=0.8", "fps=2"]
    assert synthetic.main(argv) == 0
    assert "1 videos" in capsys.readouterr().out
    stored = json.loads((tmp_path / synthetic.CONFIG_FILE).read_text())["config"]
    assert stored["tasks"] == ["needle_color", "count"] and stored["needle_scale"] == 0.8 and stored["fps"] == 2.0
    for sample in read_jsonl(tmp_path / synthetic.TRAIN_JSONL):
        _, options = parse_options(sample["conversations"][0]["value"].split("\n", 3)[3])
        assert sample["conversations"][1]["value"] in options.values()
    assert synthetic.main(argv) == 0 and "reused" in capsys.readouterr().out
    assert synthetic.main([*argv, "width=27"]) == 2 and "28..640" in capsys.readouterr().err
    assert synthetic.main([*argv, "no_such_field=1"]) == 2 and "no_such_field" in capsys.readouterr().err
    assert synthetic.main(["train_videos=1"]) == 2  # out= is required
    proc = subprocess.run([sys.executable, "-m", "vamba.data.synthetic", *argv], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "reused" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("bad", [dict(width=27), dict(width=700), dict(tasks=("nope",)), dict(eval_frames=3),
                                 dict(max_needles=6), dict(colors=("red", "blue", "green"))])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)
