"""Where the project's own files are, for the CLI, the stack and the tests."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
DEFAULT_STACK = REPO_ROOT / "deploy" / "stack.yaml"
RUN_DIR = REPO_ROOT / "run"
