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
{{- if and .Values.topics.create (not .Values.topics.fromApp) (not .Values.topics.list) }}
{{- fail "topics.create needs topics to create: set topics.fromApp=true and/or list them in topics.list" }}
{{- end }}
{{- $names := list }}
{{- range .Values.topics.list }}
{{- if has .name $names }}
{{- fail (printf "topics.list names %s twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
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
# Interactive queries: the URL other pods forward a query to this pod's keys at (worker i adds i
# to its port). A StatefulSet pod's stable DNS name through the headless Service; a Deployment's
# pod IP (its pod names resolve nowhere).
{{- if eq .Values.kind "StatefulSet" }}
- name: KSTREAMLET_ADVERTISED_URL
  value: {{ printf "%s://$(KSTREAMLET_INSTANCE_ID).%s.%s.svc:%d" (include "kstreamlet.httpScheme" .) (include "kstreamlet.headlessServiceName" .) .Release.Namespace (int .Values.httpPort) | quote }}
{{- else }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: KSTREAMLET_ADVERTISED_URL
  value: {{ printf "%s://$(POD_IP):%d" (include "kstreamlet.httpScheme" .) (int .Values.httpPort) | quote }}
{{- end }}
{{- include "kstreamlet.queriesEnv" . }}
- name: KSTREAMLET_SHUTDOWN_TIMEOUT
  value: {{ .Values.shutdownTimeoutSeconds | int | toString | quote }}
- name: KSTREAMLET_STATE_DIR
  value: {{ .Values.stateDir | quote }}
{{- include "kstreamlet.securityEnv" . }}
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
          scheme: {{ include "kstreamlet.httpScheme" . | upper }}
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
          scheme: {{ include "kstreamlet.httpScheme" . | upper }}
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
          scheme: {{ include "kstreamlet.httpScheme" . | upper }}
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
        {{- include "kstreamlet.securityMounts" . | nindent 8 }}
        {{- if .Values.queries.tlsSecret }}
        - name: http-tls
          mountPath: /etc/kstreamlet/http-tls
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- include "kstreamlet.securityVolumes" . | nindent 4 }}
    {{- if .Values.queries.tlsSecret }}
    - name: http-tls
      secret:
        secretName: {{ .Values.queries.tlsSecret }}
        defaultMode: 0440
    {{- end }}
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
  {{- with (include "kstreamlet.affinity" . | fromYaml) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (include "kstreamlet.topologySpreadConstraints" . | fromYamlArray) }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The pods' affinity: `affinity` as given, plus the default pod anti-affinity of
`podAntiAffinityPreset` (by the selector labels) unless `affinity` has its own podAntiAffinity
or the preset is `none`.
*/}}
{{- define "kstreamlet.affinity" -}}
{{- $affinity := deepCopy (.Values.affinity | default dict) }}
{{- $preset := .Values.podAntiAffinityPreset }}
{{- if and (ne $preset.type "none") (not (hasKey $affinity "podAntiAffinity")) }}
{{- $term := dict "labelSelector" (dict "matchLabels" (include "kstreamlet.selectorLabels" . | fromYaml)) "topologyKey" $preset.topologyKey }}
{{- if eq $preset.type "hard" }}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- else }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" (int $preset.weight) "podAffinityTerm" $term))) }}
{{- end }}
{{- end }}
{{- toYaml $affinity }}
{{- end }}

{{/*
The pods' topology spread constraints: `topologySpreadConstraints` when set, else the default
zone spread of `topologySpread` (by the selector labels) unless it is disabled.
*/}}
{{- define "kstreamlet.topologySpreadConstraints" -}}
{{- $constraints := .Values.topologySpreadConstraints | default list }}
{{- if and (not $constraints) .Values.topologySpread.enabled }}
{{- with .Values.topologySpread }}
{{- $constraints = list (dict "maxSkew" (int .maxSkew) "topologyKey" .topologyKey "whenUnsatisfiable" .whenUnsatisfiable "labelSelector" (dict "matchLabels" (include "kstreamlet.selectorLabels" $ | fromYaml))) }}
{{- end }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}

{{/*
Kafka security settings (docs/security.md): SASL from a Secret (secretKeyRef, so the password is in
neither the ConfigMap nor the pod spec), TLS files from mounted Secrets (kstreamlet.securityVolumes).
*/}}
{{- define "kstreamlet.securityEnv" -}}
{{- $k := .Values.kafka }}
{{- $tls := or $k.tls.caSecret $k.tls.clientCertSecret }}
{{- if $k.sasl.enabled }}
- name: KSTREAMLET_SECURITY_PROTOCOL
  value: {{ $k.sasl.securityProtocol | quote }}
- name: KSTREAMLET_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: KSTREAMLET_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.usernameKey }}
- name: KSTREAMLET_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.passwordKey }}
{{- else if and $tls (not (hasKey $k.config "security.protocol")) }}
- name: KSTREAMLET_SECURITY_PROTOCOL
  value: "SSL"
{{- end }}
{{- if $k.tls.caSecret }}
- name: KSTREAMLET_SSL_CA_LOCATION
  value: {{ printf "/etc/kstreamlet/kafka-ca/%s" $k.tls.caKey | quote }}
{{- end }}
{{- if $k.tls.clientCertSecret }}
- name: KSTREAMLET_SSL_CERTIFICATE_LOCATION
  value: "/etc/kstreamlet/kafka-client/tls.crt"
- name: KSTREAMLET_SSL_KEY_LOCATION
  value: "/etc/kstreamlet/kafka-client/tls.key"
{{- end }}
{{- end }}

{{/* Mounts of the TLS Secrets (container volumeMounts entries). */}}
{{- define "kstreamlet.securityMounts" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/kstreamlet/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client-cert
  mountPath: /etc/kstreamlet/kafka-client
  readOnly: true
{{- end }}
{{- end }}

{{/* The TLS Secrets as pod volumes. */}}
{{- define "kstreamlet.securityVolumes" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    defaultMode: 0440
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client-cert
  secret:
    secretName: {{ .Values.kafka.tls.clientCertSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/*
The kstreamlet settings of `config` and plain `kafka.config` as KSTREAMLET_* variables (a map):
the ConfigMap's data, and the topic Job's env (which runs before the ConfigMap exists).
*/}}
{{- define "kstreamlet.configData" -}}
{{- range $key, $value := .Values.config }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
KSTREAMLET_{{ upper $key }}: {{ include "kstreamlet.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- if and .Values.kafka.config (not .Values.kafka.configSecret.existingSecret) }}
KSTREAMLET_KAFKA_CONFIG: {{ .Values.kafka.config | toJson | quote }}
{{- end }}
{{- end }}

{{/*
Labels of the topic Job and its pod. No app.kubernetes.io/name: the Job's pod must not match the
selectors of the workload, its Services, PDB, anti-affinity and spread (name + instance).
*/}}
{{- define "kstreamlet.topicsJobLabels" -}}
helm.sh/chart: {{ include "kstreamlet.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ include "kstreamlet.name" . }}
app.kubernetes.io/component: topic-setup
app.kubernetes.io/version: {{ include "kstreamlet.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
`kstreamlet topics create` argument lists of the topic Job, one per step, in order: each topic of
`topics.list`, then the app's missing topics (`topics.fromApp`). A list of {name, args}.
*/}}
{{- define "kstreamlet.topicSteps" -}}
{{- $t := .Values.topics }}
{{- $steps := list }}
{{- range $i, $topic := $t.list }}
{{- $partitions := ternary $topic.partitions $t.partitions (hasKey $topic "partitions") }}
{{- $rf := ternary $topic.replicationFactor $t.replicationFactor (hasKey $topic "replicationFactor") }}
{{- $args := list "topics" "create" $topic.name "-p" (include "kstreamlet.envValue" $partitions) "-r" (include "kstreamlet.envValue" $rf) }}
{{- range $k, $v := ($topic.config | default dict) }}
{{- $args = concat $args (list "--config" (printf "%s=%s" $k (include "kstreamlet.envValue" $v))) }}
{{- end }}
{{- $steps = append $steps (dict "name" (printf "topic-%d" $i) "args" (append $args "--if-not-exists")) }}
{{- end }}
{{- if $t.fromApp }}
{{- $args := list "topics" "create" .Values.app "-p" (include "kstreamlet.envValue" $t.partitions) "-r" (include "kstreamlet.envValue" $t.replicationFactor) }}
{{- range $k, $v := ($t.config | default dict) }}
{{- $args = concat $args (list "--config" (printf "%s=%s" $k (include "kstreamlet.envValue" $v))) }}
{{- end }}
{{- $steps = append $steps (dict "name" "app-topics" "args" $args) }}
{{- end }}
{{- toYaml $steps }}
{{- end }}

{{/*
One container of the topic Job: `kstreamlet topics create ...` with the pods' environment.
Argument: dict "root" (the chart context) "step" ({name, args}).
*/}}
{{- define "kstreamlet.topicsContainer" -}}
{{- $root := .root }}
- name: {{ .step.name }}
  image: "{{ $root.Values.image.repository }}:{{ include "kstreamlet.imageTag" $root }}"
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  # Replaces the image's entrypoint (`kstreamlet run`).
  command: ["kstreamlet"]
  args:
    {{- range .step.args }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- range $k, $v := (include "kstreamlet.configData" $root | fromYaml) }}
    - name: {{ $k }}
      value: {{ $v | quote }}
    {{- end }}
    {{- include "kstreamlet.env" $root | nindent 4 }}
  {{- with $root.Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.topics.job.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- include "kstreamlet.securityMounts" $root | nindent 4 }}
{{- end }}

{{/* http or https: the HTTP port's scheme (queries.tlsSecret). */}}
{{- define "kstreamlet.httpScheme" -}}
{{- if .Values.queries.tlsSecret }}https{{ else }}http{{ end }}
{{- end }}

{{/* The Secret holding the query token: queries.existingSecret or the chart's own. */}}
{{- define "kstreamlet.queryTokenSecret" -}}
{{- .Values.queries.existingSecret | default (printf "%s-qtoken" (include "kstreamlet.fullname" .)) }}
{{- end }}

{{/*
Protection of /stores and /metadata (docs/security.md, "HTTP endpoints"): the bearer token from a
Secret (secretKeyRef: never in the ConfigMap or the pod spec), or query_access=open; HTTPS (and
mTLS) from a mounted kubernetes.io/tls Secret.
*/}}
{{- define "kstreamlet.queriesEnv" -}}
{{- $q := .Values.queries }}
{{- if eq $q.access "open" }}
- name: KSTREAMLET_QUERY_ACCESS
  value: "open"
{{- else }}
- name: KSTREAMLET_HTTP_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "kstreamlet.queryTokenSecret" . }}
      key: {{ $q.tokenKey }}
{{- end }}
{{- if $q.tlsSecret }}
- name: KSTREAMLET_HTTP_TLS_CERTIFICATE_LOCATION
  value: "/etc/kstreamlet/http-tls/tls.crt"
- name: KSTREAMLET_HTTP_TLS_KEY_LOCATION
  value: "/etc/kstreamlet/http-tls/tls.key"
{{- if $q.mtls }}
- name: KSTREAMLET_HTTP_TLS_CA_LOCATION
  value: "/etc/kstreamlet/http-tls/ca.crt"
{{- end }}
{{- end }}
{{- end }}
