{{/*
Names. The full name is cut at 52 characters: a StatefulSet adds
"controller-revision-hash: <name>-<10 chars>" to its pods, and labels stop at 63.
*/}}
{{- define "kstreamlet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "kstreamlet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kstreamlet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kstreamlet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kstreamlet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kstreamlet.labels" -}}
helm.sh/chart: {{ include "kstreamlet.chart" . }}
{{ include "kstreamlet.selectorLabels" . }}
app.kubernetes.io/version: {{ include "kstreamlet.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: stream-processor
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kstreamlet.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "kstreamlet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kstreamlet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kstreamlet.headlessServiceName" -}}
{{- printf "%s-headless" (include "kstreamlet.fullname" .) }}
{{- end }}

{{- define "kstreamlet.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kstreamlet.fullname" .) }}
{{- end }}

{{/*
HTTP ports, one per forked worker: worker i serves on httpPort + i (kstreamlet.observability.worker_http_port).
Worker 0's port is named "http"; the others "http-w<i>".
*/}}
{{- define "kstreamlet.httpPorts" -}}
{{- range $i, $e := until (int .Values.workers) }}
- name: {{ if eq $i 0 }}http{{ else }}http-w{{ $i }}{{ end }}
  port: {{ add $.Values.httpPort $i }}
{{- end }}
{{- end }}

{{/*
A setting value as an environment variable string. Helm reads numbers of values.yaml as
floats: whole ones are printed as integers, so 1000000 does not become "1e+06", which
kstreamlet's integer settings would reject.
*/}}
{{- define "kstreamlet.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else if or (kindIs "map" .) (kindIs "slice" .) }}
{{- toJson . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
Checks that cannot be expressed in values.schema.json.
*/}}
{{- define "kstreamlet.validate" -}}
{{- if and .Values.kafka.configSecret.existingSecret (or .Values.kafka.sasl.enabled .Values.kafka.config) }}
{{- fail "kafka.configSecret takes the whole KSTREAMLET_KAFKA_CONFIG from a Secret: unset kafka.sasl.enabled and kafka.config, or put those settings into the Secret's JSON" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor scrapes through that Service" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- if gt (add .Values.httpPort (sub (int .Values.workers) 1)) 65535 }}
{{- fail (printf "httpPort %v + workers - 1 exceeds 65535 (worker i serves on httpPort + i)" .Values.httpPort) }}
{{- end }}
{{- end }}

{{/*
Environment of the kstreamlet container. Order matters: variables referenced with $(NAME)
must come before the variable that references them.
*/}}
{{- define "kstreamlet.env" -}}
# The pod name: stable for a StatefulSet pod across restarts; kstreamlet uses it in the
# transactional.id (with -w<i> appended per forked worker).
- name: KSTREAMLET_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
# Static membership (group.instance.id = the pod name): only with a StatefulSet's stable names.
- name: KSTREAMLET_STATIC_MEMBERSHIP
  value: {{ and (eq .Values.kind "StatefulSet") .Values.staticMembership | toString | quote }}
- name: KSTREAMLET_HTTP_PORT
  value: {{ .Values.httpPort | int | toString | quote }}
- name: KSTREAMLET_SHUTDOWN_TIMEOUT
  value: {{ .Values.shutdownTimeoutSeconds | int | toString | quote }}
- name: KSTREAMLET_STATE_DIR
  value: {{ .Values.stateDir | quote }}
{{- with .Values.kafka.sasl }}
{{- if .enabled }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- $sasl := dict "security.protocol" .securityProtocol "sasl.mechanisms" .mechanism "sasl.username" "$(KAFKA_SASL_USERNAME)" "sasl.password" "$(KAFKA_SASL_PASSWORD)" }}
- name: KSTREAMLET_KAFKA_CONFIG
  value: {{ merge $sasl (deepCopy $.Values.kafka.config) | toJson | quote }}
{{- end }}
{{- end }}
{{- with .Values.kafka.configSecret }}
{{- if .existingSecret }}
- name: KSTREAMLET_KAFKA_CONFIG
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- with .Values.mysql }}
{{- if .existingSecret }}
- name: {{ .envName }}
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .urlKey }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The pod template, shared by the StatefulSet and the Deployment.
*/}}
{{- define "kstreamlet.podTemplate" -}}
metadata:
  labels:
    {{- include "kstreamlet.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/component: stream-processor
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pods when the settings change (env from a ConfigMap is read only at start).
    checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- if .Values.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.httpPort | int | toString | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "kstreamlet.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  # kstreamlet exits by itself within shutdownTimeoutSeconds of SIGTERM (final checkpoint,
  # leave the group); the margin keeps Kubernetes from SIGKILLing it before.
  terminationGracePeriodSeconds: {{ add .Values.shutdownTimeoutSeconds .Values.terminationGraceMarginSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: kstreamlet
      image: "{{ .Values.image.repository }}:{{ include "kstreamlet.imageTag" . }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      # The image's entrypoint is `kstreamlet run`.
      args:
        - {{ .Values.app | quote }}
        - --workers
        - {{ .Values.workers | int | toString | quote }}
      ports:
        {{- range (include "kstreamlet.httpPorts" . | fromYamlArray) }}
        - name: {{ .name }}
          containerPort: {{ .port }}
          protocol: TCP
        {{- end }}
      env:
        {{- include "kstreamlet.env" . | nindent 8 }}
      envFrom:
        - configMapRef:
            name: {{ include "kstreamlet.fullname" . }}
        {{- with .Values.envFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: state
          mountPath: {{ .Values.stateDir }}
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if eq .Values.kind "Deployment" }}
    - name: state
      {{- if .Values.emptyDirSizeLimit }}
      emptyDir:
        sizeLimit: {{ .Values.emptyDirSizeLimit }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
