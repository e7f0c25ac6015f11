#!/bin/sh
# The namespace and Switchboard's search attributes, for docker/compose.yaml's
# temporal-namespace job (the temporalio/server image, unlike auto-setup, creates neither).
# Re-running it is safe. The worker would add missing search attributes itself; doing it here
# means they exist before the first workflow starts. Keep the list equal to
# hosting/search_attributes.py (tests/test_docker.py checks).
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${NAMESPACE:-default}"
RETENTION="${NAMESPACE_RETENTION:-72h}"
SEARCH_ATTRIBUTES="SwitchboardTenant SwitchboardChannel SwitchboardRunStatus SwitchboardDeliveryState SwitchboardIdentityHash"

tries=0
until temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "namespace: Temporal at $ADDRESS is not healthy" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" >/dev/null 2>&1; then
  echo "namespace: $NAMESPACE exists"
else
  temporal operator namespace create --address "$ADDRESS" --namespace "$NAMESPACE" --retention "$RETENTION"
  echo "namespace: $NAMESPACE created (retention $RETENTION)"
fi

present="$(temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE")"
for name in $SEARCH_ATTRIBUTES; do
  if printf '%s\n' "$present" | grep -qw "$name"; then
    echo "namespace: search attribute $name exists"
  else
    temporal operator search-attribute create --address "$ADDRESS" --namespace "$NAMESPACE" \
      --name "$name" --type Keyword
    echo "namespace: search attribute $name created"
  fi
done
