"""`tritonfleet gateway`: run the request-level gRPC gateway in front of Triton pods."""

from __future__ import annotations

import argparse
import sys

from gateway import config as config_module


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the gRPC gateway that balances every request over the Triton pods",
        description="Request-level KServe v2 gRPC gateway. Settings come from --config (YAML), then "
                    f"{config_module.ENV_PREFIX}<KEY> environment variables, then these flags.",
        epilog="example:\n  tritonfleet gateway --backend 127.0.0.1:8101 --backend 127.0.0.1:8201 "
               "--listen 127.0.0.1:8001 --metrics-port 9101\n  tritonfleet gateway --config gateway/gateway.example.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of gateway settings (every key: gateway/gateway.example.yaml)")
    parser.add_argument("--listen", help="host:port for clients (default 127.0.0.1:8001)")
    parser.add_argument("--backend", dest="backends", action="append",
                        help="a Triton pod host:port for static discovery (repeat the flag)")
    parser.add_argument("--discovery", choices=config_module.DISCOVERY_KINDS)
    parser.add_argument("--dns-target", help="headless Service name:port for dns discovery")
    parser.add_argument("--kubernetes-service", help="Service whose EndpointSlices list the pods")
    parser.add_argument("--kubernetes-namespace")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (0: off)")
    parser.add_argument("--workers", type=int, help="worker processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--allow-admin", action="store_true", default=None,
                        help="allow model load/unload (applied to every pod) and other admin calls")
    parser.add_argument("--drain-grace-s", type=float, help="seconds to finish in-flight work on SIGTERM")
    parser.add_argument("--log-level")
    _tls_args(parser)
    parser.set_defaults(func=run)


_TLS_KEYS = ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "reload_interval_s", "upstream_tls",
             "upstream_ca_file", "upstream_cert_file", "upstream_key_file", "upstream_server_name")


def _tls_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS", "toward clients (both files turn it on) and toward the pods")
    group.add_argument("--tls-cert-file", metavar="PEM", help="certificate chain clients are shown")
    group.add_argument("--tls-key-file", metavar="PEM", help="its private key")
    group.add_argument("--tls-client-ca-file", metavar="PEM", help="mutual TLS: clients need a certificate from this CA")
    group.add_argument("--reload-interval-s", type=float, help="how often the files are looked at for changes")
    group.add_argument("--upstream-tls", action="store_true", default=None, help="TLS to the pods (--grpc-use-ssl)")
    group.add_argument("--upstream-ca-file", metavar="PEM", help="CA of the pods' certificates (default: system roots)")
    group.add_argument("--upstream-cert-file", metavar="PEM", help="the gateway's client certificate for the pods")
    group.add_argument("--upstream-key-file", metavar="PEM", help="its private key")
    group.add_argument("--upstream-server-name", help="name checked in the pods' certificates (default: their host)")


def run(args: argparse.Namespace) -> int:
    overrides = {key: getattr(args, key, None) for key in (
        "listen", "backends", "discovery", "dns_target", "kubernetes_service", "kubernetes_namespace",
        "metrics_port", "workers", "allow_admin", "drain_grace_s", "log_level", *_TLS_KEYS)}
    try:
        config = config_module.load(args.config, overrides)
        from gateway.edge.tls import check_files

        check_files(config)
        if config.api_keys_file:  # a keys file that does not load stops the start, as a bad config does
            from gateway.edge.access import load_keys

            load_keys(config.api_keys_file)
    except (ValueError, OSError) as exc:
        print(f"tritonfleet gateway: {exc}", file=sys.stderr)
        return 2
    from gateway.server import run as run_gateway

    return run_gateway(config)
