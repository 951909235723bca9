"""A local OpenAI-compatible judge for tests: stdlib HTTP on 127.0.0.1 (real sockets, real HTTP), replies by rule.

No public AutoDQ or G-VEval judge transcripts exist (docs/captioning.md §9), so the replies are synthetic, shaped as the
official prompts ask and as the OpenAI chat-completions API returns them:

- AutoDQ event extraction: a Python-dict string of the caption's sentences of two words or more (every other reply
  in a ```python fence);
- AutoDQ entailment: one item per listed event, "entailment" when the event's first word occurs in the description,
  else "neutral"; written with the habits the official clean-up repairs (fence, "}{", trailing comma, True);
- G-VEval (a request with logprobs): a reason ending "$85$" (ACCR prompts: α85α β85β ψ85ψ δ85δ), with per-token
  logprobs whose top-5 after each marker is docs/captioning.md §4.5's vector (expected score 83.29...).

`faults`: popped one per request before normal handling: an int HTTP status (429, 500, ...), "malformed" (200 with a
body that is not JSON), "drop" (close the connection without a reply), "nologprobs", or "text:<content>" (that reply).
A prompt containing "unjudgeable" always gets a reply no metric can parse. `requests` keeps every request (path,
lower-cased headers, JSON body). `key`: when set, other keys get 401.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "judge-local-1"
TOP5 = [("85", -0.22), ("80", -1.9), ("90", -2.6), ("8", -4.0), (" ", -5.0)]


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def extraction_reply(prompt: str, fenced: bool) -> str:
    caption = _between(prompt, "Video Description: ", "\n\nExtract at most")
    events = [s.strip() + "." for s in re.split(r"[.!?]", caption) if len(s.split()) >= 2][:10]
    text = "{'events': " + repr(events) + "}"
    return f"```python\n{text}\n```" if fenced else text


def entailment_reply(prompt: str) -> str:
    description = _between(prompt, "Video Description:\n", "\n\nEvents: ").lower()
    events = ast.literal_eval(_between(prompt, "\n\nEvents: ", "\nOutput a JSON formed as:"))
    items = [{"event": e, "relationship": "Entailment " if e.split()[0].lower() in description.split() else "neutral",
              "reason": "True to the text", "confident": True} for e in events]
    body = "}{".join(json.dumps(i)[1:-1] for i in items).replace('"confident": true', '"confident": True')
    return "```json\n{\n  \"events\": [\n    {" + body + "},\n  ]\n}\n```"


def gveval_reply(prompt: str) -> tuple[str, list[dict]]:
    markers = ["α", "β", "ψ", "δ"] if "α" in prompt else ["$"]
    tokens = ["The", " caption", " is", " fine", "."]
    for m in markers:
        tokens += [" " + m, "85", m]
    content = [{"token": t, "logprob": -0.01, "top_logprobs": [{"token": t, "logprob": -0.01}]} for t in tokens]
    for i, t in enumerate(tokens):
        if t == "85":
            content[i] = {"token": "85", "logprob": TOP5[0][1],
                          "top_logprobs": [{"token": a, "logprob": b} for a, b in TOP5]}
    return "".join(tokens), content


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.faults: list = []
        self.requests: list[dict] = []
        self.key: str | None = None
        self.lock = threading.Lock()
        self.calls = 0
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: JudgeServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        key = self.server.key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._send(401, json.dumps({"error": {"message": "Incorrect API key provided"}}).encode())
            return False
        return True

    def do_GET(self) -> None:
        if self._authorised():
            self._send(200, json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                 "body": body})
            fault = srv.faults.pop(0) if srv.faults else None
            srv.calls += 1
            n = srv.calls
        if not self._authorised():
            return
        if isinstance(fault, int):
            return self._send(fault, json.dumps({"error": {"message": f"fault {fault}"}}).encode())
        if fault == "malformed":
            return self._send(200, b'{"choices": [ this is not json')
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        message = body["messages"][0]
        prompt = message["content"] if isinstance(message["content"], str) else message["content"][0]["text"]
        logprobs = None
        if isinstance(fault, str) and fault.startswith("text:"):
            text = fault[5:]
        elif "unjudgeable" in prompt:  # a prompt this judge never answers usefully
            text = "I cannot judge this."
        elif body.get("logprobs"):
            text, content = gveval_reply(prompt)
            logprobs = None if fault == "nologprobs" else {"content": content}
        elif prompt.startswith("Bellow is a description"):
            text = extraction_reply(prompt, fenced=n % 2 == 0)
        else:
            text = entailment_reply(prompt)
        reply = {"id": f"chatcmpl-{n}", "object": "chat.completion", "model": MODEL, "system_fingerprint": "fp_local",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                           "total_tokens": len(prompt.split()) + len(text.split())}}
        self._send(200, json.dumps(reply).encode())
