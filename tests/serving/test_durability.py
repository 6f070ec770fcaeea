"""An acknowledged event survives ``kill -9`` of a real server process, exactly once."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from fyp.access.keys import KeyStore
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.regions.deployment import Deployment
from serving.servers import Server

pytestmark = pytest.mark.slow


def _event(worker: int, n: int) -> dict[str, object]:
    return {
        "event_id": f"w{worker}-{n}",
        "user_id": "alice" if n % 2 else "bruno",
        "video_id": "v1",
        "type": "play",
        "watch_ms": 1000 + n,
    }


def _client(
    port: int, key: str, worker: int, acked: list[str], sent: list[str], stop: threading.Event
) -> None:
    """Alternate single events and batches of 20 until the server dies."""
    url = f"http://127.0.0.1:{port}"
    n = 0
    with httpx.Client(timeout=2.0, headers={"Authorization": f"Bearer {key}"}) as http:
        while not stop.is_set():
            try:
                if n % 3:
                    event = _event(worker, n)
                    sent.append(str(event["event_id"]))
                    n += 1
                    r = http.post(f"{url}/v1/events", json=event)
                    if r.status_code in (200, 201):
                        acked.append(str(event["event_id"]))
                else:
                    batch = [_event(worker, n + k) for k in range(20)]
                    sent.extend(str(e["event_id"]) for e in batch)
                    n += 20
                    r = http.post(f"{url}/v1/events/batch", json={"events": batch})
                    if r.status_code == 200:
                        acked.extend(
                            res["event_id"]
                            for res in r.json()["results"]
                            if res["status"] in ("stored", "duplicate")
                        )
            except httpx.HTTPError:
                return


def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    directory = tmp_path / "dep"
    with Deployment.init(directory, ["us", "eu"]) as d:
        catalog = Catalog(d)
        catalog.create_user(UserIn(user_id="alice", home_region="us"))
        catalog.create_user(UserIn(user_id="bruno", home_region="eu"))
        catalog.create_video(VideoIn(video_id="v1", duration_ms=20_000, regions=["us", "eu"]))
        _, key = KeyStore(d).create("durability", ["ingest"])

    server = Server(directory, tmp_path / "serve.log").start().wait()
    port = server.port
    acked: list[list[str]] = [[] for _ in range(4)]
    sent: list[list[str]] = [[] for _ in range(4)]
    stop = threading.Event()
    workers = [
        threading.Thread(target=_client, args=(port, key, w, acked[w], sent[w], stop))
        for w in range(4)
    ]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 20
    while sum(map(len, acked)) < 600 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # mid-ingestion: the clients are still sending
    stop.set()
    for w in workers:
        w.join()
    all_acked = {e for a in acked for e in a}
    all_sent = [e for s in sent for e in s]
    assert len(all_acked) >= 600

    server = Server(directory, tmp_path / "serve.log", port).start().wait()  # recovers from the WAL
    try:
        with httpx.Client(timeout=5.0, headers={"Authorization": f"Bearer {key}"}) as http:
            resent = [
                http.post(
                    f"http://127.0.0.1:{port}/v1/events",
                    json=_event(int(e[1 : e.index("-")]), int(e.split("-")[1])),
                )
                for e in sorted(all_acked)[:200]
            ]
        assert all(r.status_code == 200 and r.json()["status"] == "duplicate" for r in resent)
    finally:
        server.kill()

    stored: dict[str, int] = {}
    for region in ("us", "eu"):
        db = sqlite3.connect(directory / "regions" / region / "store.sqlite")
        for event_id, count in db.execute("SELECT event_id, COUNT(*) FROM events GROUP BY 1"):
            stored[event_id] = stored.get(event_id, 0) + count
        db.close()
    assert all_acked <= stored.keys(), f"lost {len(all_acked - stored.keys())} acknowledged events"
    assert all(count == 1 for count in stored.values())
    assert stored.keys() <= set(all_sent)
