{{/*
A gRPC component that reads the store (persistence, lookup, snapshotter): its Deployment, its
ClusterIP Service and, with grpcBalancing, its headless "<name>-pods" Service. Parameters (dict):
  root, component, section (its LNSYNC_<SECTION>__ env prefix), database (bool), autoscaled (bool),
  replicas.
*/}}
{{- define "lnsync.grpcComponent" -}}
{{- $root := .root -}}
{{- $ctx := dict "root" $root "component" .component }}
{{- $values := index $root.Values .component }}
{{- $port := int $values.port }}
{{- $name := include "lnsync.componentName" (dict "root" $root "suffix" .component) }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "lnsync.labels" $ctx | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "lnsync.selectorLabels" $ctx | nindent 6 }}
  template:
    {{- $env := include "lnsync.listenEnv" (dict "root" $root "section" .section "port" $port) | fromYamlArray }}
    {{- $probes := include "lnsync.grpcProbes" (dict "root" $root "port" $port) }}
    {{- include "lnsync.podTemplate" (dict "root" $root "component" .component "values" $values "port" $port "portName" "grpc" "env" $env "database" .database "probes" $probes) | nindent 4 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "lnsync.labels" $ctx | nindent 4 }}
    {{- if $root.Values.metrics.enabled }}
    lnsync/metrics: "true"
    {{- end }}
spec:
  type: ClusterIP
  selector:
    {{- include "lnsync.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- if $root.Values.metrics.enabled }}
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- if $root.Values.grpcBalancing }}
---
# Every ready pod by name, for clients that spread their calls (lnsync.grpcTarget).
apiVersion: v1
kind: Service
metadata:
  name: {{ include "lnsync.componentName" (dict "root" $root "suffix" (printf "%s-pods" .component)) }}
  labels:
    {{- include "lnsync.labels" $ctx | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "lnsync.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- end }}
{{- end -}}
