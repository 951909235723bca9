"""G-VEval (arXiv 2412.13647; ztangaj/gveval @ fee3fd7; docs/captioning.md §4): a caption scored 0-100 from the judge's
logprobs: the expected value of the token after the first token containing `$` (ACCR, videos: after α accuracy,
β completeness, ψ conciseness, δ relevance, then their mean) over its top-5 alternatives "0".."100", renormalised.
One user message holds the prompt and the picture (an image's file bytes, detail low; a video's 3-frame 1536x512
picture, detail high), or one system message without a picture. No score: asked again, 3 tries in all, then the
sample is dropped and counted (rate limits: retried with backoff by the client, where the official one waits
forever). The repository has no licence: its prompt files are read from the user's checkout and must match the sizes
and sha256 below byte for byte; none is copied here.
"""

from __future__ import annotations

import base64
import io
import math
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np

from ..modeling.errors import UsageError
from .judge import Judge, JudgeError, Reply

JUDGE = {"model": "gpt-4o-2024-05-13", "sampling": {"temperature": 1, "top_p": 1, "frequency_penalty": 0,
                                                   "presence_penalty": 0, "logprobs": True, "top_logprobs": 5}}
MODES = ("ref-only", "ref-free", "combined")
ATTEMPTS = 3
ACCR = {"accuracy": "α", "completeness": "β", "conciseness": "ψ", "relevance": "δ"}
PROMPTS = {  # file under evaluation/gveval/prompts/ -> (bytes, sha256)
    "vid/ref-only.txt": (1376, "ad9dfa33f0fd1851329739c60c686aad0a6a7ad45e8c699aa46fde971e1f1f0f"),
    "vid/ref-free.txt": (1397, "ff0bcecf6c60f3b5f8d6671a3c9e0bafbe9ffbd275738e2dd4080111d7c8082a"),
    "vid/combined.txt": (2031, "6070d411bc8f09d4bd44a4cf866c23ce12ec4ad8f230e2ae41b9cbab74380f21"),
    "vid/accr/ref-only.txt": (2999, "b64f1e092df06a2f3212a6d8592bdd3e738fb3330f9be4f92906de2a2c4d4996"),
    "vid/accr/ref-free.txt": (2975, "11e2178417251ecb409e6e25d394e6fdbfff9b9aed4baab04b3f3f2754dad4b7"),
    "vid/accr/combined.txt": (3762, "eceffa77a4573d9a1b964de8811de0a6697d6723430204e0af09e9f2817d9876"),
    "img/ref-only.txt": (1274, "1a19fc3486a0e83bb18e51221cb5b0428d34ca86e844e84cc65a3d8d8a85559c"),
    "img/ref-free.txt": (1028, "16b36d141d27dfb22c7bbbcb0ee1e8bc0d6f14bc0b95a594d41d94002092ef5a"),
    "img/combined.txt": (1613, "be6d8ec06857f458990c41b35d45805e9bcedc5a5763fb7b099601785a89b5a4"),
}
_NUMBERS = {str(i) for i in range(101)}


def prompt_name(visual: str, mode: str, accr: bool) -> str:
    """The official prompt file (`utils.select_prompt`): ACCR applies to videos only."""
    if visual not in ("img", "vid") or mode not in MODES:
        raise UsageError(f"G-VEval: visual must be img|vid and judge.gveval_mode one of {', '.join(MODES)}, "
                         f"got {visual!r}, {mode!r}")
    return f"vid/accr/{mode}.txt" if visual == "vid" and accr else f"{visual}/{mode}.txt"


def load_prompt(folder: str | Path, name: str) -> str:
    """A prompt file of the user's checkout, refused (naming it and both hashes) unless it is the official one."""
    root = Path(folder).expanduser()
    if (root / "evaluation" / "gveval" / "prompts").is_dir():
        root = root / "evaluation" / "gveval" / "prompts"
    path = root / name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"judge.gveval_prompts: cannot read {path} ({e.strerror}); point it at a checkout of "
                         f"https://github.com/ztangaj/gveval") from None
    size, want = PROMPTS[name]
    got = sha256(data).hexdigest()
    if (len(data), got) != (size, want):
        raise UsageError(f"{path} differs from the official G-VEval prompt {name}: sha256 {got} ({len(data)} bytes), "
                         f"expected {want} ({size} bytes); refusing to score with it")
    return data.decode("utf-8")


def render(template: str, prediction: str, references: list[str]) -> str:
    """The official filling: references joined as `'a'; 'b` (opening quote, no closing one), other placeholders such
    as `{{score}}` left as they are."""
    return template.replace("{{Reference}}", "'" + "'; '".join(references)).replace("{{Caption}}", prediction)


def messages(prompt: str, picture: bytes | None = None, detail: str = "low") -> list[dict[str, Any]]:
    """The official layout: user [text, image_url (always labelled image/jpeg)], or system-only without a picture."""
    if picture is None:
        return [{"role": "system", "content": prompt}]
    url = "data:image/jpeg;base64," + base64.b64encode(picture).decode("ascii")
    return [{"role": "user", "content": [{"type": "text", "text": prompt},
                                         {"type": "image_url", "image_url": {"url": url, "detail": detail}}]}]


def expected_score(content: list[dict[str, Any]], marker: str = "$") -> float:
    """Σ s·p(s) over the top logprobs of the token after the first token containing `marker`, over the tokens
    "0".."100" only (renormalised). ValueError when there is no such token or no numeric alternative."""
    at = next((i for i, t in enumerate(content) if marker in t["token"]), None)
    if at is None or at + 1 >= len(content):
        raise ValueError(f"no token after a {marker!r} in the reply")
    probs = {t["token"]: math.exp(t["logprob"]) for t in content[at + 1].get("top_logprobs") or []
             if t["token"] in _NUMBERS}
    if not probs:
        raise ValueError(f"no score token 0-100 among the top logprobs after {marker!r}")
    return sum(int(k) * p for k, p in probs.items()) / sum(probs.values())


def score_reply(reply: Reply, accr: bool) -> dict[str, Any]:
    """{score, (accr: the four), reason} of one judge reply; ValueError when it carries no score."""
    if not reply.logprobs:
        raise ValueError("the judge returned no logprobs")
    parts = {k: expected_score(reply.logprobs, m) for k, m in ACCR.items()} if accr else {}
    return {"score": sum(parts.values()) / 4 if accr else expected_score(reply.logprobs), "reason": reply.text,
            **({"accr": parts} if accr else {})}


def score_sample(judge: Judge, prompt: str, picture: bytes | None, detail: str, accr: bool) -> dict[str, Any]:
    """One caption: up to 3 asks; {success, score, accr, reason} or {success: False, error}."""
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return {"success": True, **score_reply(judge.chat(messages(prompt, picture, detail), attempt), accr)}
        except (JudgeError, ValueError, KeyError, TypeError) as e:
            last = e
    return {"success": False, "error": f"no score in {ATTEMPTS} tries (last: {last})"}


def composite(path: str | Path) -> bytes:
    """The official picture of a video (`utils.video2imgs`), PNG: frames `linspace(0, n-1, 4)[:3]`, each resized to
    512x462 (bilinear, no antialiasing: `cv2.resize`) above a white 50 px bar "Frame k", side by side. Against the
    repository's `processed_videos/video1.png` frames differ by at most 1; the label font is Pillow's, not Hershey."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from ..data.frames import FrameSpec
    from ..data.video import load_video

    video = load_video(path, FrameSpec(sampler=lambda total, fps: np.linspace(0, total - 1, 4, dtype=int)[:-1]),
                       resize=False)
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float()
    panels = torch.nn.functional.interpolate(frames, size=(462, 512), mode="bilinear", align_corners=False)
    panels = panels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    canvas = Image.new("RGB", (512 * len(panels), 512), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=36)
    for k, panel in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (512 * k, 0))
        draw.text((512 * k + 10, 462 + 35), f"Frame {k + 1}", fill="black", font=font, anchor="ls", stroke_width=1)
    canvas.save(buf := io.BytesIO(), "PNG")
    return buf.getvalue()


def summarize(results: list[dict[str, Any]], mode: str, accr: bool) -> dict[str, Any]:
    """Mean score (and ACCR means) over the scored samples; failures are dropped and counted."""
    ok = [r for r in results if r["success"]]
    out = {"score": sum(r["score"] for r in ok) / len(ok) if ok else math.nan, "success": len(ok),
           "failed": len(results) - len(ok), "mode": mode}
    with_accr = [r for r in ok if "accr" in r]
    if accr and with_accr:
        out["accr"] = {k: sum(r["accr"][k] for r in with_accr) / len(with_accr) for k in ACCR}
    return out
