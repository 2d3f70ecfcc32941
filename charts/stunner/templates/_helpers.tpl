{{/* Labels on every object of the release. */}}
{{- define "stunner.labels" -}}
app.kubernetes.io/name: stunner
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The stunnerd pods: app=stunner is what PodMonitors and the Service select. */}}
{{- define "stunner.selectorLabels" -}}
app: stunner
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The label that marks stunnerd pods whose metrics port is open. */}}
{{- define "stunner.metricsLabel" -}}
stunner.l7mp.io/metrics: enabled
{{- end }}

{{- define "stunner.operatorSelectorLabels" -}}
app: stunner-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stunner.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Kubernetes transport of a TURN listener protocol. */}}
{{- define "stunner.transport" -}}
{{- if has . (list "UDP" "DTLS") }}UDP{{ else }}TCP{{ end }}
{{- end }}
