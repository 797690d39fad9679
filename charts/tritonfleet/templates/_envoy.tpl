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
{{- if $g.tls.enabled }}
{{- $_ := set (index $listener.filter_chains 0) "transport_socket" (include "tritonfleet.envoyDownstreamTls" . | fromYaml) }}
{{- end }}
{{- if $g.upstreamTLS.enabled }}
{{- $_ := set $cluster "transport_socket" (include "tritonfleet.envoyUpstreamTls" . | fromYaml) }}
{{- end }}
{{- if or $g.tls.enabled $g.upstreamTLS.enabled }}
{{- /* SDS, even from files, needs the node to have an id and a cluster. */}}
{{- $_ := set $envoy "node" (dict "id" (include "tritonfleet.gateway.fullname" .) "cluster" (include "tritonfleet.gateway.fullname" .)) }}
{{- end }}
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

{{/*
Envoy's TLS. Certificates come through file-based SDS: each secret is a file in the ConfigMap that
names the mounted PEM files, and `watched_directory` on the Secret's mount makes Envoy re-read them
when the kubelet swaps the Secret's `..data` link (a cert-manager renewal), with no restart.
*/}}
{{- define "tritonfleet.envoySds" -}}
{{- $path := printf "/etc/envoy/%s" .file }}
name: {{ .name }}
sds_config:
  resource_api_version: V3
  path_config_source:
    path: {{ $path }}
    watched_directory: {path: /etc/envoy}
{{- end }}

{{/* The SDS files, keyed by their ConfigMap key. */}}
{{- define "tritonfleet.envoySdsFiles" -}}
{{- $g := .Values.gateway }}
{{- $files := dict }}
{{- $secret := "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret" }}
{{- if $g.tls.enabled }}
{{- $dir := include "tritonfleet.tlsDir" . }}
{{- $cert := dict "certificate_chain" (dict "filename" (printf "%s/tls.crt" $dir)) "private_key" (dict "filename" (printf "%s/tls.key" $dir)) "watched_directory" (dict "path" $dir) }}
{{- $_ := set $files "sds-gateway-tls.yaml" (dict "resources" (list (dict "@type" $secret "name" "gateway_tls" "tls_certificate" $cert))) }}
{{- if $g.tls.clientCA.enabled }}
{{- $ca := dict "trusted_ca" (dict "filename" (printf "%s/ca.crt" $dir)) "watched_directory" (dict "path" $dir) }}
{{- $_ := set $files "sds-client-ca.yaml" (dict "resources" (list (dict "@type" $secret "name" "client_ca" "validation_context" $ca))) }}
{{- end }}
{{- end }}
{{- if $g.upstreamTLS.enabled }}
{{- $dir := include "tritonfleet.upstreamTLSDir" . }}
{{- $cert := dict "certificate_chain" (dict "filename" (printf "%s/tls.crt" $dir)) "private_key" (dict "filename" (printf "%s/tls.key" $dir)) "watched_directory" (dict "path" $dir) }}
{{- $_ := set $files "sds-upstream-tls.yaml" (dict "resources" (list (dict "@type" $secret "name" "upstream_tls" "tls_certificate" $cert))) }}
{{- /* The pods are reached by IP: their certificate must name the headless Service. */}}
{{- $san := list (dict "san_type" "DNS" "matcher" (dict "exact" (include "tritonfleet.triton.headlessHost" .))) }}
{{- $ca := dict "trusted_ca" (dict "filename" (printf "%s/ca.crt" $dir)) "match_typed_subject_alt_names" $san "watched_directory" (dict "path" $dir) }}
{{- $_ := set $files "sds-upstream-ca.yaml" (dict "resources" (list (dict "@type" $secret "name" "upstream_ca" "validation_context" $ca))) }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{/* DownstreamTlsContext of the gRPC listener: h2 by ALPN, TLS 1.2+, client certificates under mTLS. */}}
{{- define "tritonfleet.envoyDownstreamTls" -}}
{{- $g := .Values.gateway }}
name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
  {{- if $g.tls.clientCA.enabled }}
  require_client_certificate: true
  {{- end }}
  common_tls_context:
    alpn_protocols: [h2]
    tls_params: {tls_minimum_protocol_version: TLSv1_2}
    tls_certificate_sds_secret_configs:
      - {{- include "tritonfleet.envoySds" (dict "name" "gateway_tls" "file" "sds-gateway-tls.yaml") | nindent 8 }}
    {{- if $g.tls.clientCA.enabled }}
    validation_context_sds_secret_config:
      {{- include "tritonfleet.envoySds" (dict "name" "client_ca" "file" "sds-client-ca.yaml") | nindent 6 }}
    {{- end }}
{{- end }}

{{/* UpstreamTlsContext toward the Triton pods: Envoy's client certificate, the pods' CA and name. */}}
{{- define "tritonfleet.envoyUpstreamTls" -}}
name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
  sni: {{ include "tritonfleet.triton.headlessHost" . }}
  common_tls_context:
    alpn_protocols: [h2]
    tls_params: {tls_minimum_protocol_version: TLSv1_2}
    tls_certificate_sds_secret_configs:
      - {{- include "tritonfleet.envoySds" (dict "name" "upstream_tls" "file" "sds-upstream-tls.yaml") | nindent 8 }}
    validation_context_sds_secret_config:
      {{- include "tritonfleet.envoySds" (dict "name" "upstream_ca" "file" "sds-upstream-ca.yaml") | nindent 6 }}
{{- end }}

{{/* Envoy's Secret mounts, at the same paths as the gateway's. */}}
{{- define "tritonfleet.envoy.volumeMounts" -}}
{{- $g := .Values.gateway }}
{{- if $g.tls.enabled }}
- name: gateway-tls
  mountPath: {{ include "tritonfleet.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if $g.upstreamTLS.enabled }}
- name: upstream-tls
  mountPath: {{ include "tritonfleet.upstreamTLSDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "tritonfleet.envoy.volumes" -}}
{{- $g := .Values.gateway }}
{{- if $g.tls.enabled }}
- name: gateway-tls
  secret:
    secretName: {{ include "tritonfleet.gateway.tlsSecretName" . }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      {{- if $g.tls.clientCA.enabled }}
      - {key: ca.crt, path: ca.crt}
      {{- end }}
{{- end }}
{{- if $g.upstreamTLS.enabled }}
- name: upstream-tls
  secret:
    secretName: {{ $g.upstreamTLS.secretName }}
{{- end }}
{{- end }}
