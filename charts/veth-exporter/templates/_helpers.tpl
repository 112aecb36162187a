{{/* The release's full name: the release name, unless it already holds the chart's. */}}
{{- define "veth-exporter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels every object carries. */}}
{{- define "veth-exporter.labels" -}}
{{ include "veth-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels that select the exporter's pods. */}}
{{- define "veth-exporter.selectorLabels" -}}
app.kubernetes.io/name: veth-exporter
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "veth-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "veth-exporter.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Whether the remediation method releases namespaces (auto, release). */}}
{{- define "veth-exporter.releases" -}}
{{- if and .Values.remediation.enabled (ne .Values.remediation.method "delete") -}}true{{- end -}}
{{- end -}}
