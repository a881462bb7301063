"""What Schemathesis found against /api/v1/openapi.json (python -m bench.fuzz_api), each
reproduced: a 500 for a JSON body of the wrong shape on POST /layers, 405 answers without the
``Allow`` header, and answers the spec did not document."""

from __future__ import annotations

import pytest

from webapp.openapi import SPEC

pytestmark = pytest.mark.unit

DIFF_ID = "sha256:" + "ab" * 32


@pytest.mark.parametrize("body", [[None], [DIFF_ID], 3, "diff_ids", None, True])
def test_layers_with_a_json_body_that_is_no_object_is_a_400(client, as_user, body):
    resp = client.post("/api/v1/layers", json=body, headers=as_user("alice"))
    assert resp.status_code == 400
    assert "diff_ids" in resp.get_json()["error"]


def test_layers_still_answers_an_object(client, as_user, cluster):
    cluster.add_worker("w1")
    resp = client.post("/api/v1/layers", json={"diff_ids": [DIFF_ID]}, headers=as_user("alice"))
    assert resp.status_code == 200 and resp.get_json() == {"workers": []}


def test_a_405_of_the_api_names_the_allowed_methods(client, as_user):
    resp = client.put("/api/v1/jobs", headers=as_user("alice"))
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert resp.is_json and "error" in resp.get_json()
    resp = client.delete("/api/v1/me", headers=as_user("alice"))
    assert resp.status_code == 405 and "GET" in resp.headers["Allow"]


def test_a_405_of_a_page_names_the_allowed_methods_too(client):
    resp = client.put("/login")
    assert resp.status_code == 405
    assert {"GET", "POST"} <= set(resp.headers["Allow"].split(", "))
    assert resp.mimetype == "text/html"


def test_malformed_image_and_input_ids_are_400s_the_spec_documents(client, as_user):
    for path in ("/images/{image_id}", "/inputs/{input_id}"):
        resp = client.get("/api/v1" + path.split("{")[0] + "0", headers=as_user("alice"))
        assert resp.status_code == 400
        op = SPEC["paths"][path]["get"]
        assert "400" in op["responses"]
        assert op["parameters"][0]["schema"]["pattern"] == "^sha256:[0-9a-f]{64}$"


def test_every_operation_documents_the_answers_any_operation_may_give(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert "503" in codes, (method, path)  # etcd unavailable
            if op.get("security") != []:
                assert "401" in codes, (method, path)
            if "requestBody" in op:
                assert "413" in codes, (method, path)
    assert "400" in spec["paths"]["/jobs"]["get"]["responses"]  # limit=abc
    assert "head" in spec["paths"]["/jobs/{job_id}/output"]


def test_a_user_name_with_a_trailing_newline_is_refused(client, as_user, cluster):
    # Python's "$" matches before a final newline: "eve\n" passed the name check.
    resp = client.post("/api/v1/users", json={"username": "eve\n", "password": "eve-password-1"},
                       headers=as_user("root"))
    assert resp.status_code == 400
    assert cluster.store.get_user("eve\n") is None
    assert client.get("/api/v1/users/alice%0A/tokens", headers=as_user("root")).status_code == 404


def test_image_and_input_ids_with_a_trailing_newline_are_400s(client, as_user):
    for kind in ("images", "inputs"):
        resp = client.get(f"/api/v1/{kind}/sha256:{'ab' * 32}%0A", headers=as_user("alice"))
        assert resp.status_code == 400, kind
