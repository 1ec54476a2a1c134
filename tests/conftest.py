"""Shared fixtures. Keep this small: helpers live in their own modules."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from seaweed import SeaweedServer  # tests/ is on sys.path: no __init__.py here


@pytest.fixture(scope="session")
def s3_env() -> None:
    """Dummy AWS credentials for the session, inherited by subprocesses."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "any")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "any")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def seaweed(s3_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS S3 server for the whole session."""
    server = SeaweedServer()
    server.start(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()
