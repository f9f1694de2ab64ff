{{/* The RayService's name; KubeRay names its services <name>-serve-svc and <name>-head-svc. */}}
{{- define "kaon.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kaon.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kaon.labels" -}}
{{ include "kaon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Ray Serve config file `kaon serve-config` prints for the same kaon config, with kaon's
cluster.node_types made from the worker groups so that kaon's placement checks see the real pods. */}}
{{- define "kaon.serveConfig" -}}
{{- $config := deepCopy .Values.kaon -}}
{{- $nodeTypes := list -}}
{{- range .Values.workerGroups -}}
{{- $nodeTypes = append $nodeTypes (dict "name" .name "gpus" (int .gpus) "max_nodes" (int .maxReplicas)) -}}
{{- end -}}
{{- $_ := set $config.cluster "node_types" $nodeTypes -}}
{{- $app := dict "name" ($config.cluster.app_name | default "kaon") "route_prefix" "/" "import_path" "kaon.deployments.app:app_builder" "args" (dict "config" $config) -}}
{{- toYaml (dict "http_options" (dict "host" $config.http.host "port" (int $config.http.port)) "applications" (list $app)) -}}
{{- end -}}

{{/* Every Ray container: kaon's Serve mode (deployments/serve_env.py), the HF token, the user's env. */}}
{{- define "kaon.env" -}}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
{{- with .Values.hfToken.secretName }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.hfToken.secretKey }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kaon.shmVolume" -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSize }}
{{- end -}}

{{- define "kaon.shmMount" -}}
- name: dshm
  mountPath: /dev/shm
{{- end -}}
