# Shared by bench/run-*: install missing Debian packages, set up .venv, run a Python
# benchmark in the background under a trap that cleans up after it. Source it; do not run it.

# bench_need NAME PACKAGE [NAME PACKAGE ...]: install PACKAGE when NAME is missing. NAME is a
# command, or a path when it starts with "/". Installs with apt-get as root; otherwise names
# the packages and exits.
bench_need() {
  local need=() name pkg
  while [ $# -ge 2 ]; do
    name=$1 pkg=$2
    shift 2
    if [ "${name#/}" != "$name" ]; then
      [ -e "$name" ] || need+=("$pkg")
    else
      command -v "$name" >/dev/null 2>&1 || need+=("$pkg")
    fi
  done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "${BENCH_NAME:-bench}: installing ${need[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "${BENCH_NAME:-bench}: please install: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
}

# bench_run SCRIPT [ARGS...]: run `.venv/bin/python SCRIPT ARGS` in the background and wait.
# The script stops every process it started on exit, error or signal, and each of them gets
# PR_SET_PDEATHSIG (bench/common.py). It keeps the list of live process groups in
# $BENCH_PGID_FILE: if it dies anyway, the trap kills those groups (an nginx worker outlives
# its killed master) and removes the temp dir.
bench_run() {
  BENCH_TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/${BENCH_NAME:-bench}-XXXXXX")
  BENCH_PGID_FILE=$BENCH_TMPDIR/pgids
  : >"$BENCH_PGID_FILE"
  export BENCH_TMPDIR BENCH_PGID_FILE
  _bench_py=""
  trap _bench_cleanup EXIT
  trap 'exit 130' INT TERM HUP
  .venv/bin/python "$@" &
  _bench_py=$!
  local status=0
  wait "$_bench_py" || status=$?
  exit "$status"
}

_bench_cleanup() {
  if [ -n "$_bench_py" ] && kill -0 "$_bench_py" 2>/dev/null; then
    kill -TERM "$_bench_py" 2>/dev/null || true
    wait "$_bench_py" 2>/dev/null || true
  fi
  while read -r group; do
    [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null || true
  done <"$BENCH_PGID_FILE"
  rm -rf "$BENCH_TMPDIR"
}
