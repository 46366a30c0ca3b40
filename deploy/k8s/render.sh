#!/usr/bin/env bash
# render.sh DIR OUT — fill in the placeholders of nats-values.yaml and
# nameserver-config.yaml with the operator and accounts of the auth store
# DIR/auth that `rsp auth init --data DIR` made, and write the results to
# the folder OUT (every scope account of the store goes into
# resolver_preload; the account JWT of the ConfigMap's RSP_SCOPE goes into
# ConfigMap rsp-account). Only JWTs and public keys are copied, no seeds.
#
#   deploy/k8s/render.sh /var/lib/rsp ./k8s-out
#   helm upgrade --install nats nats/nats -n rsp -f ./k8s-out/nats-values.yaml
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

if [ $# -ne 2 ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
STORE=$1/auth
OUT=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for f in operator.jwt system/account.jwt; do
  [ -f "$STORE/$f" ] || {
    echo "render.sh: no $STORE/$f (run 'rsp auth init --data $1' first)" >&2
    exit 1
  }
done

# jwt_field FILE FIELD prints a string field of a JWT's claims.
jwt_field() {
  local payload
  payload=$(tr -d ' \n' <"$1" | cut -d. -f2 | tr '_-' '/+')
  while ((${#payload} % 4)); do payload+="="; done
  printf '%s' "$payload" | base64 -d 2>/dev/null | grep -o "\"$2\":\"[^\"]*\"" | head -n 1 | cut -d'"' -f4
}
jwt() { tr -d ' \n' <"$1"; }

op_key=$(jwt_field "$STORE/operator.jwt" sub)
sys_key=$(jwt_field "$STORE/system/account.jwt" sub)
preload="      \"$sys_key\": \"$(jwt "$STORE/system/account.jwt")\""
for acct in "$STORE"/accounts/*/account.jwt; do
  [ -f "$acct" ] || continue
  preload+=$'\n'"      \"$(jwt_field "$acct" sub)\": \"$(jwt "$acct")\" # scope $(basename "$(dirname "$acct")")"
done

mkdir -p "$OUT"
values=$(<"$HERE/nats-values.yaml")
# The two preload lines of the template become one line per account.
values=$(printf '%s\n' "$values" | grep -v '"<DEFAULT_ACCOUNT_KEY>": "<DEFAULT_ACCOUNT_JWT>"')
values=${values//'      "<SYSTEM_ACCOUNT_KEY>": "<SYSTEM_ACCOUNT_JWT>"'/$preload}
values=${values//<OPERATOR_JWT>/$(jwt "$STORE/operator.jwt")}
values=${values//<SYSTEM_ACCOUNT_KEY>/$sys_key}
printf '%s\n' "$values" >"$OUT/nats-values.yaml"

config=$(<"$HERE/nameserver-config.yaml")
# The scope of the Deployment (RSP_SCOPE in the ConfigMap): its account JWT
# goes into ConfigMap rsp-account, for --account-jwt.
scope=$(printf '%s\n' "$config" | sed -n 's/^  RSP_SCOPE:[[:space:]]*//p' | head -n 1 | sed 's/[[:space:]]#.*//' | tr -d "\"' ")
case $scope in
'' | *,*)
  echo "render.sh: RSP_SCOPE in nameserver-config.yaml must name one scope (one Deployment per scope)" >&2
  exit 1
  ;;
esac
acct_jwt=$STORE/accounts/$scope/account.jwt
[ -f "$acct_jwt" ] || {
  echo "render.sh: no $acct_jwt (scope $scope; 'rsp auth init --data $1 --scope $scope')" >&2
  exit 1
}
config=${config//<OPERATOR_KEY>/$op_key}
config=${config//<ACCOUNT_JWT>/$(jwt "$acct_jwt")}
printf '%s\n' "$config" >"$OUT/nameserver-config.yaml"

echo "wrote $OUT/nats-values.yaml and $OUT/nameserver-config.yaml (operator $op_key, system account $sys_key, scope $scope account $(jwt_field "$acct_jwt" sub))"
