"""Every HTTP error has one shape: JSON {"error": message[, "field": name]}, UTF-8."""

from __future__ import annotations

import json

from aiohttp import web

from ctiserver.http.errors import error_response, json_error


def test_an_error_to_raise_carries_the_message_the_field_and_its_headers() -> None:
    error = json_error(
        web.HTTPTooManyRequests, "稍后再试", field="login", headers={"Retry-After": "5"}
    )
    assert isinstance(error, web.HTTPTooManyRequests) and error.status == 429
    assert error.content_type == "application/json" and error.charset == "utf-8"
    assert error.text is not None and "稍后再试" in error.text  # not \\u escapes
    assert json.loads(error.text) == {"error": "稍后再试", "field": "login"}
    assert error.headers["Retry-After"] == "5"


def test_an_error_to_return_has_the_same_body() -> None:
    response = error_response(404, "no customer 7")
    assert response.status == 404 and response.content_type == "application/json"
    assert response.text is not None and json.loads(response.text) == {"error": "no customer 7"}
