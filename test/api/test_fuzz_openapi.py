"""Schema-driven fuzzing of the whole API: schemathesis reads `/openapi.json` and sends generated
requests (valid and deliberately invalid ones) to every operation, in process over ASGI.

Asserted for every response: no 5xx other than a 501 the operation declares, a status code the
operation declares, a content type it declares, and a body valid against the declared schema.
Generation limits are lowered for the run (64x64 pixels, 2 steps, 2 images) so that the valid
requests the fuzzer finds run real, tiny jobs and the test stays within a few minutes on 2 cores.
The number of requests sent is printed at the end of the session (`-s`), see docs/hardening.md.
"""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from modules.runtime import job_service  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                               status_code_conformance)

FUZZ_LIMITS = {"api_max_pixels": 64 * 64, "api_max_steps": 2, "api_max_batch_images": 2}
EXAMPLES_PER_OPERATION = {"positive": 25, "negative": 15}
SENT: dict[str, int] = {"requests": 0, "operations": 0}


@pytest.fixture(scope="module")
def fuzz_schema(api_app, api_runtime):
    """The API's own /openapi.json, with the request limits lowered for the run."""
    opts = api_runtime.opts
    saved = dict(opts.data)
    opts.data.update(FUZZ_LIMITS)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    yield schema
    service = job_service.current()
    for job_id in service.store.pending_ids():  # jobs the fuzzer queued and nobody waits for
        service.cancel(job_id)
    opts.data.clear()
    opts.data.update(saved)
    print(f"\nAPI fuzz: {SENT['requests']} requests to {SENT['operations']} operations of /openapi.json")


def check_response(case, response) -> None:
    """No 5xx but a declared 501; declared status, content type and body schema."""
    declared = set(case.operation.definition.raw.get("responses", {}))
    if response.status_code >= 500:
        assert response.status_code == 501 and "501" in declared, (
            f"{case.method} {case.formatted_path} answered {response.status_code}: {response.text[:500]}")
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                             response_schema_conformance])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_answers_as_documented(fuzz_schema, api_runtime, mode):
    """Up to EXAMPLES_PER_OPERATION generated requests per operation; every failure is collected so
    one run lists all of them (first failing request per operation)."""
    opts = api_runtime.opts
    failures: dict[str, str] = {}
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 40  # every /sdapi/v1 route and /internal
    for operation in operations:
        SENT["operations"] += mode == "positive"

        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=EXAMPLES_PER_OPERATION[mode], deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def one_request(case):
            if operation.label in failures:
                return
            before = dict(opts.data)
            try:
                response = case.call()
            finally:  # POST /options may change settings: every request starts from the same ones
                opts.data.clear()
                opts.data.update(before)
                job_service.current().resume()  # a fuzzed queue/pause must not stall later jobs
            SENT["requests"] += 1
            try:
                check_response(case, response)
            except Exception as e:  # noqa: BLE001 - collected and reported together below
                failures[operation.label] = f"{type(e).__name__}: {str(e)[:800]}\n  request: {case.as_curl_command()[:600]}"

        try:
            one_request()
        except Unsatisfiable:  # negative mode: an operation without parameters or body has nothing to break
            assert mode == "negative", operation.label
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in failures.items())
