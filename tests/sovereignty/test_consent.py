"""Consent to model training on record and checkable: each change is an audit entry
(``consent.change``), and ``fyp lineage verify`` proves the live model learned from no
user without consent at its snapshot, reporting a withdrawal since as a pending retrain
until ``[erasure] retrain_within_hours`` runs out (then exit 1), until a retrain."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from consent_helpers import BACKENDS, OBJECTOR, USERS, build, live, on_backend, train

from fyp.access.keys import KeyStore
from fyp.audit.log import AuditLog
from fyp.catalog.models import UserIn, UserPatch
from fyp.catalog.service import Catalog
from fyp.cli.app import app
from fyp.models.schedule import retrain_reason
from fyp.models.training import train_and_publish
from fyp.regions.consent import ConsentPolicy, consent_policy
from fyp.regions.deployment import Deployment
from fyp.regions.live_config import record_policy_in_force
from fyp.serving.app import create_app
from fyp.sovereignty.consent_log import ACTION, withdrawal_deadline
from fyp.sovereignty.ledger import user_pseudonym
from fyp.sovereignty.lineage import LineageVerifier

runner = CliRunner()
WITHDRAW = UserPatch(consents={"model_training": False})


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with on_backend(request.param, monkeypatch):
        yield request.param


def consent_entries(d: Deployment, region: str = "us") -> list[Any]:
    return list(AuditLog(d.store(region)).entries(action=ACTION))


def verify(root: Path) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["lineage", "verify", str(root), "--json"])
    return result.exit_code, json.loads(result.stdout)


def live_report(d: Deployment) -> Any:
    return next(r for r in LineageVerifier(d).verify() if r.current)


def test_every_consent_change_is_an_audit_entry(tmp_path: Path, backend: str) -> None:
    with Deployment.init(tmp_path / "d", ["us", "eu"]) as d:
        _, token = KeyStore(d).create("app", ["ingest"], ["eu"])
        client = TestClient(create_app(d), headers={"Authorization": f"Bearer {token}"})
        with client:
            made = client.post(
                "/v1/users",
                json={"user_id": "ana", "home_region": "eu", "consents": {"model_training": False}},
            )
            assert made.status_code == 201
            client.post("/v1/users", json={"user_id": "bo", "home_region": "eu"})
            path = "/v1/users/ana"
            assert (
                client.patch(path, json={"consents": {"model_training": True}}).status_code == 200
            )
            client.patch(path, json={"consents": {"model_training": True}})  # no change
            client.patch(path, json={"country": "PT"})  # consents untouched
            client.patch(path, json={"consents": None})  # cleared: the region's default again
        entries = consent_entries(d, "eu")
        assert consent_entries(d, "us") == []
        key_id = token.split("_")[1]
        assert [e.actor for e in entries] == [f"key:{key_id}"] * 3
        pseudonym = user_pseudonym(d.config, "eu", "ana")
        assert {e.subject for e in entries} == {pseudonym}  # by pseudonym, never the id
        assert [e.details for e in entries] == [
            {
                "key": "model_training",
                "old": None,
                "new": False,
                "old_recorded": None,
                "new_recorded": False,
            },
            {
                "key": "model_training",
                "old": False,
                "new": True,
                "old_recorded": False,
                "new_recorded": True,
            },
            {
                "key": "model_training",
                "old": True,
                "new": True,
                "old_recorded": True,
                "new_recorded": None,
            },
        ]
        assert all("ana" not in json.dumps(e.to_dict()) for e in entries)
        assert all(r.ok for r in (AuditLog(d.store(r)).verify() for r in d.regions))
    audit = runner.invoke(app, ["audit", "verify", str(tmp_path / "d")])
    assert audit.exit_code == 0, audit.stdout


def test_a_withdrawal_is_pending_until_its_deadline_then_a_problem_until_a_retrain(
    tmp_path: Path, backend: str
) -> None:
    root = tmp_path / "d"
    d = build(root)
    try:
        train(d)
        code, report = verify(root)
        assert code == 0 and [a["consent"] for a in report["artifacts"]] == ["verified"]
        policy = consent_policy(d.config, "us")
        store, region_dir = d.store("us"), d.config.region_dir("us")
        assert retrain_reason(store, region_dir, None, policy) is None
        Catalog(d).update_user(OBJECTOR, WITHDRAW)
        assert "consent change" in (retrain_reason(store, region_dir, None, policy) or "")
        rep = live_report(d)
        assert rep.ok and rep.consent == "pending"
        due = rep.consent_pending[0]["due_ms"]
        expected = consent_entries(d)[-1].ts_ms + 24 * 3_600_000  # [erasure] default
        assert rep.consent_pending == [{"users": 1, "due_ms": expected}]
        assert any("pending retrain, due by" in n for n in rep.notes)
        late = LineageVerifier(d, now_ms=due + 1).verify()
        assert not late[0].ok and late[0].consent == "violation"
        assert "past the deadline" in late[0].problems[0]
    finally:
        d.close()
    code, report = verify(root)  # the CLI, within the deadline: exit 0, pending
    assert code == 0 and report["artifacts"][0]["consent"] == "pending"
    toml = root / "fyp.toml"  # a deadline of ~0.4 s, run out: exit 1
    text = re.sub(
        r"retrain_within_hours = [0-9.]+", "retrain_within_hours = 1e-4", toml.read_text()
    )
    toml.write_text(text, "utf-8")
    time.sleep(0.5)
    overdue = runner.invoke(app, ["lineage", "verify", str(root)])
    assert overdue.exit_code == 1
    assert "withdrew consent to model training" in overdue.stdout.replace("\n", " ")
    trained = runner.invoke(app, ["train", str(root), "--if-changed", "--jobs", "1"])
    assert trained.exit_code == 0, trained.stdout
    said = " ".join(trained.stdout.split())
    assert "consent change(s) to model training" in said
    assert "1 left out: no consent to model training" in said
    code, report = verify(root)
    assert code == 0 and [a["consent"] for a in report["artifacts"] if a["current"]] == ["verified"]
    with Deployment.open(root) as d:
        _, arrays = live(d)
        assert OBJECTOR not in {str(u) for u in arrays["lineage_user_ids"]}
        # older versions still hold them, but are not served: a note, not a problem
        assert all(r.ok for r in LineageVerifier(d).verify())


def test_learning_from_a_user_without_consent_fails_the_check(tmp_path: Path, backend: str) -> None:
    """A model trained as if the region's default were true, in a region whose default
    is false (a caller that ignored the policy): exit 1, naming how many."""
    root = tmp_path / "d"
    d = build(root, {"u1": {"model_training": True}}, policy="model_training = false")
    try:
        train_and_publish(d.store("us"), d.config.region_dir("us"), consent=ConsentPolicy())
    finally:
        d.close()
    result = runner.invoke(app, ["lineage", "verify", str(root)])
    assert result.exit_code == 1
    assert f"learned from {len(USERS)} user(s) whose consent to model training was false at" in (
        result.stdout
    )


def trained_then_opt_in(root: Path) -> Path:
    """A deployment trained, then its region us's consent policy made opt-in (fyp.toml)."""
    build(root).close()
    with Deployment.open(root) as d:
        train(d)
    toml = root / "fyp.toml"
    toml.write_text(
        toml.read_text("utf-8") + "\n[regions.us.policy.consent]\nmodel_training = false\n"
    )
    return toml


def test_a_policy_turning_opt_in_asks_for_a_retrain(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "d"
    trained_then_opt_in(root)
    with Deployment.open(root) as d:
        policy = consent_policy(d.config, "us")
        reason = retrain_reason(d.store("us"), d.config.region_dir("us"), None, policy)
        assert reason is not None and "consent policy changed" in reason
        rep = live_report(d)
        assert rep.ok and rep.consent == "pending"
        assert any("under the region's consent policy now: pending retrain" in n for n in rep.notes)
        train(d)
        assert live_report(d).consent == "verified"
        _, arrays = live(d)
        assert len(arrays["lineage_user_ids"]) == 0  # nobody opted in


def test_touching_fyp_toml_does_not_move_a_policy_changes_deadline(tmp_path: Path) -> None:
    """The retrain deadline after the region's consent policy turned opt-in was counted
    from fyp.toml's modification time: `touch fyp.toml` made an overdue model 'pending,
    due in 24 h' again (audit review). A host starting its schedules (and `fyp train`)
    now records the policy it finds in force, and the deadline counts from that entry;
    an edit of another policy table since does not move it either."""
    root = tmp_path / "d"
    toml = trained_then_opt_in(root)
    window = 24 * 3_600_000
    with Deployment.open(root) as d:
        assert withdrawal_deadline(d, "us") == int(toml.stat().st_mtime * 1000) + window
        assert record_policy_in_force(d) == ["us"] and record_policy_in_force(d) == []
        (entry,) = AuditLog(d.store("us")).entries(subject="policy:us", action="policy.change")
        due = withdrawal_deadline(d, "us")
        assert due == entry.ts_ms + window
    later = time.time() + 3_600
    os.utime(toml, (later, later))  # a touch
    text = toml.read_text("utf-8").replace(
        "[regions.us.policy]\n", '[regions.us.policy]\nbanned_terms = ["zz"]\n', 1
    )
    toml.write_text(text)  # and an edit of another table, found and recorded later
    with Deployment.open(root) as d:
        assert record_policy_in_force(d) == ["us"]
        assert withdrawal_deadline(d, "us") == due
        assert live_report(d).consent == "pending"


def test_creating_a_user_with_a_consent_records_it(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        Catalog(d).create_user(UserIn(user_id="x", home_region="us"), actor="cli:test")
        assert consent_entries(d) == []  # nothing given: the default, nothing to record
        Catalog(d).create_user(
            UserIn(user_id="y", home_region="us", consents={"model_training": True}),
            actor="cli:test",
        )
        (entry,) = consent_entries(d)
        assert entry.actor == "cli:test" and entry.details["new"] is True


def test_erasure_process_retrains_a_withdrawal_before_its_deadline(
    tmp_path: Path, backend: str
) -> None:
    """`fyp erasure process --due-within H` (cron, or a deployment not served) meets the
    deadline as it does an erasure's."""
    from fyp.sovereignty.erasure_process import process_region

    d = build(tmp_path / "d")
    try:
        first = train(d).version
        assert process_region(d, "us", due_within_ms=0).retrained is None  # nothing pending
        Catalog(d).update_user(OBJECTOR, WITHDRAW)
        waiting = process_region(d, "us", due_within_ms=3_600_000)  # due in 24 h: not yet
        assert waiting.retrained is None and waiting.consent_due is not None
        run = process_region(d, "us", due_within_ms=25 * 3_600_000)
        assert run.retrained not in (None, first) and run.consent_due is None
        _, arrays = live(d)
        assert OBJECTOR not in {str(u) for u in arrays["lineage_user_ids"]}
        assert live_report(d).consent == "verified"
    finally:
        d.close()


def test_the_servers_erasure_schedule_meets_a_withdrawals_deadline(
    tmp_path: Path, backend: str
) -> None:
    """`fyp serve` hands its erasure schedule the withdrawal deadlines, so a deployment
    whose training schedule is off still retrains in time; a hook that fails is logged
    and asked again next round, never a crash of the schedule."""
    from functools import partial

    from fyp.sovereignty.consent_log import withdrawal_deadline
    from fyp.sovereignty.scheduler import ErasureScheduler

    d = build(tmp_path / "d")
    try:
        train(d)
        scheduler = ErasureScheduler(d.config, partial(withdrawal_deadline, d))
        assert not scheduler.due()
        Catalog(d).update_user(OBJECTOR, WITHDRAW)
        due = withdrawal_deadline(d, "us")
        assert due is not None and not scheduler.due()  # 24 h away: not yet
        late = due - 11 * 3_600_000  # within the last half of the window
        assert scheduler.due(now_ms=late)
        assert not ErasureScheduler(d.config).due(now_ms=late)  # manifests alone: blind to it

        def broken(region: str) -> int | None:
            raise RuntimeError("store down")

        assert not ErasureScheduler(d.config, broken).due(now_ms=late)
    finally:
        d.close()


def test_a_restore_never_brings_back_a_consent_withdrawn_after_the_backup(
    tmp_path: Path, backend: str
) -> None:
    from fyp.config import load_config
    from fyp.sovereignty.backup_writer import BackupWriter
    from fyp.sovereignty.restore import Restorer

    root = tmp_path / "d"
    with build(root) as d:
        train(d)
    BackupWriter(load_config(root), "us").run()
    with Deployment.open(root) as d:
        Catalog(d).update_user(OBJECTOR, WITHDRAW)
    Restorer(load_config(root), "us").run()
    with Deployment.open(root) as d:
        user = d.store("us").get_user(OBJECTOR)
        assert user is not None and user.consents == {"model_training": False}
        log = AuditLog(d.store("us"))
        (restore,) = log.entries(action="restore")
        assert restore.details["reapplied_consents"] == 1
        assert log.verify().ok
        # the model from before the withdrawal is pending a retrain, as before the restore
        assert live_report(d).consent == "pending"
        retrain = retrain_reason(
            d.store("us"), d.config.region_dir("us"), None, consent_policy(d.config, "us")
        )
        assert retrain is not None
