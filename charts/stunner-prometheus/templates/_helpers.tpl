{{/* Labels on every object of the release. */}}
{{- define "stunner-prometheus.labels" -}}
app.kubernetes.io/name: stunner-prometheus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The namespace of everything: kube-prometheus-stack's namespaceOverride. */}}
{{- define "stunner-prometheus.namespace" -}}
{{- $stack := index .Values "kube-prometheus-stack" -}}
{{- required "kube-prometheus-stack.namespaceOverride must name the monitoring namespace" $stack.namespaceOverride -}}
{{- end }}

{{/* The Prometheus object kube-prometheus-stack creates, as its pods are labelled. */}}
{{- define "stunner-prometheus.prometheusName" -}}
{{- $stack := index .Values "kube-prometheus-stack" -}}
{{- $fullname := required "kube-prometheus-stack.fullnameOverride is needed to find its Prometheus" $stack.fullnameOverride | trunc 26 | trimSuffix "-" -}}
{{- if $stack.cleanPrometheusOperatorObjectNames -}}
{{- $fullname -}}
{{- else -}}
{{- printf "%s-prometheus" $fullname -}}
{{- end -}}
{{- end }}

{{/* kube-prometheus-stack's Prometheus selects objects labelled release=<release> by default. */}}
{{- define "stunner-prometheus.selectedLabels" -}}
release: {{ .Release.Name }}
{{- end }}
