{{/*
Envoy as the alternative data plane: STRICT_DNS on the headless Triton Service (every ready pod is a
host), LEAST_REQUEST per HTTP/2 stream, gRPC health checks, outlier detection, retries on errors that
never reached a model, and no route timeout so long-lived video streams stay open. The admin
interface stays on loopback; only /stats/prometheus is published, on the metrics port.
*/}}
{{- define "tritonfleet.envoyConfig" -}}
{{- $g := .Values.gateway -}}
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: 9901}
static_resources:
  listeners:
    - name: grpc
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ $g.ports.grpc }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: grpc
                codec_type: AUTO
                # Camera streams may be quiet for a while; never cut them for idleness.
                stream_idle_timeout: 0s
                http2_protocol_options:
                  max_concurrent_streams: 1024
                route_config:
                  name: triton
                  virtual_hosts:
                    - name: triton
                      domains: ["*"]
                      routes:
                        - match: {prefix: "/"}
                          route:
                            cluster: triton
                            timeout: 0s
                            retry_policy:
                              retry_on: connect-failure,refused-stream,unavailable,reset-before-request
                              num_retries: 2
                              retry_host_predicate:
                                - name: envoy.retry_host_predicates.previous_hosts
                                  typed_config:
                                    "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    - name: metrics
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ $g.ports.metrics }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: metrics
                route_config:
                  name: metrics
                  virtual_hosts:
                    - name: metrics
                      domains: ["*"]
                      routes:
                        - match: {path: /stats/prometheus}
                          route: {cluster: admin}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: triton
      type: STRICT_DNS
      dns_lookup_family: V4_ONLY
      dns_refresh_rate: 5s
      respect_dns_ttl: true
      lb_policy: LEAST_REQUEST
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options:
              max_concurrent_streams: 1024
      load_assignment:
        cluster_name: triton
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address:
                      address: {{ include "tritonfleet.triton.headlessHost" . }}
                      port_value: {{ .Values.triton.ports.grpc }}
      health_checks:
        - timeout: 1s
          interval: 2s
          unhealthy_threshold: 2
          healthy_threshold: 1
          grpc_health_check: {}
      outlier_detection:
        consecutive_5xx: 5
        consecutive_gateway_failure: 3
        interval: 5s
        base_ejection_time: 10s
        max_ejection_percent: 50
    - name: admin
      type: STATIC
      load_assignment:
        cluster_name: admin
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {address: 127.0.0.1, port_value: 9901}
{{- end }}
