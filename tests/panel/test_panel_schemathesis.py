"""Property-based tests of the JSON API from the OpenAPI description it serves (schemathesis):
every operation, with generated valid and invalid input, answers as the description says.

The schema is read from the running panel's /api/v1/openapi.json inside the test (schemathesis'
own pytest fixture loader does not work with this pytest), and each operation's cases are
drawn through Hypothesis with a small, fixed number of examples.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from panel_helpers import PanelNode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

# Kept small: the suite runs on two cores; each operation still sees valid and invalid input.
EXAMPLES_PER_OPERATION = 10
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance,
          content_type_conformance, response_schema_conformance]


def _for_each_operation(panel: PanelNode, examples: int,
                        body: Callable[[schemathesis.Case], None]) -> int:
    schema = schemathesis.openapi.from_url(f"{panel.url}/api/v1/openapi.json", verify=False)
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        count += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            body(case)

        try:
            run()
        except Exception as exc:
            raise AssertionError(f"{operation.method.upper()} {operation.path}: {exc}") from exc
    return count


def test_every_operation_answers_as_described(panel: PanelNode) -> None:
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {panel.token}"},
                               verify=False, timeout=60, checks=CHECKS)

    assert _for_each_operation(panel, EXAMPLES_PER_OPERATION, call) >= 25


def test_every_operation_refuses_a_request_without_a_token(panel: PanelNode) -> None:
    def call(case: schemathesis.Case) -> None:
        response = case.call(verify=False, timeout=60)
        assert response.status_code in (401, 422), (case.method, case.path, response.text)
        if response.status_code == 422:  # only when the request itself cannot be read
            assert case.path_parameters or case.query or case.body is not None

    _for_each_operation(panel, 2, call)
