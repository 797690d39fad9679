{{/*
The access layer: TLS toward clients and toward Triton, API keys, Triton's restricted admin protocols.
Every Secret is mounted read-only under /etc/tritonfleet/, at the paths the gateway's config names.
*/}}

{{/* Where the chart mounts each Secret (the gateway, Envoy, Triton and the chart's clients alike). */}}
{{- define "tritonfleet.tlsDir" -}}/etc/tritonfleet/tls{{- end }}
{{- define "tritonfleet.upstreamTLSDir" -}}/etc/tritonfleet/upstream-tls{{- end }}
{{- define "tritonfleet.apiKeysDir" -}}/etc/tritonfleet/api-keys{{- end }}
{{- define "tritonfleet.clientTokenDir" -}}/etc/tritonfleet/client-token{{- end }}

{{/* The client-facing TLS Secret: the one named, or the one the chart's Certificate writes. */}}
{{- define "tritonfleet.gateway.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "tritonfleet.gateway.fullname" .)) .Values.gateway.tls.secretName }}
{{- end }}

{{/* The Secret holding the restricted-protocol header value. */}}
{{- define "tritonfleet.triton.adminSecretName" -}}
{{- default (printf "%s-admin" (include "tritonfleet.triton.fullname" .)) .Values.triton.restrictedProtocols.secretName }}
{{- end }}

{{/* Names the gateway Service answers to inside the cluster: the certificate's default DNS names. */}}
{{- define "tritonfleet.gateway.dnsNames" -}}
{{- $svc := include "tritonfleet.gateway.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/* Values that cannot work together are refused here, before anything is rendered half-right. */}}
{{- define "tritonfleet.validateAccess" -}}
{{- $g := .Values.gateway }}
{{- if and $g.tls.enabled (not $g.tls.secretName) (not $g.tls.certManager.enabled) }}
{{- fail "gateway.tls.enabled needs gateway.tls.secretName (an existing kubernetes.io/tls Secret) or gateway.tls.certManager.enabled" }}
{{- end }}
{{- if and $g.tls.certManager.enabled (not $g.tls.enabled) }}
{{- fail "gateway.tls.certManager.enabled needs gateway.tls.enabled: the Certificate would be issued but never served" }}
{{- end }}
{{- if and $g.tls.certManager.enabled (not $g.tls.certManager.issuerRef.name) }}
{{- fail "gateway.tls.certManager.enabled needs gateway.tls.certManager.issuerRef.name (the Issuer or ClusterIssuer that signs the gateway's certificate)" }}
{{- end }}
{{- if and $g.tls.clientCA.enabled (not $g.tls.enabled) }}
{{- fail "gateway.tls.clientCA.enabled (mutual TLS) needs gateway.tls.enabled" }}
{{- end }}
{{- if and $g.upstreamTLS.enabled (not $g.upstreamTLS.secretName) }}
{{- fail "gateway.upstreamTLS.enabled needs gateway.upstreamTLS.secretName (a Secret with tls.crt, tls.key and ca.crt for Triton and the gateway)" }}
{{- end }}
{{- if and $g.upstreamTLS.enabled (not $g.enabled) }}
{{- fail "gateway.upstreamTLS.enabled needs gateway.enabled: Triton would accept only clients with a certificate from the Secret" }}
{{- end }}
{{- if $g.apiKeys.enabled }}
{{- if not $g.apiKeys.secretName }}
{{- fail "gateway.apiKeys.enabled needs gateway.apiKeys.secretName (an existing Secret with keys.yaml)" }}
{{- end }}
{{- if eq $g.mode "envoy" }}
{{- fail "gateway.apiKeys.enabled needs gateway.mode gateway: Envoy does not check tritonfleet's API keys" }}
{{- end }}
{{- if not $g.apiKeys.clientToken.secretName }}
{{- fail "gateway.apiKeys.enabled needs gateway.apiKeys.clientToken.secretName (a Secret with the bearer token the helm test and load-test Job send)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The restricted-protocol header value as a container env var, for `$(TRITON_ADMIN_HEADER_VALUE)`. */}}
{{- define "tritonfleet.adminHeaderEnv" -}}
- name: TRITON_ADMIN_HEADER_VALUE
  valueFrom:
    secretKeyRef:
      name: {{ include "tritonfleet.triton.adminSecretName" . }}
      key: header-value
{{- end }}

{{/* The gateway's config keys for the mounted Secrets (gateway/config.py). */}}
{{- define "tritonfleet.gateway.accessConfig" -}}
{{- $g := .Values.gateway }}
{{- $config := dict }}
{{- if $g.tls.enabled }}
{{- $_ := set $config "tls_cert_file" (printf "%s/tls.crt" (include "tritonfleet.tlsDir" .)) }}
{{- $_ := set $config "tls_key_file" (printf "%s/tls.key" (include "tritonfleet.tlsDir" .)) }}
{{- if $g.tls.clientCA.enabled }}
{{- $_ := set $config "tls_client_ca_file" (printf "%s/ca.crt" (include "tritonfleet.tlsDir" .)) }}
{{- end }}
{{- end }}
{{- if $g.upstreamTLS.enabled }}
{{- $dir := include "tritonfleet.upstreamTLSDir" . }}
{{- $_ := set $config "upstream_tls" true }}
{{- $_ := set $config "upstream_ca_file" (printf "%s/ca.crt" $dir) }}
{{- $_ := set $config "upstream_cert_file" (printf "%s/tls.crt" $dir) }}
{{- $_ := set $config "upstream_key_file" (printf "%s/tls.key" $dir) }}
{{- /* The pods are dialled by IP; their certificate names the headless Service. */}}
{{- $_ := set $config "upstream_server_name" (include "tritonfleet.triton.headlessHost" .) }}
{{- end }}
{{- if $g.apiKeys.enabled }}
{{- $_ := set $config "api_keys_file" (printf "%s/keys.yaml" (include "tritonfleet.apiKeysDir" .)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The gateway's projected config volume: its ConfigMap plus each Secret in its own folder. */}}
{{- define "tritonfleet.gateway.projectedSources" -}}
{{- $g := .Values.gateway }}
- configMap:
    name: {{ include "tritonfleet.gateway.fullname" . }}
{{- if $g.tls.enabled }}
- secret:
    name: {{ include "tritonfleet.gateway.tlsSecretName" . }}
    items:
      - {key: tls.crt, path: tls/tls.crt}
      - {key: tls.key, path: tls/tls.key}
      {{- if $g.tls.clientCA.enabled }}
      - {key: ca.crt, path: tls/ca.crt}
      {{- end }}
{{- end }}
{{- if $g.upstreamTLS.enabled }}
- secret:
    name: {{ $g.upstreamTLS.secretName }}
    items:
      - {key: tls.crt, path: upstream-tls/tls.crt}
      - {key: tls.key, path: upstream-tls/tls.key}
      - {key: ca.crt, path: upstream-tls/ca.crt}
{{- end }}
{{- if $g.apiKeys.enabled }}
- secret:
    name: {{ $g.apiKeys.secretName }}
    items:
      - {key: keys.yaml, path: api-keys/keys.yaml}
{{- end }}
{{- end }}

{{/* Whether the gateway needs Secrets next to its config (a projected volume instead of the ConfigMap). */}}
{{- define "tritonfleet.gateway.needsSecrets" -}}
{{- $g := .Values.gateway }}
{{- if or $g.tls.enabled $g.upstreamTLS.enabled $g.apiKeys.enabled }}true{{ end }}
{{- end }}

{{/*
The chart's own clients (helm test, load-test Job) against a gateway with TLS or keys: the CA (and,
under mutual TLS, the gateway's own certificate, which the CA signed) from the TLS Secret, and the
bearer token, as volume mounts, volumes and load-generator flags.
*/}}
{{- define "tritonfleet.client.volumeMounts" -}}
{{- $g := .Values.gateway }}
{{- if $g.tls.enabled }}
- name: gateway-tls
  mountPath: {{ include "tritonfleet.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if $g.apiKeys.enabled }}
- name: client-token
  mountPath: {{ include "tritonfleet.clientTokenDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "tritonfleet.client.volumes" -}}
{{- $g := .Values.gateway }}
{{- if $g.tls.enabled }}
- name: gateway-tls
  secret:
    secretName: {{ include "tritonfleet.gateway.tlsSecretName" . }}
    # A certificate from a public CA comes without ca.crt: the client then trusts the system roots.
    optional: true
    items:
      - {key: ca.crt, path: ca.crt}
      {{- if $g.tls.clientCA.enabled }}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      {{- end }}
{{- end }}
{{- if $g.apiKeys.enabled }}
- name: client-token
  secret:
    secretName: {{ $g.apiKeys.clientToken.secretName }}
    items:
      - key: {{ $g.apiKeys.clientToken.key }}
        path: token
{{- end }}
{{- end }}

{{/* The load generator's flags for the same (tritonfleet loadtest --tls-ca-file, --api-key-file). */}}
{{- define "tritonfleet.client.loadtestArgs" -}}
{{- $g := .Values.gateway }}
{{- $dir := include "tritonfleet.tlsDir" . }}
{{- if $g.tls.enabled }}
- --tls-ca-file={{ $dir }}/ca.crt
{{- if $g.tls.clientCA.enabled }}
- --tls-cert-file={{ $dir }}/tls.crt
- --tls-key-file={{ $dir }}/tls.key
{{- end }}
{{- end }}
{{- if $g.apiKeys.enabled }}
- --api-key-file={{ include "tritonfleet.clientTokenDir" . }}/token
{{- end }}
{{- end }}
