#!/usr/bin/env bash
# cluster.sh — a three-node NATS cluster with JetStream in operator mode and
# two rsp name-server replicas on it, all on this machine, for trying rsp
# the way it runs in production (and for deploy/local/cluster_test.go).
#
#   deploy/local/cluster.sh up              build, configure and start everything
#   deploy/local/cluster.sh status          what runs, and the nodes' health
#   deploy/local/cluster.sh down [--clean]  stop everything (--clean: and delete the data)
#
# Everything lives in $RSP_CLUSTER_DIR (default ${TMPDIR:-/tmp}/rsp-cluster):
#   bin/            nats-server (go install, the version in go.mod), rsp, nameserver
#   auth/           the operator, accounts and creds (`rsp auth init --data DIR`)
#   nodes/nN/       node N's nats.conf, JetStream store (js/) and resolver directory (jwt/)
#   pids/ logs/     one .pid and one .log per process (n1..n3, ns1..)
#   env             RSP_NATS, RSP_DATA and RSP_SCOPE for the rsp CLI (`. DIR/env`)
# `up` on an existing DIR reuses its accounts and JetStream data.
#
# Settings (environment):
#   RSP_CLUSTER_DIR            data folder (above)
#   RSP_CLUSTER_BIN            where the binaries go (default DIR/bin; kept by --clean)
#   RSP_CLUSTER_HOST           address every port listens on (default 127.0.0.1)
#   RSP_CLUSTER_CLIENT_PORTS   the nodes' client ports (default "4222 4223 4224")
#   RSP_CLUSTER_ROUTE_PORTS    the nodes' cluster ports (default "6222 6223 6224")
#   RSP_CLUSTER_HTTP_PORTS     the nodes' monitoring ports (default "8222 8223 8224")
#   RSP_CLUSTER_NAMESERVERS    name-server replicas to start (default 2)
#   RSP_CLUSTER_METRICS_PORTS  the name servers' --metrics ports: pool page, /metrics,
#                              /readyz (default "9090 9091 ..."; one per name server)
#   RSP_CLUSTER_REPLICAS       JetStream replicas of rsp's stream and buckets (default 3)
#   RSP_CLUSTER_SCOPE          the scope served (default default)
#   RSP_CLUSTER_TIMEOUT        seconds to wait for each thing to come up or stop (default 30)
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # "&" in ${x//p/r} stays "&"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${RSP_CLUSTER_DIR:-${TMPDIR:-/tmp}/rsp-cluster}
BIN=${RSP_CLUSTER_BIN:-$DIR/bin}
HOST=${RSP_CLUSTER_HOST:-127.0.0.1}
read -r -a CLIENT_PORTS <<<"${RSP_CLUSTER_CLIENT_PORTS:-4222 4223 4224}"
read -r -a ROUTE_PORTS <<<"${RSP_CLUSTER_ROUTE_PORTS:-6222 6223 6224}"
read -r -a HTTP_PORTS <<<"${RSP_CLUSTER_HTTP_PORTS:-8222 8223 8224}"
NAMESERVERS=${RSP_CLUSTER_NAMESERVERS:-2}
default_metrics_ports() {
  local i
  for ((i = 0; i < NAMESERVERS; i++)); do printf '%d ' $((9090 + i)); done
}
read -r -a METRICS_PORTS <<<"${RSP_CLUSTER_METRICS_PORTS:-$(default_metrics_ports)}"
REPLICAS=${RSP_CLUSTER_REPLICAS:-3}
SCOPE=${RSP_CLUSTER_SCOPE:-default}
TIMEOUT=${RSP_CLUSTER_TIMEOUT:-30}
CLUSTER_NAME=rsp
TEMPLATE=$ROOT/deploy/nats/node.conf.tmpl
NODES=(n1 n2 n3)
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac

say() { printf '==> %s\n' "$*"; }
die() {
  printf 'cluster.sh: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

check_settings() {
  if [ "${#CLIENT_PORTS[@]}" -ne 3 ] || [ "${#ROUTE_PORTS[@]}" -ne 3 ] || [ "${#HTTP_PORTS[@]}" -ne 3 ]; then
    die "RSP_CLUSTER_CLIENT_PORTS, RSP_CLUSTER_ROUTE_PORTS and RSP_CLUSTER_HTTP_PORTS take three ports each"
  fi
  if [ "${#METRICS_PORTS[@]}" -lt "$NAMESERVERS" ]; then
    die "RSP_CLUSTER_METRICS_PORTS takes a port for each of the $NAMESERVERS name servers"
  fi
  local n
  for n in "$NAMESERVERS" "$REPLICAS" "$TIMEOUT" "${CLIENT_PORTS[@]}" "${ROUTE_PORTS[@]}" "${HTTP_PORTS[@]}" "${METRICS_PORTS[@]}"; do
    [[ $n =~ ^[0-9]+$ ]] || die "$n is not a whole number"
  done
}

nats_urls() {
  local urls=() p
  for p in "${CLIENT_PORTS[@]}"; do urls+=("nats://$HOST:$p"); done
  local IFS=,
  printf '%s' "${urls[*]}"
}

# ---- processes ------------------------------------------------------------

pidfile() { printf '%s/pids/%s.pid' "$DIR" "$1"; }

# pid_of NAME prints NAME's pid if that process runs and is ours (its
# command line names our binary), else nothing and status 1.
pid_of() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$BIN/" || return 1
  fi
  printf '%s' "$pid"
}

# start NAME CMD... runs CMD in the background, detached from this shell,
# with its output in logs/NAME.log and its pid in pids/NAME.pid.
start() {
  local name=$1
  shift
  nohup "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  local pid=$! i
  printf '%s\n' "$pid" >"$(pidfile "$name")"
  # Until it has exec'd CMD (the shell's copy execs nohup, which execs
  # CMD), its command line changes; pid_of recognises it by that line
  # afterwards, and could miss it in between.
  for ((i = 0; i < 50; i++)); do
    [ -r "/proc/$pid/cmdline" ] || break
    [ "$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)" = "$1" ] && break
    sleep 0.05
  done
}

# stop NAME...: SIGTERM to each, wait up to TIMEOUT seconds for all of
# them, then SIGKILL to those still running.
stop() {
  local name pid i t0=$EPOCHREALTIME names=() pids=() left
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      names+=("$name")
      pids+=("$pid")
      kill -TERM "$pid" 2>/dev/null || true
    else
      rm -f "$(pidfile "$name")"
    fi
  done
  ((${#pids[@]} > 0)) || return 0
  printf '    stopping %s (SIGTERM)' "${names[*]}"
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    left=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then left=1; fi
    done
    ((left)) || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      printf '; %s still running after %ss: SIGKILL' "${names[$i]}" "$TIMEOUT"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
    rm -f "$(pidfile "${names[$i]}")"
  done
  printf ': %ss\n' "$(elapsed "$t0")"
}

# elapsed T0 prints the seconds since $EPOCHREALTIME was T0, to 0.1 s.
elapsed() {
  local now=${EPOCHREALTIME/[.,]/} then=${1/[.,]/}
  local ms=$(((now - then) / 1000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

# metrics_port NAME is name server NAME's --metrics port.
metrics_port() { printf '%s' "${METRICS_PORTS[$((${1#ns} - 1))]}"; }

nameserver_names() {
  local i
  for ((i = 1; i <= NAMESERVERS; i++)); do printf 'ns%d\n' "$i"; done
}

# every process we may have started: name servers first, then the nodes.
all_names() {
  local f
  {
    nameserver_names
    if [ -d "$DIR/pids" ]; then
      for f in "$DIR"/pids/ns*.pid; do
        if [ -e "$f" ]; then basename "$f" .pid; fi
      done
    fi
  } | sort -u -V
  printf '%s\n' "${NODES[@]}"
}

# ---- HTTP without curl ----------------------------------------------------

# http_get PORT PATH prints the response body and succeeds on a 200.
http_get() {
  local port=$1 path=$2 status line body=""
  exec 3<>"/dev/tcp/$HOST/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$HOST" >&3
  IFS= read -r -t 5 status <&3 || status=""
  while IFS= read -r -t 5 line <&3; do # headers, up to the empty line
    [ -n "${line%$'\r'}" ] || break
  done
  line=""
  while IFS= read -r -t 5 line <&3; do body+=$line$'\n'; done
  body+=$line
  exec 3<&-
  printf '%s' "$body"
  [[ $status == *" 200 "* ]]
}

# port_free PORT: nothing accepts connections on HOST:PORT.
port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# wait_healthy I PATH waits until node I answers 200 on PATH.
wait_healthy() {
  local i=$1 path=$2 deadline=$((SECONDS + TIMEOUT)) name=${NODES[$1]}
  until http_get "${HTTP_PORTS[$i]}" "$path" >/dev/null 2>&1; do
    pid_of "$name" >/dev/null || fail "nats-server $name exited"
    ((SECONDS < deadline)) || fail "nats-server $name does not answer $path on port ${HTTP_PORTS[$i]} after ${TIMEOUT}s"
    sleep 0.2
  done
}

# ---- up -------------------------------------------------------------------

fail() {
  printf 'cluster.sh: %s\n' "$*" >&2
  local f
  for f in "$DIR"/logs/*.log; do
    [ -s "$f" ] || continue
    printf '\n--- last lines of %s\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
  printf '\ncluster.sh: stopping what was started\n' >&2
  down_all
  exit 1
}

install_nats_server() {
  local version have=""
  version=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
  if [ -x "$BIN/nats-server" ]; then
    have=$("$BIN/nats-server" --version 2>/dev/null || true)
  fi
  if [[ $have == *"$version"* ]]; then
    say "nats-server $version is in $BIN"
    return
  fi
  say "installing nats-server $version into $BIN (go install; under a minute the first time)"
  (cd "$ROOT" && GOBIN=$BIN go install "github.com/nats-io/nats-server/v2@$version")
}

build_rsp() {
  say "building rsp and nameserver into $BIN"
  (cd "$ROOT" && go build -o "$BIN/" ./clients/rsp ./services/nameserver)
}

# jwt_field FILE FIELD prints a string field of a JWT's claims.
jwt_field() {
  local payload
  payload=$(tr -d ' \n' <"$1" | cut -d. -f2 | tr '_-' '/+')
  while ((${#payload} % 4)); do payload+="="; done
  printf '%s' "$payload" | base64 -d 2>/dev/null | grep -o "\"$2\":\"[^\"]*\"" | head -n 1 | cut -d'"' -f4
}

render_node() {
  local i=$1 name=${NODES[$1]} conf routes=() j preload="" acct_jwt sys_key key
  local node=$DIR/nodes/$name
  mkdir -p "$node/js" "$node/jwt"
  for j in 0 1 2; do
    ((j == i)) || routes+=("nats-route://$HOST:${ROUTE_PORTS[$j]}")
  done
  sys_key=$(jwt_field "$DIR/auth/system/account.jwt" sub)
  preload="\"$sys_key\": \"$(tr -d ' \n' <"$DIR/auth/system/account.jwt")\""
  for acct_jwt in "$DIR"/auth/accounts/*/account.jwt; do
    key=$(jwt_field "$acct_jwt" sub)
    preload+=$',\n  '"\"$key\": \"$(tr -d ' \n' <"$acct_jwt")\""
  done
  conf=$(<"$TEMPLATE")
  conf=${conf//@SERVER_NAME@/$name}
  conf=${conf//@HOST@/$HOST}
  conf=${conf//@CLIENT_PORT@/${CLIENT_PORTS[$i]}}
  conf=${conf//@HTTP_PORT@/${HTTP_PORTS[$i]}}
  conf=${conf//@ROUTE_PORT@/${ROUTE_PORTS[$i]}}
  conf=${conf//@CLUSTER_NAME@/$CLUSTER_NAME}
  conf=${conf//@STORE_DIR@/$node/js}
  conf=${conf//@RESOLVER_DIR@/$node/jwt}
  conf=${conf//@OPERATOR_JWT@/$DIR/auth/operator.jwt}
  conf=${conf//@SYSTEM_ACCOUNT@/$sys_key}
  local IFS=,
  conf=${conf//@ROUTES@/"${routes[*]}"}
  conf=${conf//@PRELOAD@/$preload}
  printf '%s\n' "$conf" >"$node/nats.conf"
  "$BIN/nats-server" -c "$node/nats.conf" -t >/dev/null 2>&1 ||
    die "$node/nats.conf does not parse: $("$BIN/nats-server" -c "$node/nats.conf" -t 2>&1 | tail -n 3)"
}

up() {
  check_settings
  command -v go >/dev/null || die "go is not on PATH (rsp needs Go 1.26)"
  [ -f "$TEMPLATE" ] || die "no template $TEMPLATE"
  mkdir -p "$DIR" "$BIN" "$DIR/pids" "$DIR/logs" "$DIR/nodes"
  local name running=0
  for name in "${NODES[@]}" $(nameserver_names); do
    if pid_of "$name" >/dev/null; then running=$((running + 1)); fi
  done
  if ((running == 3 + NAMESERVERS)); then
    say "already running"
    status
    return
  elif ((running > 0)); then
    die "part of the cluster runs already ($running processes); run '$0 down' first"
  fi
  local p
  for p in "${CLIENT_PORTS[@]}" "${ROUTE_PORTS[@]}" "${HTTP_PORTS[@]}" "${METRICS_PORTS[@]:0:NAMESERVERS}"; do
    port_free "$p" || die "$HOST:$p is in use (set RSP_CLUSTER_CLIENT_PORTS, _ROUTE_PORTS, _HTTP_PORTS, _METRICS_PORTS)"
  done
  local t0=$SECONDS
  install_nats_server
  build_rsp

  say "auth store: $BIN/rsp auth init --data $DIR --scope $SCOPE"
  "$BIN/rsp" --data "$DIR" auth init --scope "$SCOPE" | sed 's/^/    /'
  local op_key
  op_key=$(jwt_field "$DIR/auth/operator.jwt" sub)
  [ -n "$op_key" ] || die "cannot read the operator key from $DIR/auth/operator.jwt"

  local i
  for i in 0 1 2; do
    render_node "$i"
    say "starting nats-server ${NODES[$i]}: client $HOST:${CLIENT_PORTS[$i]}, routes :${ROUTE_PORTS[$i]}, monitoring :${HTTP_PORTS[$i]} ($DIR/nodes/${NODES[$i]}/nats.conf)"
    start "${NODES[$i]}" "$BIN/nats-server" -c "$DIR/nodes/${NODES[$i]}/nats.conf"
  done
  say "waiting for JetStream on every node (/healthz?js-enabled-only=true, at most ${TIMEOUT}s each)"
  for i in 0 1 2; do wait_healthy "$i" "/healthz?js-enabled-only=true"; done
  say "waiting for the JetStream meta leader (/healthz)"
  for i in 0 1 2; do wait_healthy "$i" "/healthz"; done

  local urls
  urls=$(nats_urls)
  # One after the other: the first creates the stream and buckets, the
  # others find them.
  # --account-jwt: the first name server puts the scope account's JWT into
  # the bucket rsp_auth, where every replica keeps it current.
  local creds=$DIR/auth/creds/$SCOPE/nameserver.creds acct=$DIR/auth/accounts/$SCOPE/account.jwt deadline metrics
  for name in $(nameserver_names); do
    metrics=$HOST:$(metrics_port "$name")
    say "starting name server $name: nameserver --nats $urls --creds $creds --account-jwt $acct --operator-key $op_key --scope $SCOPE --replicas $REPLICAS --id $name --metrics $metrics"
    start "$name" "$BIN/nameserver" --nats "$urls" --creds "$creds" --account-jwt "$acct" --operator-key "$op_key" \
      --scope "$SCOPE" --replicas "$REPLICAS" --id "$name" --metrics "$metrics"
    deadline=$((SECONDS + TIMEOUT))
    until grep -q "^rsp name server" "$DIR/logs/$name.log" 2>/dev/null; do
      pid_of "$name" >/dev/null || fail "name server $name exited"
      ((SECONDS < deadline)) || fail "name server $name is not serving after ${TIMEOUT}s"
      sleep 0.2
    done
  done
  printf 'export RSP_NATS=%s\nexport RSP_DATA=%s\nexport RSP_SCOPE=%s\n' "$urls" "$DIR" "$SCOPE" >"$DIR/env"
  say "up in $((SECONDS - t0))s"
  cat <<EOF

The cluster runs: nats-server n1 n2 n3 on $HOST:${CLIENT_PORTS[0]},${CLIENT_PORTS[1]},${CLIENT_PORTS[2]} (JetStream, operator mode),
name servers $(nameserver_names | paste -sd ' ' -) (stream and buckets with $REPLICAS replicas). Logs: $DIR/logs/
Pool pages (and /metrics, /readyz): $(for n in $(nameserver_names); do printf 'http://%s:%s/ ' "$HOST" "$(metrics_port "$n")"; done)

Use it (the rsp CLI takes its role's creds from $DIR/auth/creds/$SCOPE/):
  RSP=$BIN/rsp
  \$RSP --nats $urls --data $DIR register echo --addr tcp:127.0.0.1:7001 --id echo-1 &
  \$RSP --nats $urls --data $DIR resolve echo
or, with the settings in the environment:
  . $DIR/env && $BIN/rsp pools

Kill a node: kill -9 \$(cat $DIR/pids/n1.pid)
Status: $0 status     Stop: $0 down [--clean]
EOF
}

# ---- down, status ---------------------------------------------------------

down_all() {
  local ns=() name
  for name in $(all_names); do
    case $name in ns*) ns+=("$name") ;; esac
  done
  stop "${ns[@]}"
  stop "${NODES[@]}"
}

down() {
  local clean=${1:-}
  if [ ! -d "$DIR" ]; then
    say "nothing in $DIR"
    return
  fi
  say "stopping the name servers, then the nats-servers (SIGTERM, SIGKILL after ${TIMEOUT}s)"
  down_all
  if [ "$clean" = --clean ]; then
    say "deleting $DIR (keeping $BIN)"
    local f
    for f in "$DIR"/* "$DIR"/.[!.]*; do
      [ -e "$f" ] || continue
      [ "$f" = "$BIN" ] && continue
      rm -rf -- "$f"
    done
    rmdir "$DIR" 2>/dev/null || true
  else
    say "stopped; data kept in $DIR ('$0 down --clean' deletes it)"
  fi
}

# probe LABEL PORT PATH prints ", LABEL <body>" for a 200, else
# ", LABEL NOT OK <body>".
probe() {
  local body
  if body=$(http_get "$2" "$3"); then
    printf ', %s %s' "$1" "$body"
  else
    printf ', %s NOT OK %s' "$1" "$body"
  fi
}

status() {
  local name pid i
  for name in $(all_names); do
    if pid=$(pid_of "$name"); then
      printf '  %-4s running (pid %s)' "$name" "$pid"
      for i in 0 1 2; do
        if [ "${NODES[$i]}" = "$name" ]; then
          printf ', client %s:%s' "$HOST" "${CLIENT_PORTS[$i]}"
          probe healthz "${HTTP_PORTS[$i]}" /healthz
        fi
      done
      case $name in ns*)
        if [ -n "$(metrics_port "$name")" ]; then
          printf ', page http://%s:%s/' "$HOST" "$(metrics_port "$name")"
          probe readyz "$(metrics_port "$name")" /readyz
        fi
        ;;
      esac
      printf '\n'
    else
      printf '  %-4s not running\n' "$name"
    fi
  done
}

main() {
  case "${1:-}" in
  up) up ;;
  down)
    case "${2:-}" in
    "" | --clean) down "${2:-}" ;;
    *) die "down takes only --clean" ;;
    esac
    ;;
  status)
    check_settings
    status
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
