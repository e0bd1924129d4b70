{{/*
Names, labels and the pieces every lnsync pod shares. Helpers that build a pod take a dict with
"root" (the chart context) and "component".
*/}}

{{- define "lnsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lnsync.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", the prefix shortened so the whole name stays a DNS label of at most
"max" characters (default 63; StatefulSets need 52, their revision label appends a hash). */}}
{{- define "lnsync.componentName" -}}
{{- $root := .root -}}
{{- $max := sub (sub (.max | default 63) 1) (len .suffix) | int -}}
{{- printf "%s-%s" (include "lnsync.fullname" $root | trunc $max | trimSuffix "-") .suffix -}}
{{- end -}}

{{- define "lnsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lnsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lnsync.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Labels of every object; "managedBy" overrides Helm for objects the peer controller owns. */}}
{{- define "lnsync.labels" -}}
helm.sh/chart: {{ include "lnsync.chart" .root }}
{{ include "lnsync.selectorLabels" . }}
app.kubernetes.io/part-of: lnsync
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .managedBy | default .root.Release.Service }}
{{- end -}}

{{- define "lnsync.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The peer controller's image: the lnsync image plus the Kubernetes client (the Dockerfile's
`controller` target), by default image.repository + "-controller" with the same tag. */}}
{{- define "lnsync.controllerImage" -}}
{{- $img := .Values.peerController.image -}}
{{- $repository := $img.repository | default (printf "%s-controller" .Values.image.repository) -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository ($img.tag | default .Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "lnsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lnsync.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lnsync.postgresqlName" -}}
{{- include "lnsync.componentName" (dict "root" . "suffix" "postgresql" "max" 52) -}}
{{- end -}}

{{/* Where the database URL lives: a Secret name and key (never a ConfigMap). */}}
{{- define "lnsync.databaseSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "lnsync.postgresqlName" . -}}
{{- else if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else if .Values.database.url -}}
{{- include "lnsync.componentName" (dict "root" . "suffix" "database") -}}
{{- else -}}
{{- fail "postgresql.enabled=false needs database.url or database.existingSecret (the external PostgreSQL URL)" -}}
{{- end -}}
{{- end -}}

{{- define "lnsync.databaseSecretKey" -}}
{{- if and (not .Values.postgresql.enabled) .Values.database.existingSecret -}}
{{- .Values.database.existingSecretKey -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}

{{/* The read replica's URL for lookup (database.readReplica): a Secret name, empty when none. */}}
{{- define "lnsync.replicaSecretName" -}}
{{- $r := .Values.database.readReplica -}}
{{- if or $r.existingSecret $r.url -}}
{{- if .Values.postgresql.enabled -}}
{{- fail "database.readReplica needs an external PostgreSQL (postgresql.enabled=false): the bundled one has no replica" -}}
{{- end -}}
{{- $r.existingSecret | default (include "lnsync.componentName" (dict "root" . "suffix" "database-replica")) -}}
{{- end -}}
{{- end -}}

{{/* The environment of a container that uses the database (dict: root, component). With
postgresql.auth.existingSecret the URL carries no password: the PostgreSQL client reads PGPASSWORD
from the operator's Secret, which the chart never reads. Lookup also gets the read replica's URL. */}}
{{- define "lnsync.databaseEnv" -}}
{{- $root := .root -}}
{{- $pg := $root.Values.postgresql -}}
{{- if and $pg.enabled $pg.auth.existingSecret }}
- name: LNSYNC_DATABASE_URL
  value: {{ printf "postgresql://%s@%s:5432/%s" $pg.auth.username (include "lnsync.postgresqlName" $root) $pg.auth.database | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $pg.auth.existingSecret }}
      key: {{ $pg.auth.existingSecretPasswordKey }}
{{- else }}
- name: LNSYNC_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "lnsync.databaseSecretName" $root }}
      key: {{ include "lnsync.databaseSecretKey" $root }}
{{- end }}
{{- with and (eq .component "lookup") (include "lnsync.replicaSecretName" $root) }}
- name: LNSYNC_LOOKUP__DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      {{- $r := $root.Values.database.readReplica }}
      key: {{ ternary $r.existingSecretKey "database-url" (not (empty $r.existingSecret)) }}
{{- end }}
{{- end -}}

{{/* The API versions this cluster offers (templates pick the newest one it has). */}}
{{- define "lnsync.hpaApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "autoscaling/v2" -}}autoscaling/v2{{- else -}}autoscaling/v2beta2{{- end -}}
{{- end -}}

{{- define "lnsync.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}policy/v1{{- else -}}policy/v1beta1{{- end -}}
{{- end -}}

{{/* true when readiness uses the kubelet's native gRPC probe (beta and on by default from 1.24).
The kubelet cannot present a client certificate, so with tls.enabled it is never native. */}}
{{- define "lnsync.nativeGrpcProbe" -}}
{{- $mode := .Values.probes.grpc -}}
{{- if .Values.tls.enabled -}}
{{- else if eq $mode "native" -}}true
{{- else if and (eq $mode "auto") (semverCompare ">=1.24-0" .Capabilities.KubeVersion.Version) -}}true
{{- end -}}
{{- end -}}

{{/* Peer "pubkey@host:port" -> dict(peer, pubkey, id). The id (first 16 hex digits of the key)
names the Deployment and fits a label value; lnsync/services/peer_controller/spec.py mirrors it. */}}
{{- define "lnsync.peerInfo" -}}
{{- $pubkey := regexFind "^[0-9a-fA-F]{66}" . | lower -}}
{{- dict "peer" . "pubkey" $pubkey "id" (substr 0 16 $pubkey) | toJson -}}
{{- end -}}

{{- define "lnsync.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "lnsync.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Probes of a gRPC service: liveness and startup only ask that the port answers (a database
outage must not restart every pod); readiness asks grpc.health.v1 for SERVING. */}}
{{- define "lnsync.grpcProbes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  tcpSocket:
    port: grpc
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  tcpSocket:
    port: grpc
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  {{- if include "lnsync.nativeGrpcProbe" .root }}
  grpc:
    port: {{ .port }}
  {{- else }}
  exec:
    command: ["lnsync", "healthcheck", "--target", "127.0.0.1:{{ .port }}", "--timeout", "{{ $p.readiness.timeoutSeconds }}"]
  {{- end }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* Probes of the gateway (plain HTTP on its public port): startup and liveness ask /healthz (the
process runs), readiness /readyz (synced, and a snapshot generation held). */}}
{{- define "lnsync.httpProbes" -}}
{{- $p := .Values.probes -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ int $p.startup.periodSeconds }}
  failureThreshold: {{ int $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ int $p.liveness.periodSeconds }}
  timeoutSeconds: {{ int $p.liveness.timeoutSeconds }}
  failureThreshold: {{ int $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: {{ int $p.readiness.periodSeconds }}
  timeoutSeconds: {{ int $p.readiness.timeoutSeconds }}
  failureThreshold: {{ int $p.readiness.failureThreshold }}
{{- end -}}

{{/*
The pod template of an lnsync service. Parameters (dict):
  root, component, values (the component's values), port (container port number),
  portName ("grpc" or "http"), env (list of extra env entries), database (bool: gets the URL),
  probes (YAML text), serviceAccountName, automountToken (bool), extraLabels (dict),
  adminPort (the gateway's admin port: its metrics, instead of metrics.port).
*/}}
{{- define "lnsync.podTemplate" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- /* Where Prometheus scrapes this pod: the metrics port of gRPC services, the gateway's admin port. */ -}}
{{- $scrape := 0 -}}
{{- if .adminPort }}{{ $scrape = int .adminPort }}{{ else if eq .portName "grpc" }}{{ $scrape = int $root.Values.metrics.port }}{{ end -}}
metadata:
  labels:
    {{- include "lnsync.selectorLabels" . | nindent 4 }}
    {{- range $k, $v := .extraLabels }}
    {{ $k }}: {{ $v | quote }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if and $root.Values.metrics.enabled $scrape }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $scrape | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ .serviceAccountName | default (include "lnsync.serviceAccountName" $root) }}
  automountServiceAccountToken: {{ .automountToken | default false }}
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- include "lnsync.podSecurityContext" $root.Values.securityContext | nindent 4 }}
  {{- /* Graceful termination (docs/kubernetes.md, "Scaling out"): the pod leaves its Services'
  endpoints when deletion starts; the preStop pause keeps it serving while kube-proxy and DNS
  catch up, then SIGTERM: not ready at once, in-flight requests and RPCs finish, streams end. */}}
  terminationGracePeriodSeconds: {{ $root.Values.shutdown.terminationGracePeriodSeconds }}
  {{- with $root.Values.topologySpread }}
  {{- if .enabled }}
  topologySpreadConstraints:
    {{- range .topologyKeys }}
    - maxSkew: 1
      topologyKey: {{ . }}
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "lnsync.selectorLabels" (dict "root" $root "component" $.component) | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ .image | default (include "lnsync.image" $root) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["serve", "{{ .component }}"]
      ports:
        - name: {{ .portName }}
          containerPort: {{ .port }}
          protocol: TCP
        {{- if and $root.Values.metrics.enabled (eq .portName "grpc") }}
        - name: metrics
          containerPort: {{ $root.Values.metrics.port }}
          protocol: TCP
        {{- end }}
        {{- with .adminPort }}
        - name: admin
          containerPort: {{ . }}
          protocol: TCP
        {{- end }}
      envFrom:
        - configMapRef:
            name: {{ include "lnsync.fullname" $root }}
      env:
        {{- if .database }}
        {{- include "lnsync.databaseEnv" (dict "root" $root "component" .component) | nindent 8 }}
        {{- end }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- if $root.Values.tls.enabled }}
        {{- include "lnsync.tlsEnv" $root | nindent 8 }}
        {{- end }}
        {{- with $root.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- .probes | nindent 6 }}
      {{- if gt (int $root.Values.shutdown.preStopSeconds) 0 }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", "{{ $root.Values.shutdown.preStopSeconds }}"]
      {{- end }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- include "lnsync.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $root.Values.tls.enabled }}
        - name: tls
          mountPath: {{ include "lnsync.tlsDir" $root }}
          readOnly: true
        {{- end }}
        {{- if include "lnsync.chainSecretFor" (dict "root" $root "component" .component) }}
        - name: chain
          mountPath: {{ include "lnsync.chainDir" $root }}
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if $root.Values.tls.enabled }}
    {{- include "lnsync.tlsVolume" (dict "root" $root "role" .component) | nindent 4 }}
    {{- end }}
    {{- if include "lnsync.chainSecretFor" (dict "root" $root "component" .component) }}
    - name: chain
      secret:
        secretName: {{ $root.Values.chain.existingSecret }}
        defaultMode: 0440
        items:
          - {key: password, path: password}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* The chain source's password (chain.existingSecret): where it is mounted, and which components
talk to the source (downloaders check new channels, persistence re-checks stored ones, the gateway
shows the source's state). */}}
{{- define "lnsync.chainDir" -}}/etc/lnsync/chain{{- end -}}
{{- define "lnsync.chainClients" -}}downloader persistence gateway{{- end -}}
{{- define "lnsync.chainSecretFor" -}}
{{- $c := .root.Values.chain -}}
{{- if and (ne $c.source "none") $c.existingSecret (has .component (splitList " " (include "lnsync.chainClients" .root))) -}}yes{{- end -}}
{{- end -}}

{{/* Mutual TLS (helm/lnsync/README.md, "Mutual TLS"): every lnsync container mounts the Secret of
its own role (lnsync/certs.py ROLES; the certificate's common name is "lnsync-<role>", which the
servers check against lnsync/rpc.py POLICY) at tlsDir, and LNSYNC_TLS__* point at the files. */}}
{{- define "lnsync.tlsDir" -}}/etc/lnsync/tls{{- end -}}

{{/* The roles this release has a certificate for (a JSON list). */}}
{{- define "lnsync.tlsRoles" -}}
{{- $roles := list "persistence" "lookup" "snapshotter" "gateway" "downloader" "operator" -}}
{{- if .Values.peerController.enabled }}{{ $roles = append $roles "peer-controller" }}{{ end -}}
{{- toJson $roles -}}
{{- end -}}

{{/* The Secret holding a role's certificate (dict: root, role): tls.existingSecrets.<role>, else
the one shared tls.existingSecret, else the one the chart makes (generated or by cert-manager). */}}
{{- define "lnsync.tlsSecretName" -}}
{{- $tls := .root.Values.tls -}}
{{- if index $tls.existingSecrets .role -}}
{{- index $tls.existingSecrets .role -}}
{{- else if $tls.existingSecret -}}
{{- $tls.existingSecret -}}
{{- else if $tls.existingSecrets -}}
{{- fail (printf "tls.existingSecrets has no Secret for the role %s: list every role (%s) or none" .role (include "lnsync.tlsRoles" .root | fromJsonArray | join ", ")) -}}
{{- else -}}
{{- include "lnsync.componentName" (dict "root" .root "suffix" (printf "tls-%s" .role)) -}}
{{- end -}}
{{- end -}}

{{/* The pod volume of a role's certificate (dict: root, role). */}}
{{- define "lnsync.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ include "lnsync.tlsSecretName" . }}
    # Only the owner and fsGroup read the key; a missing key fails the mount, not the process.
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- end -}}

{{/* The Secrets of a generated CA and of every role's certificate (dict: root, existing: the
Secrets the cluster holds now by name, from lookup; empty when installing or rendering). What
exists is reused as it is, so that upgrades keep the certificates: the CA when its Secret has both
ca.crt and ca.key, a role's certificate when it was signed by that CA. Anything missing is made:
a new CA (then every role's certificate too), or a role's certificate signed by the CA. */}}
{{- define "lnsync.tlsGeneratedSecrets" -}}
{{- $root := .root -}}
{{- $tls := $root.Values.tls -}}
{{- $days := int $tls.validityDays -}}
{{- $caName := include "lnsync.componentName" (dict "root" $root "suffix" "tls-ca") -}}
{{- $caData := (index .existing $caName | default dict).data | default dict -}}
{{- $ca := dict -}}
{{- $caKept := and (index $caData "ca.crt") (index $caData "ca.key") -}}
{{- if $caKept -}}
{{- $ca = buildCustomCert (index $caData "ca.crt") (index $caData "ca.key") -}}
{{- else -}}
{{- $ca = genCA "lnsync-ca" $days -}}
{{- $caData = dict "ca.crt" ($ca.Cert | b64enc) "ca.key" ($ca.Key | b64enc) -}}
{{- end -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $caName }}
  labels:
    {{- include "lnsync.labels" (dict "root" $root "component" "tls") | nindent 4 }}
type: Opaque
data:
  ca.crt: {{ index $caData "ca.crt" }}
  ca.key: {{ index $caData "ca.key" }}
{{- range $role := include "lnsync.tlsRoles" $root | fromJsonArray }}
{{- $name := include "lnsync.tlsSecretName" (dict "root" $root "role" $role) }}
{{- $data := (index $.existing $name | default dict).data | default dict }}
{{- if not (and $caKept (eq (index $data "ca.crt" | default "") (index $caData "ca.crt")) (index $data "tls.crt") (index $data "tls.key")) }}
{{- $cert := genSignedCert (printf "lnsync-%s" $role) (list "127.0.0.1") (list $tls.serverName "localhost") $days $ca }}
{{- $data = dict "ca.crt" (index $caData "ca.crt") "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc) }}
{{- end }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "lnsync.labels" (dict "root" $root "component" "tls") | nindent 4 }}
    lnsync/role: {{ $role }}
type: kubernetes.io/tls
data:
  ca.crt: {{ index $data "ca.crt" }}
  tls.crt: {{ index $data "tls.crt" }}
  tls.key: {{ index $data "tls.key" }}
{{- end }}
{{- end -}}

{{- define "lnsync.tlsEnv" -}}
{{- $dir := include "lnsync.tlsDir" . -}}
- name: LNSYNC_TLS__ENABLED
  value: "true"
- name: LNSYNC_TLS__CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
- name: LNSYNC_TLS__CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: LNSYNC_TLS__KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
- name: LNSYNC_TLS__SERVER_NAME
  value: {{ .Values.tls.serverName | quote }}
{{- end -}}

{{/* Env entries that make a gRPC service listen on all interfaces and expose metrics. */}}
{{- define "lnsync.listenEnv" -}}
- name: LNSYNC_{{ .section }}__LISTEN
  value: "0.0.0.0:{{ .port }}"
{{- if .root.Values.metrics.enabled }}
- name: LNSYNC_{{ .section }}__METRICS_LISTEN
  value: "0.0.0.0:{{ .root.Values.metrics.port }}"
{{- end }}
{{- end -}}

{{/*
One downloader Deployment: the single definition both the chart (static peers) and the peer
controller (through the template it reads from the peers ConfigMap) use. Parameters (dict):
root, peer (pubkey@host:port), pubkey, id, managedBy.
*/}}
{{- define "lnsync.downloaderDeployment" -}}
{{- $root := .root -}}
{{- $ctx := dict "root" $root "component" "downloader" "managedBy" .managedBy -}}
{{- $port := int $root.Values.downloader.port -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "lnsync.componentName" (dict "root" $root "suffix" (printf "downloader-%s" .id)) }}
  labels:
    {{- include "lnsync.labels" $ctx | nindent 4 }}
    lnsync/peer: {{ .id | quote }}
  annotations:
    lnsync/peer-pubkey: {{ .pubkey | quote }}
spec:
  replicas: 1
  revisionHistoryLimit: 3
  # Never two connections to the same peer, not even during a rollout.
  strategy:
    type: Recreate
  selector:
    matchLabels:
      {{- include "lnsync.selectorLabels" $ctx | nindent 6 }}
      lnsync/peer: {{ .id | quote }}
  template:
    {{- $env := list (dict "name" "LNSYNC_DOWNLOADER__PEER" "value" .peer) -}}
    {{- $env = concat (include "lnsync.listenEnv" (dict "root" $root "section" "DOWNLOADER" "port" $port) | fromYamlArray) $env -}}
    {{- $probes := include "lnsync.grpcProbes" (dict "root" $root "port" $port) -}}
    {{- include "lnsync.podTemplate" (dict "root" $root "component" "downloader" "values" $root.Values.downloader "port" $port "portName" "grpc" "env" $env "probes" $probes "extraLabels" (dict "lnsync/peer" .id)) | nindent 4 }}
{{- end -}}

{{/* What clients dial for a gRPC component: with grpcBalancing, every ready pod of it through the
headless "<name>-pods" Service (dns:/// + round_robin in lnsync.rpc); otherwise the ClusterIP. */}}
{{- define "lnsync.grpcTarget" -}}
{{- $port := (index .root.Values .component).port -}}
{{- if .root.Values.grpcBalancing -}}
{{- $pods := include "lnsync.componentName" (dict "root" .root "suffix" (printf "%s-pods" .component)) -}}
dns:///{{ $pods }}.{{ .root.Release.Namespace }}.svc.{{ .root.Values.clusterDomain }}:{{ $port }}
{{- else -}}
{{ include "lnsync.componentName" (dict "root" .root "suffix" .component) }}:{{ $port }}
{{- end -}}
{{- end -}}
