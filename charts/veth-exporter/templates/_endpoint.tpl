{{/* The scrape endpoint of the PodMonitor and the ServiceMonitor: TLS with
     remediation on, the node's name as label node. */}}
{{- define "veth-exporter.endpoint" -}}
{{- $m := index . 1 -}}
{{- with index . 0 -}}
- port: metrics
  path: /metrics
  interval: {{ $m.interval }}
  scrapeTimeout: {{ $m.scrapeTimeout }}
  {{- if .Values.remediation.enabled }}
  scheme: HTTPS
  tlsConfig:
    serverName: {{ .Values.remediation.tls.serverName }}
    ca:
      secret:
        name: {{ .Values.remediation.tls.secretName }}
        key: ca.crt
  {{- end }}
  relabelings:
    - sourceLabels: [__meta_kubernetes_pod_node_name]
      targetLabel: node
{{- end -}}
{{- end -}}
