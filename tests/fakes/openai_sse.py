"""A local fake of an OpenAI-compatible chat completions endpoint (``chat.completion.chunk`` SSE).

It reuses ``FakeHTTPServer`` from ``anthropic_sse``; the helpers build the chunk sequences a
real server streams, including ``tool_calls`` deltas split across chunks.
"""

from __future__ import annotations

from typing import Any

from fakes.anthropic_sse import Reply


def _chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
    return None, {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def openai_reply(
    *texts: str, tool: tuple[str, str, list[str]] | None = None, stall_after: int | None = None
) -> Reply:
    """Streamed chunks: text content, then optionally one tool call (``(id, name, pieces)``)."""
    events: list[tuple[str | None, Any]] = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": text}) for text in texts]
    if tool is not None:
        tool_id, name, pieces = tool
        events.append(
            _chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": tool_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        events += [
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in pieces
        ]
    events.append(_chunk({}, "tool_calls" if tool else "stop"))
    events.append((None, "[DONE]"))
    return Reply(events=events, stall_after=stall_after)


def openai_error(status: int = 500) -> Reply:
    """An error response as the API sends it."""
    return Reply(
        status=status,
        body={"error": {"message": "server error", "type": "server_error", "code": None}},
    )
