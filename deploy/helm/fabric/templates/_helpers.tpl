{{- define "fabric.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fabric.fullname" -}}
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

{{- define "fabric.gateway" -}}{{ include "fabric.fullname" . | trunc 55 | trimSuffix "-" }}-gateway{{- end }}
{{- define "fabric.nats" -}}{{ include "fabric.fullname" . | trunc 58 | trimSuffix "-" }}-nats{{- end }}

{{/* Labels: standard ones plus the component; selectors use the stable subset. */}}
{{- define "fabric.selector" -}}
app.kubernetes.io/name: {{ include "fabric.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "fabric.labels" -}}
{{ include "fabric.selector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fabric
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "fabric.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The --nats-url list: every pod of the NATS StatefulSet (so a gateway
fails over between them), or the external URLs. */}}
{{- define "fabric.natsURLs" -}}
{{- if eq .Values.nats.mode "external" -}}
{{ join "," .Values.nats.external.urls }}
{{- else -}}
{{- $n := include "fabric.nats" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.nats.statefulset.replicas) -}}
{{- $urls = append $urls (printf "nats://%s-%d.%s:%d" $n $i $n (int $.Values.nats.statefulset.clientPort)) -}}
{{- end -}}
{{ join "," $urls }}
{{- end -}}
{{- end }}

{{/* Refuse values that would start an insecure or broken install. The schema
checks types; these are the rules across keys. */}}
{{- define "fabric.validate" -}}
{{- $jwt := .Values.auth.jwt -}}
{{- if not (or $jwt.secretName $jwt.publicKeySecretName $jwt.jwksURL .Values.auth.allowAnonymous) -}}
{{- fail "auth: set auth.jwt.secretName, auth.jwt.publicKeySecretName or auth.jwt.jwksURL (how clients' tokens are verified), or auth.allowAnonymous=true for an open demo; fabric serve refuses open joins off loopback" -}}
{{- end -}}
{{- if and .Values.auth.allowAnonymous (or $jwt.secretName $jwt.publicKeySecretName $jwt.jwksURL) -}}
{{- fail "auth: auth.allowAnonymous=true together with JWT keys; choose one" -}}
{{- end -}}
{{- $g := .Values.gateway -}}
{{- if gt (add (int $g.drainWindowSeconds) 2) (int $g.shutdownTimeoutSeconds) -}}
{{- fail (printf "gateway: drainWindowSeconds (%d) + 2 s must fit in shutdownTimeoutSeconds (%d): the gateway stops its listener and NATS after the drain" (int $g.drainWindowSeconds) (int $g.shutdownTimeoutSeconds)) -}}
{{- end -}}
{{- if eq $g.listenPort $g.opsPort -}}
{{- fail "gateway: listenPort and opsPort must differ (the ops port has no authentication)" -}}
{{- end -}}
{{- $m := .Values.nats.mode -}}
{{- if and (eq $m "external") (not .Values.nats.external.urls) -}}
{{- fail "nats: mode external needs nats.external.urls" -}}
{{- end -}}
{{- if and (ne $m "external") .Values.nats.external.urls -}}
{{- fail (printf "nats: nats.external.urls is set but nats.mode is %s; set nats.mode=external" $m) -}}
{{- end -}}
{{- $a := .Values.nats.auth -}}
{{- $ways := 0 -}}
{{- if $a.credsKey }}{{ $ways = add1 $ways }}{{ end -}}
{{- if $a.tokenKey }}{{ $ways = add1 $ways }}{{ end -}}
{{- if or $a.user $a.passwordKey }}{{ $ways = add1 $ways }}{{ end -}}
{{- if and $a.secretName (ne (int $ways) 1) -}}
{{- fail "nats.auth: with secretName set exactly one of credsKey, tokenKey, or user + passwordKey" -}}
{{- end -}}
{{- if and (not $a.secretName) (gt (int $ways) 0) -}}
{{- fail "nats.auth: credsKey/tokenKey/passwordKey name keys of nats.auth.secretName, which is empty" -}}
{{- end -}}
{{- if or (and $a.user (not $a.passwordKey)) (and $a.passwordKey (not $a.user)) -}}
{{- fail "nats.auth: user and passwordKey go together" -}}
{{- end -}}
{{- if and .Values.nats.tls.enabled (not .Values.nats.tls.secretName) -}}
{{- fail "nats.tls: enabled needs nats.tls.secretName (a Secret with the CA, and for clientCert the client certificate and key)" -}}
{{- end -}}
{{- if eq $m "statefulset" -}}
{{- if lt (int .Values.nats.statefulset.replicas) 3 -}}
{{- fail "nats.statefulset.replicas: at least 3 (JetStream Raft quorum survives one loss)" -}}
{{- end -}}
{{- if and (not .Values.nats.statefulset.configSecretName) (not .Values.networkPolicy.enabled) -}}
{{- fail "nats: without nats.statefulset.configSecretName the NATS nodes have no users, and only the NetworkPolicy keeps other pods off them; keep networkPolicy.enabled=true or give a config with users" -}}
{{- end -}}
{{- end -}}
{{- if eq $m "embedded" -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "autoscaling: not with nats.mode=embedded: every gateway is a Raft member, so its count must not follow load; set autoscaling.enabled=false" -}}
{{- end -}}
{{- if .Values.nats.tls.enabled -}}
{{- fail "nats.tls: applies to a NATS the gateways dial (statefulset, external); the embedded server is in process (put route TLS in its config file)" -}}
{{- end -}}
{{- if not .Values.nats.embedded.configSecretName -}}
{{- fail "nats.embedded.configSecretName: required in embedded mode: a nats-server config with users and cluster authorization (fabric serve refuses open routes)" -}}
{{- end -}}
{{- if not $a.secretName -}}
{{- fail "nats.auth: required in embedded mode: the gateway logs in to its embedded server as one of the config's users" -}}
{{- end -}}
{{- if lt (int .Values.nats.embedded.replicas) 3 -}}
{{- fail "nats.embedded.replicas: at least 3 (JetStream Raft quorum survives one loss)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.minReplicas) 2) -}}
{{- fail "autoscaling.minReplicas: at least 2, so one gateway can drain while another takes its clients" -}}
{{- end -}}
{{- end }}
