"""A local DashScope WebSocket inference server speaking the real wire protocol, for the
``dashscope`` SDK's CosyVoice TTS and Paraformer real-time ASR.

``/api-ws/v1/inference``: the client sends ``run-task`` (JSON), the server answers
``task-started``; then ``continue-task`` with text (TTS) or binary audio frames (ASR);
the server streams ``result-generated`` events and, for TTS, binary PCM frames; on
``finish-task`` it ends with ``task-finished``. A wrong ``Authorization: Bearer`` key or
a scripted failure gets ``task-failed`` with an ``error_code``/``error_message``, as the
service does.

What it "says" is deterministic so tests can check it: TTS audio is a tone lasting 60 ms
per character of text at the requested sample rate; ASR recognizes ``transcript``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from tests.fakes.local_server import LocalServer

MS_PER_CHAR = 60


class FakeDashScope(LocalServer):
    def __init__(self, api_key: str = "sk-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.transcript = "What is the capital of France?"
        self.fail_next: str | None = None
        """An error_code for the next task (then cleared)."""
        self.tasks: list[dict[str, Any]] = []
        self.audio_bytes_received = 0
        self.app.router.add_get("/api-ws/v1/inference", self._ws)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api-ws/v1/inference"

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        key = request.headers.get("Authorization", "")
        task: dict[str, Any] | None = None
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                if task is not None and task["task"] == "asr":
                    self.audio_bytes_received += len(msg.data)
                    task["audio"] += len(msg.data)
                continue
            if msg.type != WSMsgType.TEXT:
                break
            cmd = json.loads(msg.data)
            header, payload = cmd["header"], cmd.get("payload", {})
            task_id = header.get("task_id", "")
            action = header.get("action")
            if action == "run-task":
                task = {"id": task_id, "task": payload.get("task"), "model": payload.get("model"),
                        "parameters": payload.get("parameters", {}), "audio": 0, "texts": []}  # fmt: skip
                self.tasks.append(task)
                if key != f"Bearer {self.api_key}":
                    await self._failed(ws, task_id, "InvalidApiKey", "Invalid API-key provided.")
                    continue
                if self.fail_next:
                    code, self.fail_next = self.fail_next, None
                    await self._failed(ws, task_id, code, f"scripted failure: {code}")
                    continue
                await self._event(ws, task_id, "task-started")
            elif action == "continue-task" and task is not None:
                text = payload.get("input", {}).get("text")
                if text:
                    task["texts"].append(text)
                    await self._speak(ws, task, text)
            elif action == "finish-task" and task is not None:
                if task["task"] == "asr" and task["audio"]:
                    seconds = task["audio"] / 2 / int(task["parameters"].get("sample_rate", 16000))
                    sentence = {"begin_time": 0, "end_time": int(seconds * 1000), "text": self.transcript,
                                "sentence_end": True, "words": []}  # fmt: skip
                    result = {"output": {"sentence": sentence}, "usage": {"duration": int(seconds)}}
                    await self._event(ws, task_id, "result-generated", result)
                await self._event(ws, task_id, "task-finished", {"output": {}, "usage": {"characters": 1}})
        return ws

    async def _speak(self, ws: web.WebSocketResponse, task: dict[str, Any], text: str) -> None:
        rate = int(task["parameters"].get("sample_rate", 24000))
        n = rate * MS_PER_CHAR * len(text) // 1000
        t = np.arange(n) / rate
        pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()
        await self._event(ws, task["id"], "result-generated", {"output": {"sentence": {"words": []}}})
        step = rate // 10 * 2
        for i in range(0, len(pcm), step):
            await ws.send_bytes(pcm[i : i + step])

    @staticmethod
    async def _event(ws: web.WebSocketResponse, task: str, event: str, payload: dict[str, Any] | None = None) -> None:
        header = {"task_id": task, "event": event, "attributes": {}}
        await ws.send_str(json.dumps({"header": header, "payload": payload or {}}))

    @staticmethod
    async def _failed(ws: web.WebSocketResponse, task: str, code: str, message: str) -> None:
        header = {"task_id": task, "event": "task-failed", "error_code": code, "error_message": message,
                  "attributes": {}}  # fmt: skip
        await ws.send_str(json.dumps({"header": header, "payload": {}}))
