"""Shared pytest fixtures."""

import pytest

from tests.fake_api import FakeAPI


@pytest.fixture
def fake_api():
    """A fake OpenAI/Gemini HTTP server on 127.0.0.1, shut down after the test."""
    with FakeAPI() as server:
        yield server
