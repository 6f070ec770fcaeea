"""Experiment exposures in a store (``fyp.experiments.exposures``): the same behaviour on
every backend. Mixed into each backend's store test class beside ``StoreContract``,
whose hooks (``store``, ``raw_insert``, ``integrity_errors``, ``open_database``) it uses."""

from __future__ import annotations

import pytest

from contracts.store_contract import T0, StoreContract, make_user
from fyp.experiments.exposures import TABLE, Exposure, exposures, record_exposure
from fyp.storage.base import Store


class ExposureContract(StoreContract):
    def test_the_first_exposure_is_kept_and_a_later_one_changes_nothing(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        assert record_exposure(store, "exp", "b", "u1", T0)
        assert not record_exposure(store, "exp", "control", "u1", T0 + 5)  # first stays
        assert record_exposure(store, "other", "control", "u1", T0 + 7)  # another experiment
        assert record_exposure(store, "exp", "control", "u2", T0 + 9)
        assert exposures(store, "exp") == {
            "u1": Exposure("b", T0),
            "u2": Exposure("control", T0 + 9),
        }
        assert exposures(store, "other") == {"u1": Exposure("control", T0 + 7)}
        assert exposures(store, "none") == {}
        again = self.open_database("main")  # committed: another process reads the same
        assert exposures(again, "exp")["u1"] == Exposure("b", T0)

    def test_an_unknown_user_is_not_exposed(self, store: Store) -> None:
        assert not record_exposure(store, "exp", "b", "ghost", T0)
        assert exposures(store, "exp") == {}

    def test_deleting_the_user_deletes_their_exposures(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        record_exposure(store, "exp", "b", "u1", T0)
        record_exposure(store, "exp", "b", "u2", T0)
        store.delete_user("u1")
        assert set(exposures(store, "exp")) == {"u2"}
        store.insert_user(make_user("u1"))  # the id reused: a new user, not yet exposed
        assert record_exposure(store, "exp", "control", "u1", T0 + 1)
        assert exposures(store, "exp")["u1"] == Exposure("control", T0 + 1)

    def test_database_refuses_a_foreign_exposure(self, store: Store) -> None:
        self.seed(store, "u1")
        row = {"user_id": "u1", "experiment": "exp", "variant": "b", "exposed_at_ms": T0}
        with pytest.raises(self.integrity_errors):
            self.raw_insert(store, TABLE, {**row, "region": "eu"})
        assert exposures(store, "exp") == {}
        self.raw_insert(store, TABLE, row)  # the region's own default
        assert exposures(store, "exp") == {"u1": Exposure("b", T0)}
