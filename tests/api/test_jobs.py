"""Jobs over HTTP: the service queues a batch of planted features, a real `glossator
worker` process explains them, and the job's progress, cancel and errors read back
over real HTTP."""

from __future__ import annotations

import os
import subprocess
import time

import httpx

from tests.cli_helpers import GLOSSATOR
from tests.server_fixtures import api_key, serving, settings_of


def test_a_job_queued_over_http_is_explained_by_a_worker(planted_env: dict[str, str]) -> None:
    key = {"Authorization": f"Bearer {api_key(planted_env)}"}
    with serving(settings_of(planted_env)) as url:
        body = {"features": [0, 2], "max_rounds": 4, "new": True}
        assert httpx.post(f"{url}/jobs", json=body).status_code == 401
        both = httpx.post(f"{url}/jobs", json={**body, "range": "0:3"}, headers=key)
        assert both.status_code == 422 and "either" in both.text
        bad = httpx.post(f"{url}/jobs", json={"features": [99]}, headers=key)
        assert bad.status_code == 422 and "0..24" in bad.text
        queued = httpx.post(f"{url}/jobs", json=body, headers=key)
        assert queued.status_code == 202, queued.text
        job = queued.json()
        assert (
            job["job"]["total"] == 2 and job["workers"] == 0 and "glossator worker" in job["note"]
        )

        worker = subprocess.Popen(
            [GLOSSATOR, "worker", "--planted", "--concurrency", "2"],
            env={**os.environ, **planted_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 180
            while (view := httpx.get(f"{url}/jobs/{job['job']['id']}").json())["job"][
                "state"
            ] not in ("done", "failed"):
                assert worker.poll() is None, worker.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, view
                time.sleep(0.5)
            assert view["job"]["state"] == "done" and view["job"]["done"] == 2, view
            assert view["workers"] == 1
            assert len(httpx.get(f"{url}/workers").json()) == 1
        finally:
            worker.terminate()
            worker.wait(timeout=60)
        listed = httpx.get(f"{url}/jobs").json()
        assert listed[0]["id"] == job["job"]["id"]
        for feature in ("word-love", "colour-words"):
            explanation = httpx.get(f"{url}/features/{feature}").json()["explanation"]
            assert explanation is not None and explanation["run_id"]

        later = httpx.post(f"{url}/jobs", json={"range": "0:25", "new": True}, headers=key).json()
        cancelled = httpx.post(f"{url}/jobs/{later['job']['id']}/cancel", headers=key)
        assert cancelled.status_code == 200 and cancelled.json()["job"]["state"] == "cancelled"
        assert httpx.get(f"{url}/jobs/nope").status_code == 404
        assert httpx.post(f"{url}/jobs/nope/cancel", headers=key).status_code == 404
