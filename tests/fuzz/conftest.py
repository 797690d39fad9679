"""The fuzz tests' hypothesis profile is chosen before any of them is collected (tests/fuzz/profiles.py)."""

from tests.fuzz import profiles  # noqa: F401 - registers and loads the profile
