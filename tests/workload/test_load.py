"""The load client: three valid tasks per round, unique ids, rounds on schedule."""

from __future__ import annotations

import json
from typing import Any

import httpx

from inference_workload import load
from inference_workload.tasks import validate_task


def test_round_has_three_valid_tasks_with_unique_ids() -> None:
    rounds = [load.make_round(n) for n in range(3)]
    tasks = [validate_task(body) for r in rounds for body in r]
    assert [t.tasktype for t in tasks[:3]] == ["text-to-image", "image-to-image", "extra-single-image"]
    assert len({t.id for t in tasks}) == 9
    assert all(t.runtime == "sdruntime" and t.prefix == "output" for t in tasks)
    assert tasks[0].content["steps"] == 16 and tasks[0].content["width"] == tasks[0].content["height"] == 512
    assert tasks[2].content["upscaling_resize"] == 4 and tasks[2].content["resize_mode"] == 0


def test_rounds_every_n_seconds_for_the_duration() -> None:
    clock = [0.0]
    sleeps: list[float] = []
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        clock[0] += 0.25  # each submission takes a quarter second
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True})

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    http = httpx.Client(transport=httpx.MockTransport(answer))
    subs = list(load.run_load("http://api/", every=2, duration=6, http=http, clock=lambda: clock[0], sleep=sleep))
    assert [s.round for s in subs] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sleeps == [1.25, 1.25]  # rounds start at 0, 2 and 4 s
    assert all(s.status_code == 200 for s in subs) and len(seen) == 9


def test_cli_prints_one_line_per_task_and_fails_on_refusal(monkeypatch: Any, capsys: Any) -> None:
    statuses = iter([200, 400, 200])
    monkeypatch.setattr(load, "_submit", lambda http, api, n, body: load.Submission(
        n, body["task"]["metadata"]["tasktype"], body["task"]["metadata"]["id"], next(statuses), {}, 0.0, 0.0))
    assert load.main(["--api", "http://api/"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["status_code"] for line in lines] == [200, 400, 200]
