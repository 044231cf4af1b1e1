{{/* Chart name. */}}
{{- define "mcp-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (release-prefixed unless the release name already contains it). */}}
{{- define "mcp-injector.fullname" -}}
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

{{- define "mcp-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcp-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mcp-injector.labels" -}}
helm.sh/chart: {{ include "mcp-injector.chart" . }}
{{ include "mcp-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcp-sidecar-injector
{{- end }}

{{- define "mcp-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcp-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcp-injector.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end }}

{{/* Names of the TLS Secret, the webhook configuration, the cert-manager objects. */}}
{{- define "mcp-injector.tlsSecretName" -}}
{{- printf "%s-tls" (include "mcp-injector.fullname" .) }}
{{- end }}

{{- define "mcp-injector.webhookConfigName" -}}
{{- printf "%s-%s" (include "mcp-injector.fullname" .) .Release.Namespace | trunc 253 }}
{{- end }}

{{- define "mcp-injector.serviceDNS" -}}
{{- printf "%s.%s.svc" (include "mcp-injector.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
The chart-generated CA and serving certificate, as YAML {caCert, tlsCert, tlsKey} (base64).
Reused from the existing Secret when there is one (`lookup`; empty under `helm template` and
`--dry-run=client`), so `helm upgrade` keeps the certificate and the webhook's caBundle stable.
Included once per template file: the Secret and the webhook configuration share a file.
*/}}
{{- define "mcp-injector.generatedTLS" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "mcp-injector.tlsSecretName" .) }}
{{- if and $secret $secret.data (index $secret.data "ca.crt") (index $secret.data "tls.crt") (index $secret.data "tls.key") }}
caCert: {{ index $secret.data "ca.crt" }}
tlsCert: {{ index $secret.data "tls.crt" }}
tlsKey: {{ index $secret.data "tls.key" }}
{{- else }}
{{- $fullname := include "mcp-injector.fullname" . }}
{{- $days := int .Values.tls.generatedValidityDays }}
{{- $ca := genCA (printf "%s-ca" $fullname) $days }}
{{- $dns := list $fullname (printf "%s.%s" $fullname .Release.Namespace) (include "mcp-injector.serviceDNS" .) (printf "%s.cluster.local" (include "mcp-injector.serviceDNS" .)) }}
{{- $cert := genSignedCert (include "mcp-injector.serviceDNS" .) nil $dns $days $ca }}
caCert: {{ $ca.Cert | b64enc }}
tlsCert: {{ $cert.Cert | b64enc }}
tlsKey: {{ $cert.Key | b64enc }}
{{- end }}
{{- end }}

{{/* The operator's ServiceAccount (the only identity of the chart bound to RBAC). */}}
{{- define "mcp-injector.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "mcp-injector.fullname" .) | trunc 63 | trimSuffix "-") .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcp-injector.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-injector.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Namespaces the operator may act in when confined (operator.namespaces); kube-system and the
release namespace are refused: the operator never rewrites pod templates there.
*/}}
{{- define "mcp-injector.operatorNamespaces" -}}
{{- range .Values.operator.namespaces }}
{{- if or (eq . "kube-system") (eq . $.Release.Namespace) }}
{{- fail (printf "operator.namespaces must not list %s: the operator never acts in kube-system or the release namespace" .) }}
{{- end }}
{{- end }}
{{- toJson (uniq .Values.operator.namespaces) }}
{{- end }}

{{/* Flags of `mcp-sidecar operator`. */}}
{{- define "mcp-injector.operatorArgs" -}}
- {{ ternary "--companion-service" "--no-companion-service" .Values.operator.companionService }}
- {{ ternary "--heal" "--no-heal" .Values.operator.healing }}
- --exclude-namespace={{ .Release.Namespace }}
{{- range .Values.webhook.excludedNamespaces }}
- --exclude-namespace={{ . }}
{{- end }}
{{- range (include "mcp-injector.operatorNamespaces" . | fromJsonArray) }}
- --namespace={{ . }}
{{- end }}
{{- end }}

