#!/bin/bash
# shellcheck disable=SC2016 # '$1' in bash -c '...' is the child shell's argument
#
# The bash every exported SLURM script carries: probes, the per-service supervisor, the cleanup trap.
# `sparc-agent export slurm` pastes it into the script from the "job library" marker on; this file is
# package data, and tests/test_export_slurm.py runs shellcheck on it alone and on every script.
# What it uses from the script around it: SPARC_RUN, SPARC_HEALTH_TIMEOUT, the SUPERVISORS and HEALTHY
# arrays, runtime_running/runtime_stop, and start_NAME/probe_NAME for each service.
# ---- sparc-agent job library (the same in every exported script) ----
log() { printf '%s sparc: %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { log "ERROR: $*"; exit 1; }

# Probes run from the node against 127.0.0.1, like the agent does from the VM. Each exits 0 when healthy.
# The _helpers open /dev/tcp or /dev/udp sockets; they run under `timeout` in a child bash (export -f).
_tcp_connect() { exec 3<>"/dev/tcp/127.0.0.1/$1"; }
_http_status() { # PORT PATH: the status code of a GET
  local _ code _rest
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
  read -r _ code _rest <&3 && printf '%s\n' "$code"
}
_ws_head() { # PORT PATH: the response head of a WebSocket upgrade (a fixed key: servers accept any)
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n' "$2" "$1" >&3
  printf 'Upgrade: websocket\r\nConnection: Upgrade\r\n' >&3
  printf 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' >&3
  while IFS= read -r line <&3; do
    line=${line%$'\r'}
    [[ -z $line ]] && break
    printf '%s\n' "$line"
  done
}
_stun_ask() { # PORT TRANSACTION_ID(24 hex digits): one Binding Request, the answer datagram as hex
  local i request='\x00\x01\x00\x00\x21\x12\xa4\x42' # Binding Request, length 0, magic cookie
  for ((i = 0; i < 24; i += 2)); do request+="\\x${2:i:2}"; done
  exec 3<>"/dev/udp/127.0.0.1/$1" || return 1
  printf '%b' "$request" >&3 # one write: one datagram
  dd bs=2048 count=1 <&3 2>/dev/null | od -An -tx1 | tr -d ' \n'
}
export -f _tcp_connect _http_status _ws_head _stun_ask

probe_tcp() { # PORT TIMEOUT
  timeout "$2" bash -c '_tcp_connect "$1"' _ "$1" 2>/dev/null
}
probe_http() { # PORT PATH STATUS_LO STATUS_HI TIMEOUT
  local code
  if command -v curl >/dev/null; then
    code=$(curl -gs -o /dev/null -w '%{http_code}' --max-time "$5" "http://127.0.0.1:$1$2") || true
  else
    code=$(timeout "$5" bash -c '_http_status "$1" "$2"' _ "$1" "$2" 2>/dev/null) || true
  fi
  [[ $code =~ ^[0-9]{3}$ ]] && ((10#$code >= $3 && 10#$code <= $4))
}
probe_websocket() { # PORT PATH TIMEOUT: RFC 6455 handshake, 101 with the right Sec-WebSocket-Accept
  local head
  head=$(timeout "$3" bash -c '_ws_head "$1" "$2"' _ "$1" "$2" 2>/dev/null) || return 1
  [[ $head == "HTTP/1.1 101"* ]] &&
    grep -qi '^sec-websocket-accept: *s3pPLMBiTxaQ9kYGzzhZRbK+xOo=$' <<<"$head" # RFC 6455's example key
}
probe_grpc() { # PORT REQUEST(printf %b bytes) TIMEOUT: grpc.health.v1 Check over h2c, with curl
  local body
  if ! curl -V 2>/dev/null | grep -q HTTP2; then
    probe_tcp "$1" "$3" # weaker: without curl + HTTP/2 only the TCP connect is checked
    return
  fi
  body=$(printf '%b' "$2" | curl -s --http2-prior-knowledge --max-time "$3" -X POST \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- \
    "http://127.0.0.1:$1/grpc.health.v1.Health/Check" | od -An -tx1 | tr -d ' \n')
  [[ $body == 00000000020801 ]] # HealthCheckResponse{status: SERVING}
}
probe_stun() { # PORT TIMEOUT: a Binding Success Response (0x0101) carrying our transaction id
  local tid answer
  tid=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  answer=$(timeout "$2" bash -c '_stun_ask "$1" "$2"' _ "$1" "$tid" 2>/dev/null) || return 1
  [[ ${answer:0:4} == 0101 && ${answer:8:32} == "2112a442$tid" ]]
}
export -f probe_tcp probe_http probe_websocket probe_grpc probe_stun
# podman: a port the pod does not publish is probed inside the pod's network namespace, where it
# listens (rootless: join podman's user namespace first, keeping our own uid)
in_pod() { # PROBE ARGS...
  local infra pid
  infra=$(podman pod inspect -f '{{.InfraContainerID}}' "$POD" 2>/dev/null) || return 1
  pid=$(podman container inspect -f '{{.State.Pid}}' "$infra" 2>/dev/null) || return 1
  [[ $pid =~ ^[1-9][0-9]*$ ]] || return 1
  if ((EUID == 0)); then
    nsenter -t "$pid" -n -- bash -c '"$@"' _ "$@"
  else
    nsenter -t "$pid" -U --preserve-credentials -n -- bash -c '"$@"' _ "$@"
  fi
}

# One supervisor per service: starts it, restarts it per the profile's policy and backoff.
supervise() { # NAME POLICY BACKOFF_INITIAL BACKOFF_MAX MULTIPLIER MAX_RESTARTS WINDOW
  local name=$1 policy=$2 delay=$3 restarts=0 child=0 rc started
  trap 'stop_child "$child"; exit 0' TERM
  while :; do
    started=$SECONDS
    "start_${name//-/_}" &
    child=$!
    echo "$child" >"$SPARC_RUN/$name.pid"
    wait "$child"
    rc=$?
    rm -f "$SPARC_RUN/$name.pid"
    case $policy in
      no) log "$name: exited $rc (restart policy no)"; return "$rc" ;;
      on-failure) if ((rc == 0)); then log "$name: exited 0 (restart policy on-failure)"; return 0; fi ;;
    esac
    if ((SECONDS - started >= $7)); then restarts=0 delay=$3; fi
    if ((restarts >= $6)); then
      log "$name: FATAL: exited $rc, $restarts restarts within ${7}s"
      return "$rc"
    fi
    restarts=$((restarts + 1))
    log "$name: exited $rc; restart $restarts/$6 in ${delay}s"
    sleep "$delay" &
    wait $!
    delay=$(awk -v d="$delay" -v m="$5" -v x="$4" 'BEGIN { d *= m; if (d > x) d = x; print d }')
  done
}
stop_child() { # PID: TERM, then KILL after 10 s
  local i
  kill -TERM "$1" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null
}
launch() { # NAME POLICY ...: start its supervisor in the background
  supervise "$@" &
  SUPERVISORS[$1]=$!
  log "$1: starting"
}
is_up() { # NAME: its process runs (and, for podman, its container)
  local pid
  pid=$(cat "$SPARC_RUN/$1.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && runtime_running "$1"
}
await_started() { # NAME
  local deadline=$((SECONDS + SPARC_HEALTH_TIMEOUT))
  until is_up "$1"; do
    kill -0 "${SUPERVISORS[$1]}" 2>/dev/null || fail "$1 exited before it started"
    ((SECONDS < deadline)) || fail "$1 not running after ${SPARC_HEALTH_TIMEOUT}s"
    sleep 0.2
  done
}
await_healthy() { # NAME INTERVAL START_PERIOD
  local deadline=$((SECONDS + $3 + SPARC_HEALTH_TIMEOUT)) t0=$SECONDS
  [[ -z ${HEALTHY[$1]:-} ]] || return 0
  until is_up "$1" && "probe_${1//-/_}"; do
    kill -0 "${SUPERVISORS[$1]}" 2>/dev/null || fail "$1 exited before it was healthy"
    ((SECONDS < deadline)) || fail "$1 not healthy after $(($3 + SPARC_HEALTH_TIMEOUT))s"
    sleep "$2"
  done
  HEALTHY[$1]=1
  log "$1: healthy after $((SECONDS - t0))s"
}
cleanup() { # on scancel, time limit (TERM) and any exit: stop every service, remove what we made
  trap - EXIT
  trap '' TERM INT # a second TERM (SLURM sends it to every process) must not cut the cleanup short
  local pid
  log "stopping ${#SUPERVISORS[@]} services"
  for pid in "${SUPERVISORS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  runtime_stop
  wait
  rm -rf "$SPARC_RUN"
  log "stopped"
}
read_secret_file() { # VAR FILE: the whole file, trailing newline included (as podman secrets do)
  [[ -r $2 ]] || fail "secret file $2 is not readable"
  IFS= read -r -d '' "$1" <"$2" || true
}
read_secret_env() { # VAR SOURCE: from the job's environment (sbatch exports the submitter's by default)
  [[ -n ${!2+set} ]] || fail "secret source \$$2 is not set in the job's environment"
  printf -v "$1" '%s' "${!2}"
}
# ---- end of library ----
