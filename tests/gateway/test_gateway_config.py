"""The gateway configuration: YAML < environment < flags, validated once with clear messages."""

import pytest

from gateway import config


def test_layers_override_in_order(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("backends: [a:1, b:2]\nworkers: 2\nlisten: 0.0.0.0:9000\nretry_attempts: 1\n")
    loaded = config.load(path, overrides={"workers": 3, "listen": None},
                         environ={"TRITONFLEET_GATEWAY_RETRY_ATTEMPTS": "4", "TRITONFLEET_GATEWAY_ALLOW_ADMIN": "true"})
    assert loaded.backends == ("a:1", "b:2")
    assert (loaded.workers, loaded.listen, loaded.retry_attempts, loaded.allow_admin) == (3, "0.0.0.0:9000", 4, True)


def test_config_is_frozen():
    loaded = config.load(overrides={"backends": ["a:1"]}, environ={})
    with pytest.raises(Exception):
        loaded.workers = 4


@pytest.mark.parametrize("values, message", [
    ({"backends": ["a:1"], "colour": "red"}, "unknown keys"),
    ({}, "backends must list at least one"),
    ({"backends": ["nohost"]}, "must be host:port"),
    ({"backends": ["a:1"], "workers": "many"}, "workers must be of type int"),
    ({"backends": ["a:1"], "workers": 0}, "workers must be between"),
    ({"discovery": "dns"}, "dns_target must be name:port"),
    ({"discovery": "kubernetes"}, "kubernetes_service must name"),
    ({"backends": ["a:1"], "health_interval_s": 0}, "health_interval_s must be positive"),
    ({"backends": ["a:1"], "allow_admin": "perhaps"}, "allow_admin must be of type bool"),
    ({"backends": ["a:1"], "workers": 2, "listen": "127.0.0.1:0"}, "fixed port"),
    ({"backends": ["a:1"], "data_plane": "grpc"}, "unknown keys"),
    ({"backends": ["a:1"], "max_message_bytes": 2048, "max_buffered_bytes": 1024}, "max_buffered_bytes must be at least"),
    ({"backends": ["a:1"], "max_message_bytes": 1 << 31}, "max_message_bytes must be below 2 GiB"),
    ({"backends": ["a:1"], "max_concurrent_streams": 0}, "max_concurrent_streams must be positive"),
    ({"backends": ["a:1"], "max_header_list_bytes": 0}, "max_header_list_bytes must be positive"),
    ({"backends": ["a:1"], "client_keepalive_time_s": -1}, "client_keepalive_time_s must not be negative"),
    ({"backends": ["a:1"], "client_keepalive_timeout_s": 0}, "client_keepalive_timeout_s must be positive"),
    ({"backends": ["a:1"], "max_connection_age_s": -5}, "max_connection_age_s must not be negative"),
    ({"backends": ["a:1"], "max_queued_requests": -1}, "max_queued_requests must not be negative"),
    ({"backends": ["a:1"], "tls_cert_file": "c.pem"}, "tls_key_file must be set when tls_cert_file is"),
    ({"backends": ["a:1"], "tls_key_file": "k.pem"}, "tls_cert_file must be set when tls_key_file is"),
    ({"backends": ["a:1"], "tls_client_ca_file": "ca.pem"}, "tls_client_ca_file needs tls_cert_file"),
    ({"backends": ["a:1"], "reload_interval_s": 0}, "reload_interval_s must be positive"),
    ({"backends": ["a:1"], "upstream_ca_file": "ca.pem"}, "upstream_ca_file needs upstream_tls"),
    ({"backends": ["a:1"], "upstream_tls": True, "upstream_cert_file": "c.pem"},
     "upstream_key_file must be set when upstream_cert_file is"),
    ({"backends": ["a:1"], "triton_admin_header": "s3cret"}, "triton_admin_header must be key=value"),
    ({"backends": ["a:1"], "triton_admin_header": "Admin=s3cret"}, "triton_admin_header must be key=value"),
    ({"backends": ["a:1"], "triton_admin_header": "grpc-admin=s3cret"}, "triton_admin_header must be key=value"),
    ({"backends": ["a:1"], "triton_admin_header": "admin="}, "triton_admin_header must be key=value"),
])
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        config.from_mapping(values)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        config.load(path, environ={})


def test_the_example_file_holds_every_key_and_loads():
    from pathlib import Path

    import yaml

    example = Path(config.__file__).with_name("gateway.example.yaml")
    assert set(yaml.safe_load(example.read_text())) == set(config._FIELDS)  # noqa: SLF001
    loaded = config.load(example, environ={})
    assert (loaded.discovery, loaded.kubernetes_service, loaded.workers) == ("kubernetes", "triton", 2)


def test_tls_files_that_do_not_load_stop_the_start_naming_the_keys(tmp_path):
    from gateway.edge.tls import check_files

    (tmp_path / "cert.pem").write_text("not a certificate")
    loaded = config.from_mapping({"backends": ["a:1"], "tls_cert_file": str(tmp_path / "cert.pem"),
                                  "tls_key_file": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match="tls_cert_file, tls_key_file, tls_client_ca_file: the files did not load"):
        check_files(loaded)


def test_the_triton_admin_header_is_the_one_triton_asks_for_and_never_echoed():
    loaded = config.from_mapping({"backends": ["a:1"], "triton_admin_header": "tritonfleet-admin=s3cret"})
    assert loaded.triton_admin_metadata == (("triton-grpc-protocol-tritonfleet-admin", "s3cret"),)
    assert config.from_mapping({"backends": ["a:1"]}).triton_admin_metadata == ()
    with pytest.raises(ValueError) as refused:
        config.from_mapping({"backends": ["a:1"], "triton_admin_header": "Tritonfleet-Admin=s3cret"})
    assert "s3cret" not in str(refused.value)
