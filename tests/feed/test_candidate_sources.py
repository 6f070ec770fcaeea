"""The built-in candidate sources, each through the source contract."""

from __future__ import annotations

import pytest

from contracts.candidate_source_contract import CandidateSourceContract
from fyp.feed.candidates import CandidateSource, default_sources
from fyp.feed.impersonal import impersonal_sources

SOURCES = [*default_sources(), *impersonal_sources()]


class TestBuiltInSources(CandidateSourceContract):
    @pytest.fixture(params=SOURCES, ids=lambda s: f"{s.name}-{type(s).__name__}")
    def source(self, request: pytest.FixtureRequest) -> CandidateSource:
        found: CandidateSource = request.param
        return found
