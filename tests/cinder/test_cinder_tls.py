"""The driver against an appliance serving its API over HTTPS (self-signed certificate)."""

from __future__ import annotations

import subprocess

import pytest

from cinder import exception

from conftest import fresh_group, make_driver, start_appliance, stop_appliance


@pytest.fixture(scope="module")
def tls_appliance(tmp_path_factory, cinder_conf):
    base = tmp_path_factory.mktemp("tls-appliance")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    appliance = start_appliance(base, extra_args=["--tls-cert", str(cert), "--tls-key", str(key)])
    yield appliance, cert
    stop_appliance(appliance)


def test_https_appliance_with_its_ca_file(tls_appliance):
    appliance, cert = tls_appliance
    assert appliance.url.startswith("https://")
    driver = make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                         acmenfs_api_ca_file=str(cert))
    driver.check_for_setup_error()


def test_https_appliance_unverified_certificate_is_refused_clearly(tls_appliance):
    appliance, _ = tls_appliance
    driver = make_driver(fresh_group(), setup=False, acmenfs_api_url=appliance.url,
                         acmenfs_api_token=appliance.token)
    with pytest.raises(exception.VolumeBackendAPIException, match="TLS error"):
        driver.do_setup(None)


def test_https_appliance_with_verification_off(tls_appliance):
    appliance, _ = tls_appliance
    driver = make_driver(fresh_group(), acmenfs_api_url=appliance.url, acmenfs_api_token=appliance.token,
                         acmenfs_api_verify_tls=False)
    assert driver.get_volume_stats(refresh=True)["pools"]
