{{/*
Envoy as the alternative data plane. The config is deploy/envoy/envoy.yaml (copied into files/ by
`tritonfleet render-dashboards`): STRICT_DNS on the headless Triton Service (every ready pod is a
host), LEAST_REQUEST per HTTP/2 stream, gRPC health checks, outlier detection, retries only for
calls that never reached a pod, no route timeout. Here the chart points its cluster at the rendered
headless Service, sets the listener port, and publishes /stats/prometheus on the metrics port while
the admin interface stays on loopback.
*/}}
{{- define "tritonfleet.envoyConfig" -}}
{{- $g := .Values.gateway }}
{{- $envoy := .Files.Get "files/envoy/envoy.yaml" | fromYaml }}
{{- $adminPort := int $envoy.admin.address.socket_address.port_value }}
{{- $listener := index $envoy.static_resources.listeners 0 }}
{{- $_ := set $listener.address.socket_address "port_value" (int $g.ports.grpc) }}
{{- $cluster := index $envoy.static_resources.clusters 0 }}
{{- $endpoint := index (index $cluster.load_assignment.endpoints 0).lb_endpoints 0 }}
{{- $_ := set $endpoint.endpoint.address.socket_address "address" (include "tritonfleet.triton.headlessHost" .) }}
{{- $_ := set $endpoint.endpoint.address.socket_address "port_value" (int .Values.triton.ports.grpc) }}
{{- $metrics := include "tritonfleet.envoyMetricsListener" (dict "port" $g.ports.metrics) | fromYaml }}
{{- $admin := include "tritonfleet.envoyAdminCluster" (dict "port" $adminPort) | fromYaml }}
{{- $_ := set $envoy.static_resources "listeners" (append $envoy.static_resources.listeners $metrics) }}
{{- $_ := set $envoy.static_resources "clusters" (append $envoy.static_resources.clusters $admin) }}
{{- toYaml $envoy }}
{{- end }}

{{/* A listener that serves only Envoy's Prometheus stats, proxied from the loopback admin port. */}}
{{- define "tritonfleet.envoyMetricsListener" -}}
name: metrics
address:
  socket_address: {address: 0.0.0.0, port_value: {{ .port }}}
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
{{- end }}

{{- define "tritonfleet.envoyAdminCluster" -}}
name: admin
type: STATIC
load_assignment:
  cluster_name: admin
  endpoints:
    - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: {{ .port }}}
{{- end }}
