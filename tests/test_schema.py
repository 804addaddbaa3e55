"""The OpenAPI schema teaches: it is a valid OpenAPI document, every answer and form field has an
example that its own schema accepts, and ``error_code`` lists exactly the codes the service sends."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from api.core.config import Settings
from api.main import create_app
from api.schemas import ErrorCode

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(max_upload_mb=2.0))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def schema(client: TestClient) -> dict:
    return client.get("/openapi.json").json()


def validator(schema: dict, component: str) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator of ``#/components/schemas/<component>``, its references resolved in
    ``schema`` (OpenAPI 3.1's schemas are JSON Schema 2020-12)."""
    registry = Registry().with_resource("urn:openapi", Resource(contents=schema, specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:openapi#/components/schemas/{component}"}, registry=registry)


def test_the_schema_is_valid_openapi(schema: dict) -> None:
    validate(schema)
    assert schema["openapi"].startswith("3.1")


def test_every_component_example_fits_its_schema(schema: dict) -> None:
    with_examples = {name: body for name, body in schema["components"]["schemas"].items() if "examples" in body}
    expected = {"PredictResponse", "BatchResponse", "HealthResponse", "InfoResponse", "RootResponse",
                "ErrorResponse", "SessionCreated", "SessionOut", "ChunkResponse"}
    assert expected <= set(with_examples), expected - set(with_examples)
    for name, body in with_examples.items():
        check = validator(schema, name)
        for value in body["examples"]:
            errors = sorted(check.iter_errors(value), key=str)
            assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_every_operation_answers_and_asks_with_examples(schema: dict) -> None:
    components = schema["components"]["schemas"]

    def resolved(node: dict) -> dict:
        return components[node["$ref"].split("/")[-1]] if "$ref" in node else node

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for status, answer in operation["responses"].items():
                content = answer.get("content", {}).get("application/json")
                if content is None or status == "422":  # 204 has no body; 422 is FastAPI's validation model
                    continue
                body = resolved(content["schema"])
                assert "examples" in body or "example" in content, f"{where} {status}: no example"
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form is not None:
                for name, field in resolved(form["schema"])["properties"].items():
                    is_file = "contentMediaType" in field or "contentMediaType" in field.get("items", {})
                    assert is_file or "examples" in field, f"{where}: form field {name} has no example"
            for parameter in operation.get("parameters", []):
                assert "examples" in parameter["schema"] or "example" in parameter, f"{where}: {parameter['name']}"


SOURCES = [*REPO.glob("api/**/*.py"), *REPO.glob("soundsentry/**/*.py")]
# error_code="x" / error_code = "x" / error_response(404, "x", ...) / _answer(..., "x", ...) / _error("x", ...)
CODE_PATTERNS = (
    re.compile(r"error_code\s*=\s*\"([a-z_]+)\""),
    re.compile(r"error_response\(\s*\d{3},\s*\"([a-z_]+)\""),
    re.compile(r"_error\(\s*\"([a-z_]+)\""),
    re.compile(r"_answer\([^\"]*?\d{3},\s*\"([a-z_]+)\""),
)


def codes_in_sources() -> set[str]:
    found = set()
    for path in SOURCES:
        text = path.read_text()
        for pattern in CODE_PATTERNS:
            found |= set(pattern.findall(text))
    return found


def test_error_code_lists_every_code_the_service_sends() -> None:
    listed = set(typing.get_args(ErrorCode))
    sent = codes_in_sources()
    assert len(sent) > 20, sorted(sent)  # the scan itself works
    assert sent <= listed, f"not in ErrorCode: {sorted(sent - listed)}"
    documented = (REPO / "docs" / "SERVICE.md").read_text()
    undocumented = sorted(code for code in listed if f"`{code}`" not in documented)
    assert not undocumented, f"not in docs/SERVICE.md's table: {undocumented}"


def test_live_answers_fit_the_schema(client: TestClient, schema: dict, speech_wav: Path) -> None:
    """Not only the examples: what the server answers now, errors included, validates."""
    def check(component: str, body: dict) -> None:
        errors = list(validator(schema, component).iter_errors(body))
        assert not errors, f"{component}: {errors[0].message}"

    check("RootResponse", client.get("/").json())
    check("InfoResponse", client.get("/info").json())
    check("HealthResponse", client.get("/health").json())
    with speech_wav.open("rb") as handle:
        check("PredictResponse", client.post("/predict", files={"audio": ("speech.wav", handle)}).json())
    for answer in (client.post("/predict", files={"audio": ("notes.txt", b"plain text")}),
                   client.get("/no-such-path"), client.post("/predict"),
                   client.get("/sessions/" + "A" * 24), client.delete("/info")):
        assert answer.status_code >= 400
        check("ErrorResponse", answer.json())
