"""Granular restore tests run on the real tiny sample platform of the services tests."""

from tests.services.conftest import platform  # noqa: F401
