"""The agent's OpenAPI contract, fetched from a real agent (behind its token), fuzzed by schemathesis
against that agent: no answer is a 5xx, every answer to a request without the token is 401, and the
contract declares what the agent enforces (bearer auth, error bodies, path patterns)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from edgetune.device_agents.protocol import SHA256_PATTERN


@pytest.fixture(scope="module")
def contract(agent) -> dict:
    with httpx.Client(base_url=agent.url, timeout=30) as c:
        assert c.get("/openapi.json").status_code == 401  # the contract is behind the token too
        r = c.get("/openapi.json", headers={"Authorization": f"Bearer {agent.token}"})
    assert r.status_code == 200
    return r.json()


def test_the_contract_declares_what_the_agent_enforces(contract):
    assert contract["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "the token the agent was started with"}
    assert contract["security"] == [{"bearerAuth": []}] and contract["paths"]["/health"]["get"]["security"] == []
    put = contract["paths"]["/artifacts/{sha}"]["put"]
    assert put["parameters"][0]["schema"]["pattern"] == SHA256_PATTERN
    assert {"400", "401", "413", "415"} <= set(put["responses"])
    assert put["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "pattern" in contract["paths"]["/deployments/{name}"]["put"]["parameters"][0]["schema"]
    assert "HTTPValidationError" not in contract["components"]["schemas"]


def test_fuzzed_requests_never_get_a_server_error_and_401_without_the_token(agent, contract):
    """Every operation of the contract, 12 generated requests each (derandomized: the same ones every
    run), sent with the token and again without it."""
    from hypothesis import given

    schema = schemathesis.openapi.from_dict(contract)
    seen: dict[str, list[int]] = {}
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 12
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def run(case):
            with_token = case.call(base_url=agent.url, headers={"Authorization": f"Bearer {agent.token}"}, timeout=60)
            case.validate_response(with_token, checks=[not_a_server_error])
            seen.setdefault(f"{case.method} {case.path}", []).append(with_token.status_code)
            without = case.call(base_url=agent.url, headers={"Authorization": ""}, timeout=60)
            if case.path != "/health":
                assert without.status_code == 401, (case.method, case.formatted_path, without.status_code,
                                                    without.text[:200])

        run()
    assert all(code < 500 for codes in seen.values() for code in codes)
    print("\n" + "\n".join(f"  {k}: {sorted(set(v))}" for k, v in sorted(seen.items())))
