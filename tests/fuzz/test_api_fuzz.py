"""Schemathesis against the JSON API's OpenAPI document, the short run CI makes: the Flask app
through WSGI on the in-memory etcd of tests/unit/conftest.py, a fixed seed, a few examples per
operation and mode. No 5xx, and every response's status, content type and body as the spec
says. The full run over HTTPS on an all-in-one cluster is ``python -m bench.fuzz_api``; the
machinery is in tests/fuzz/api_contract.py."""

from __future__ import annotations

import pytest
import schemathesis

from tests.fuzz import api_contract
from tests.unit.conftest import app, as_user, client, cluster  # noqa: F401 (fixtures)

pytestmark = pytest.mark.unit

EXAMPLES = 8
SEED = 11


def _drain(source, size: int) -> None:
    while source.read(1 << 16):  # the upload's validating reader refuses a bad archive midway
        pass


def _accept_uploads(links) -> None:
    """Give the file links of conftest.py a worker inbox that takes uploads and throws them away."""
    links.upload = lambda job_id, source, size: _drain(source, size)
    links.upload_input = lambda upload_id, source, size: _drain(source, size)
    links.commit_input = links.remove_upload = links.remove_input_part = lambda *args: None


def test_every_response_matches_the_spec(app, as_user, cluster, monkeypatch):  # noqa: F811
    monkeypatch.setattr("webapp.api.EVENTS_MAX_S", 0.0)  # GET /events: the stream ends at once
    _accept_uploads(cluster.links)
    cluster.add_worker("w1")
    cluster.add_job("alice")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    user, throwaway, admin = as_user("alice"), as_user("bob"), as_user("root")

    def call(case, label):
        if label.endswith("(admin)"):
            return case.call(headers=admin)
        return case.call(headers=throwaway if label in api_contract.THROWAWAY else user)

    tallies = [api_contract.fuzz_operation(op, EXAMPLES, SEED, call)
               for op in api_contract.operations(schema)]
    tallies += [api_contract.fuzz_operation(op, EXAMPLES, SEED, call, as_admin=True)
                for op in api_contract.admin_operations(schema)]
    problems = [f for t in tallies for f in t.failures] + [e for t in tallies for e in t.errors]
    assert sum(t.examples for t in tallies) > len(tallies) * EXAMPLES
    assert not problems, "\n".join(problems)
