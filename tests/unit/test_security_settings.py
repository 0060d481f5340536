"""The settings the trust model (docs/security.md) rests on: what an admin allows, from flags or
from the one ConfigMap the manifests feed into the environment."""

from __future__ import annotations

from aimd.settings import DEFAULT_ALLOWED_ENDPOINTS, Settings


def test_by_default_only_the_controllers_image_the_public_hub_and_aws() -> None:
    settings = Settings.parse([], environ={})
    assert settings.allowed_download_images == ()
    assert settings.allowed_endpoints == DEFAULT_ALLOWED_ENDPOINTS
    assert DEFAULT_ALLOWED_ENDPOINTS == ("https://huggingface.co", "https://*.amazonaws.com")
    assert settings.require_secret_consent is False
    assert settings.namespaces == ()


def test_metrics_are_secure_unless_switched_off() -> None:
    assert Settings.parse([], environ={}).metrics_secure is True
    assert Settings.parse(["--metrics-secure=false"], environ={}).metrics_secure is False
    plain = Settings.parse([], environ={"AIMD_METRICS_SECURE": "false"})
    assert plain.metrics_secure is False
    certs = Settings.parse(["--metrics-cert-path", "/certs", "--metrics-cert-name", "c.pem"], {})
    assert (certs.metrics_cert_path, certs.metrics_cert_name) == ("/certs", "c.pem")
    assert certs.metrics_cert_key == "tls.key"


def test_lists_are_comma_separated_in_flags_and_environment() -> None:
    environ = {
        "AIMD_ALLOWED_DOWNLOAD_IMAGES": " registry.example/aimd:1 ,, registry.example/fetch:2",
        "AIMD_ALLOWED_ENDPOINTS": "https://huggingface.co,http://minio.storage.svc:9000",
        "AIMD_NAMESPACES": "",
        "AIMD_REQUIRE_SECRET_CONSENT": "true",
    }
    settings = Settings.parse([], environ=environ)
    assert settings.allowed_download_images == (
        "registry.example/aimd:1",
        "registry.example/fetch:2",
    )
    assert settings.allowed_endpoints == ("https://huggingface.co", "http://minio.storage.svc:9000")
    assert settings.namespaces == ()
    assert settings.require_secret_consent is True
    flags = Settings.parse(["--namespaces=team-a,team-b", "--require-secret-consent"], environ)
    assert flags.namespaces == ("team-a", "team-b")
    assert flags.require_secret_consent is True
    assert Settings.parse(["--allowed-endpoints="], environ).allowed_endpoints == ()
