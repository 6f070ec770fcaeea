"""The built-in candidate sources, each through the source contract."""

from __future__ import annotations

import pytest

from contracts.candidate_source_contract import CandidateSourceContract
from fyp.feed.candidates import CandidateSource, default_sources


class TestBuiltInSources(CandidateSourceContract):
    @pytest.fixture(params=default_sources(), ids=lambda s: s.name)
    def source(self, request: pytest.FixtureRequest) -> CandidateSource:
        found: CandidateSource = request.param
        return found
