"""The OpenAPI schema documents what the server answers: the one error shape (never FastAPI's 422),
/clone_voice as one form model, and the plugins' request fields on every synthesis body."""

from __future__ import annotations

from flashtts_server.app import create_app
from flashtts_server.settings import settings_model


def _schema() -> dict:
    return create_app(settings_model()()).openapi()


def test_every_api_operation_documents_the_error_model_and_no_422():
    spec = _schema()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if operation.get("tags") == ["server"]:  # probes and metrics
                continue
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            for status in ("400", "4XX"):
                ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (method, path, status)
            checked += 1
    assert checked >= 18  # native and roles at / and /v1, the OpenAI routes
    error = spec["components"]["schemas"]["ErrorDetail"]["properties"]
    assert set(error) == {"message", "type", "param", "code"}


def test_clone_voice_is_one_form_model_with_the_plugins_fields():
    spec = _schema()
    schemas = spec["components"]["schemas"]
    # The multipart body is one model: the form's fields and the two uploads.
    clone = spec["paths"]["/clone_voice"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = schemas[clone.rsplit("/", 1)[1]]["properties"]
    assert form["reference_audio_file"]["anyOf"][0]["contentMediaType"] == "application/octet-stream"
    assert form["latent_file"]["anyOf"][0]["contentMediaType"] == "application/octet-stream"
    # every field /clone_voice documents in server-api.md §4.1, plus MegaTTS3's own (declared in flashtts-mega)
    for name in ("text", "reference_audio", "reference_text", "pitch", "speed", "temperature", "top_k", "top_p",
                 "repetition_penalty", "max_tokens", "length_threshold", "window_size", "stream", "response_format",
                 "time_step", "p_w", "t_w"):  # fmt: skip
        assert name in form, name
    assert form["time_step"]["anyOf"][0]["maximum"] == 128 and form["time_step"]["x-flashtts-scope"] == "request"
    for body in ("SpeakRequest", "MultiSpeakRequest", "SpeechRequest"):
        assert {"time_step", "p_w", "t_w"} <= set(schemas[body]["properties"]), body
