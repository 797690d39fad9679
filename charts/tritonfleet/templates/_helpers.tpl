{{/* The chart name, overridable; 63 characters is the DNS label limit Kubernetes names must fit. */}}
{{- define "tritonfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified prefix of every object name; the release name alone when it already holds the chart name. */}}
{{- define "tritonfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Component names, truncated so the suffix survives the 63-character limit. */}}
{{- define "tritonfleet.triton.fullname" -}}
{{- printf "%s-triton" (include "tritonfleet.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}
{{- define "tritonfleet.gateway.fullname" -}}
{{- printf "%s-gateway" (include "tritonfleet.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
{{- define "tritonfleet.loadtest.fullname" -}}
{{- printf "%s-loadtest" (include "tritonfleet.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* Labels on every object; the chart version lives here and never in selectors, which are immutable. */}}
{{- define "tritonfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tritonfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritonfleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (pass dict "ctx" $ "component" "triton"): stable across upgrades. */}}
{{- define "tritonfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonfleet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image reference; the tag defaults to the appVersion so an install is reproducible. */}}
{{- define "tritonfleet.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag }}
{{- if eq (toString $tag) "latest" }}
{{- fail (printf "image %s: the tag `latest` is not reproducible; pin a version" .image.repository) }}
{{- end }}
{{- printf "%s:%s" .image.repository (toString $tag) }}
{{- end }}

{{/* Name of the gateway's ServiceAccount. */}}
{{- define "tritonfleet.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- include "tritonfleet.gateway.fullname" . }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Whether to render Prometheus Operator objects: forced by the value, or `auto` when the CRDs exist. */}}
{{- define "tritonfleet.prometheusOperator" -}}
{{- $mode := toString .Values.monitoring.prometheusOperator }}
{{- if eq $mode "true" }}true
{{- else if and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}true
{{- end }}
{{- end }}

{{/* Labels of Prometheus Operator objects: `release` is what kube-prometheus-stack selects on. */}}
{{- define "tritonfleet.monitoringLabels" -}}
{{ include "tritonfleet.labels" . }}
{{- with .Values.monitoring.release }}
release: {{ . }}
{{- end }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Triton's in-cluster DNS name: the headless Service resolves to every ready pod. */}}
{{- define "tritonfleet.triton.headlessHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "tritonfleet.triton.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Grace period: the preStop sleep plus Triton's exit timeout, plus a margin for the process to exit. */}}
{{- define "tritonfleet.triton.gracePeriod" -}}
{{- $t := .Values.triton }}
{{- $floor := add $t.preStopSleepSeconds $t.exitTimeoutSeconds }}
{{- if eq (int $t.terminationGracePeriodSeconds) 0 }}
{{- add $floor 10 }}
{{- else if le (int $t.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "triton.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + exitTimeoutSeconds (%d), or Kubernetes kills Triton mid-drain" (int $t.terminationGracePeriodSeconds) (int $floor)) }}
{{- else }}
{{- $t.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The gateway's gRPC address inside the cluster, for the load-test Job and the helm test pod. */}}
{{- define "tritonfleet.gateway.address" -}}
{{- printf "%s.%s.svc.cluster.local:%v" (include "tritonfleet.gateway.fullname" .) .Release.Namespace .Values.gateway.service.port }}
{{- end }}
