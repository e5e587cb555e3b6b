"""Fixtures shared by the integration tests."""
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster


@pytest.fixture
def cluster(tmp_path: Path):
    """node1 and node2 with the walk-through's configuration; always cleaned up."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.cleanup()
