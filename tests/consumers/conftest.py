"""Fixtures of the consumers' tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumers.store import ViewStore


@pytest.fixture
def store(database_url: str) -> Iterator[ViewStore]:
    """A fresh view database with its schema, on each backend ``database_url`` names."""
    store = ViewStore(database_url)
    store.create_schema()
    yield store
    store.close()
