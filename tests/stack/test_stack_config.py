"""The stack file is validated before anything starts."""

import pytest

from tritonfleet.paths import DEFAULT_STACK, REPO_ROOT
from tritonfleet.stack_config import StackConfigError, load_stack_config, parse_stack_config


def test_the_shipped_stack_file_is_valid():
    config = load_stack_config(DEFAULT_STACK)
    triton = config.service("triton")
    assert triton.kind == "triton" and triton.replicas >= 2
    assert triton.model_repository == REPO_ROOT / "model_repository"


@pytest.mark.parametrize(
    "services, message",
    [
        ([{"name": "a", "kind": "nope"}], "'kind' must be one of"),
        ([{"kind": "triton"}], "'name' is required"),
        ([{"name": "t", "kind": "triton"}], "needs 'model_repository'"),
        ([{"name": "t", "kind": "triton", "model_repository": "no/such/dir"}], "does not exist"),
        ([{"name": "t", "kind": "triton", "model_repository": "model_repository", "replicas": 0}], "positive integer"),
        ([{"name": "c", "kind": "command"}], "needs 'argv'"),
        ([{"name": "c", "kind": "command", "argv": ["x"], "colour": "red"}], "unknown keys"),
        ([{"name": "c", "kind": "command", "argv": ["x"]}, {"name": "c", "kind": "command", "argv": ["y"]}], "used twice"),
    ],
)
def test_mistakes_are_refused_with_the_service_and_key(services, message):
    with pytest.raises(StackConfigError, match=message):
        parse_stack_config({"services": services}, REPO_ROOT)


def test_a_file_without_services_is_refused():
    with pytest.raises(StackConfigError, match="'services' list"):
        parse_stack_config({"name": "x"}, REPO_ROOT)
