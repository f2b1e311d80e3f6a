"""Paths that would leave /v1/ with an account's credential: dot segments, plain or encoded, are refused."""

import json

import pytest

from shunt_lib.errors import BadRequest
from shunt_lib.paths_policy import check_path


def test_dot_segments_plain_or_encoded_are_refused():
    for ok in ("/v1/messages", "/v1/models/claude-3.5-sonnet", "/v1/files/file_01.txt", "/v1/x%20y", "/"):
        check_path(ok)
    for bad in ("/v1/../x", "/v1/..", "/v1/./messages", "/v1/%2e%2e/x", "/v1/%2E%2e/x", "/v1/.%2e/x",
                "/v1/%252e%252e/x", "/v1/..%2fx", "/v1/..%2Fx", "/v1/..;/x", "/v1/..\\x", "/v1/%5c..%5cx",
                "/v1/a%2f..%2f..%2fx"):
        with pytest.raises(BadRequest):
            check_path(bad)


def error_type(body: bytes) -> str:
    doc = json.loads(body)
    assert doc["type"] == "error" and doc["error"]["message"]
    return doc["error"]["type"]


def test_dot_segments_never_reach_the_upstream(make_proxy, upstream):
    p = make_proxy([("a", "oauth")])
    for path in ("/v1/../x", "/v1/%2e%2e/x", "/v1/..%2fx", "/v1/messages/../../api/oauth/usage"):
        status, _, body = p.request("GET", path)
        assert status == 400 and error_type(body) == "invalid_request_error", path
    assert upstream.received == []
    assert p.request("GET", "/v1/models")[0] == 200
