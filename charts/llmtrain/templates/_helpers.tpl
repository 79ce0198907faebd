{{- define "llmtrain.name" -}}llmtrain-operator{{- end -}}

{{- define "llmtrain.labels" -}}
app.kubernetes.io/name: llmtrain
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "llmtrain.selector" -}}
app.kubernetes.io/name: llmtrain
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "llmtrain.fullname" -}}{{ printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}

{{/* The operator's permissions, one rule per resource, each verb used by the code (see docs/operator.md). */}}
{{- define "llmtrain.rules" -}}
{{- /* reads come from watches (list + watch); get: fresh reads (a terminal status, an owner, a taken name) */}}
- apiGroups: ["llmtrain.dev"]
  resources: ["datasources", "trainingruns", "modelexports"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["llmtrain.dev"]
  resources: ["datasources/status", "trainingruns/status", "modelexports/status"]
  verbs: ["patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "update"]
{{- /* events: list: a Job short of pods reads its FailedCreate Events (why a pod was refused) */}}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end -}}
