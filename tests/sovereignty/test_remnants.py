"""Finding and blanking a user's id inside JSON objects kept in store columns: the
walk both erasure and its verification use, checked by hand on small documents."""

from __future__ import annotations

import json
from pathlib import Path

from fyp.audit.log import sql_store
from fyp.sovereignty.remnants import (
    ERASED_NAME,
    _may_name_a_person,
    _paths_naming,
    _without_user,
    json_paths,
    scrub_store,
)
from fyp.storage import open_store

DOC = {
    "invited_by": "u1",  # a person field naming the user
    "note": "u1",  # not a person field: kept
    "user_ids": ["u2", "u1", 7],  # array elements sit under the array's field
    "team": {"owner": 7, "reviewed_by": True, "approved_by": "u1x"},
    "we.ird": {"creator_id": "u1"},
}


def test_paths_name_each_hit_with_its_path_under_its_field() -> None:
    assert _paths_naming(DOC, "u1") == [
        "$.invited_by",
        "$.user_ids[1]",  # an array's element sits under the array's field
        '$."we.ird".creator_id',  # a key that is not plain is quoted
    ]
    assert _paths_naming(DOC, "7") == ["$.user_ids[2]", "$.team.owner"]
    assert _paths_naming([{"owner": "u1"}], "u1") == ["$[0].owner"]
    assert _paths_naming("u1", "u1") == []  # a bare scalar sits under no field


def test_only_texts_that_can_hold_a_person_field_are_parsed() -> None:
    assert not _may_name_a_person('{"rule": "spam", "score": 0}')
    assert _may_name_a_person('{"invited_by": "u1"}')
    escaped = '{"invited\\u005fby": "u1"}'  # the field's name written with an escape
    assert _may_name_a_person(escaped)
    assert _paths_naming(json.loads(escaped), "u1") == ["$.invited_by"]


def test_the_user_is_blanked_under_person_fields_only() -> None:
    cleaned, paths = _without_user(DOC, "u1")
    assert paths == ["$.invited_by", "$.user_ids[1]", '$."we.ird".creator_id']
    assert cleaned["invited_by"] == ERASED_NAME and cleaned["note"] == "u1"
    assert cleaned["user_ids"] == ["u2", ERASED_NAME, 7]
    assert cleaned["team"] == DOC["team"] and cleaned["we.ird"] == {"creator_id": ERASED_NAME}


def test_a_numeric_id_matches_a_whole_number_but_never_a_boolean() -> None:
    _, paths = _without_user(DOC, "7")
    assert paths == ["$.user_ids[2]", "$.team.owner"]
    _, paths = _without_user({"owner": True, "by": 1}, "1")
    assert paths == []  # True is not 1 here, and "by" alone is not a person field


def test_a_store_is_scrubbed_and_reports_what_it_changed(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}", "us", create=True)
    sql = sql_store(store)
    try:
        sql.execute(
            "INSERT INTO users (user_id, home_region, attributes, created_at_ms, updated_at_ms)"
            " VALUES (?, 'us', ?, 1, 1), (?, 'us', ?, 1, 1)",
            ("a", json.dumps(DOC), "b", json.dumps({"invited_by": "u2"})),
        )
        assert json_paths(sql, "users", "attributes", "u1") == {
            "$.invited_by": 1,
            "$.user_ids[1]": 1,
            '$."we.ird".creator_id': 1,
        }
        assert scrub_store(store, "u1") == {
            "users.attributes.invited_by": 1,
            "users.attributes.user_ids[1]": 1,
            "users.attributes.we.ird.creator_id": 1,
        }
        kept = store.get_user("a")
        assert kept is not None and kept.attributes["note"] == "u1"
        assert kept.attributes["invited_by"] == ERASED_NAME
        assert json_paths(sql, "users", "attributes", "u1") == {}
        other = store.get_user("b")
        assert other is not None and other.attributes == {"invited_by": "u2"}
    finally:
        store.close()
