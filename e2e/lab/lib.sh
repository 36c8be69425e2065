# shellcheck shell=bash
# Shared by the lab scripts: names, paths, and starting/stopping one host's engine.
# Every host is a network namespace NAME with its own dockerd; all state of the harness lives in
#   $E2E_RUN   (/run/swarm-upgrade-e2e):  NAME.sock, NAME.pid, NAME.x (exec-root), markers
#   $E2E_LIB   (/var/lib/swarm-upgrade-e2e): hosts/NAME/{data,engine,previous-engine,dockerd.log,lock}
#   $E2E_CACHE (/var/cache/swarm-upgrade-e2e): the engine bundles
# Node data (host name, version) only ever travels as arguments, never inside a shell string.

E2E_RUN=${SWARM_UPGRADE_E2E_RUN:-/run/swarm-upgrade-e2e}
E2E_LIB=${SWARM_UPGRADE_E2E_LIB:-/var/lib/swarm-upgrade-e2e}
E2E_CACHE=${SWARM_UPGRADE_E2E_CACHE:-/var/cache/swarm-upgrade-e2e}
E2E_BRIDGE=${SWARM_UPGRADE_E2E_BRIDGE:-sue-br0}
E2E_NET=${SWARM_UPGRADE_E2E_NET:-192.168.231}   # the lab's /24: bridge .1, host nK .1K
E2E_HOSTS=(n1 n2 n3 n4 n5)
E2E_MANAGERS=(n1 n2 n3)
# TLS material lab-up makes (tls-certs): ca.pem; NAME/{cert,key}.pem per manager; client/ for the
# operator; other-ca/ a second CA and a client signed by it (for the "wrong CA" case)
E2E_TLS="$E2E_LIB/tls"
# per host: sshd_config, host key, authorized_keys, sshd.log (sshd runs in the host's namespace)
E2E_SSH="$E2E_LIB/ssh"
E2E_SSH_USER=${SWARM_UPGRADE_E2E_SSH_USER:-swarm-upgrade}

# Write a line to stderr and never fail doing so: the operator that runs upgrade-host reads its
# stderr through a pipe, and when the operator is killed (scenario 3) the pipe has no reader any
# more. The scripts ignore SIGPIPE and go on: a node upgrade must not die half-way because its
# caller did.
say() { printf '%s\n' "$*" >&2 2>/dev/null || true; }

valid_host() {
  case "$1" in n[1-5]) return 0 ;; *) echo "not a lab host: $1" >&2; return 1 ;; esac
}
host_ip()   { echo "$E2E_NET.1${1#n}"; }
host_dir()  { echo "$E2E_LIB/hosts/$1"; }
host_sock() { echo "$E2E_RUN/$1.sock"; }
host_pidfile() { echo "$E2E_RUN/$1.pid"; }
bundle_dir() { echo "$E2E_CACHE/bundles/$1"; }

# the pid of NAME's dockerd if it is running (and is really ours), else nothing
host_pid() {
  local pf pid
  pf=$(host_pidfile "$1")
  # the engine removes its pidfile as it exits: gone between the test and the read is "not running"
  pid=$(cat "$pf" 2>/dev/null) || return 0
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
  # guard against pid reuse: it must be a dockerd with our pidfile on its command line
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--pidfile $pf"; then
    echo "$pid"
  fi
}

# the engine version installed on NAME (the bundle its engine link points at)
host_engine() {
  local link
  link=$(readlink "$(host_dir "$1")/engine" 2>/dev/null) || return 0
  basename "$link"
}

# wait until pid $1 is gone (SIGTERM already sent), up to $2 seconds, then SIGKILL
wait_pid_gone() {
  local pid=$1 limit=$2 i=0
  while [ -d "/proc/$pid" ]; do
    # a zombie of ours is gone for our purpose
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    i=$((i + 1))
    if [ "$i" -ge $((limit * 10)) ]; then
      say "pid $pid still there after ${limit}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
  done
}

# kill the processes recorded in pidfiles under NAME's exec-root (containerd, shims) that dockerd
# left behind; only pids whose command line names our exec-root
reap_exec_root() {
  local xr pf pid
  xr="$E2E_RUN/$1.x"
  [ -d "$xr" ] || return 0
  while IFS= read -r pf; do
    pid=$(cat "$pf" 2>/dev/null) || continue
    case "$pid" in '' | *[!0-9]*) continue ;; esac
    [ -d "/proc/$pid" ] || continue
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$xr"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done < <(find "$xr" -name '*.pid' 2>/dev/null)
}

stop_host() {
  local pid
  pid=$(host_pid "$1")
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 60
  fi
  reap_exec_root "$1"
  rm -f "$(host_pidfile "$1")"
}

# start NAME's dockerd from the bundle its engine link points at, in its namespace, and wait until
# the engine answers on its socket
start_host() {
  local name=$1 dir bin sock pf log
  dir=$(host_dir "$name")
  bin="$dir/engine"
  sock=$(host_sock "$name")
  pf=$(host_pidfile "$name")
  log="$dir/dockerd.log"
  [ -x "$bin/dockerd" ] || { say "$name: no engine installed at $bin"; return 1; }
  [ -z "$(host_pid "$name")" ] || return 0
  # a manager with a certificate also answers on tcp://IP:2376, TLS only, client certificate
  # required (as charts/swarm-upgrade/README.md asks of every manager)
  local tls=()
  if [ -e "$E2E_TLS/$name/cert.pem" ]; then
    tls=(-H "tcp://$(host_ip "$name"):2376" --tlsverify --tlscacert "$E2E_TLS/ca.pem"
      --tlscert "$E2E_TLS/$name/cert.pem" --tlskey "$E2E_TLS/$name/key.pem")
  fi
  rm -f "$sock" "$pf"
  mkdir -p "$dir/data" "$E2E_RUN/$name.x"
  echo "=== $(date -u) starting $(readlink "$bin")" >> "$log"
  # the folder of the bundle first on PATH: dockerd runs that bundle's containerd, runc, docker-proxy
  # (setsid: the engine outlives the script and the process that called it; the lock fds 8 and 9
  # are closed, or the engine would hold the host's flock for its whole life)
  env -i PATH="$(readlink -f "$bin"):/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root \
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 \
    setsid nsenter --net="/var/run/netns/$name" \
    unshare --uts sh -c 'hostname "$1"; shift; exec dockerd "$@"' sh "$name" \
    --data-root "$dir/data" --exec-root "$E2E_RUN/$name.x" -H "unix://$sock" --pidfile "$pf" \
    "${tls[@]}" --log-level warn \
    >> "$log" 2>&1 < /dev/null 8>&- 9>&- &
  local launched=$! i=0
  until docker -H "unix://$sock" version --format '{{.Server.Version}}' >/dev/null 2>&1; do
    if ! [ -d "/proc/$launched" ]; then
      say "$name: dockerd exited; tail of $log:"
      say "$(tail -n 20 "$log")"
      return 1
    fi
    i=$((i + 1))
    [ "$i" -lt 600 ] || { say "$name: engine not answering after 60s"; return 1; }
    sleep 0.1
  done
}

# sshd of NAME, in its namespace on IP:22: key-only, one account, whose authorized key is pinned to
# the forced command ssh-upgrade for that host (the shape charts/swarm-upgrade/README.md
# recommends). Needs the account and the key made by lab-up.
sshd_pidfile() { echo "$E2E_RUN/$1-sshd.pid"; }

start_sshd() {
  local name=$1 dir
  dir="$E2E_SSH/$name"
  mkdir -p /run/sshd
  cat > "$dir/sshd_config" <<CFG
ListenAddress $(host_ip "$name"):22
HostKey $dir/host_ed25519_key
PidFile $(sshd_pidfile "$name")
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $E2E_SSH_USER
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
Subsystem sftp none
CFG
  nsenter --net="/var/run/netns/$name" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
}

stop_sshd() {
  local pf pid
  pf=$(sshd_pidfile "$1")
  pid=$(cat "$pf" 2>/dev/null) || return 0
  if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$E2E_SSH/$1/sshd_config"; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 10
  fi
  rm -f "$pf"
}
