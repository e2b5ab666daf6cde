#!/usr/bin/env bash
# check_aarch64.sh: the edgetune device agent, unchanged, on aarch64 (QEMU user-mode emulation on an x86_64
# host), measured from the x86 controller over HTTP. Not part of the test suite (issue #14).
#
# What it does:
#   1. installs qemu-user-static, debootstrap and binfmt-support (apt) and checks that the kernel runs
#      aarch64 binaries through binfmt_misc (the agent starts its measurement workers with sys.executable,
#      so exec of an aarch64 binary must work, not only `qemu-aarch64-static python3`);
#   2. builds a Debian bookworm arm64 root filesystem with debootstrap (cached, reused by later runs);
#   3. in that chroot: a venv with the agent's documented install line, pip install "edgetune[agent]" (from
#      a copy of this checkout), and checks that torch and the controller's other heavy packages are absent;
#   4. starts `edgetune agent serve --kind local-cpu --name arm64` there, on 127.0.0.1:$PORT (the chroot
#      shares the host's network), and an x86 agent from the controller's venv;
#   5. on the x86 controller: compresses det-s (fp32, int8-uniform), measures both artifacts on both agents
#      with accuracy computed by each agent from its own runtime's outputs (a dataset bundle of the shapes
#      validation images), and checks that mAP50-95 on aarch64 equals x86 within 1e-3. Latency under
#      emulation is meaningless and is labelled so.
#   It prints the aarch64 agent's fingerprint (GET /info, what `edgetune devices` shows), a table, the time
#   of each phase and in all; exit 0 when every mAP matches, 1 otherwise.
#
# Requirements: root (debootstrap, chroot, mount), a Debian/Ubuntu x86_64 host whose kernel has binfmt_misc
#   (a container must be allowed to register it, or the host must have qemu-aarch64 registered already),
#   ~1.5 GB of disk under the cache dir, network to the Debian mirror and PyPI, and the controller venv of
#   this checkout (`make install`: .venv with torch).
# Time on a 2-core box: first run ~10-15 min (debootstrap ~5 min, most of it the emulated second stage;
#   pip ~2-3 min; the emulated measurements ~2 min), later runs ~2.5-4 min (rootfs and venv are reused).
# Disk: ~0.7 GB for the rootfs with the agent venv (under $EDGETUNE_AARCH64_CACHE).
#
# Usage: sudo scripts/check_aarch64.sh
# Environment (all optional):
#   EDGETUNE_AARCH64_CACHE   cache dir (default ~/.cache/edgetune-aarch64)
#   EDGETUNE_AARCH64_ROOT    arm64 root filesystem (default $EDGETUNE_AARCH64_CACHE/rootfs)
#   EDGETUNE_AARCH64_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   EDGETUNE_AARCH64_PORT    port of the aarch64 agent (default 8799)
#   EDGETUNE_AARCH64_VAL_IMAGES  validation images in the bundle (default 50)
#   EDGETUNE_X86_PYTHON      the controller's python (default <repo>/.venv/bin/python)
#   EDGETUNE_AARCH64_REBUILD=1   delete the cached rootfs and build it again
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EDGETUNE_AARCH64_CACHE:-$HOME/.cache/edgetune-aarch64}
ROOTFS=${EDGETUNE_AARCH64_ROOT:-$CACHE/rootfs}
MIRROR=${EDGETUNE_AARCH64_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PORT=${EDGETUNE_AARCH64_PORT:-8799}
VAL_IMAGES=${EDGETUNE_AARCH64_VAL_IMAGES:-50}
X86_PY=${EDGETUNE_X86_PYTHON:-$REPO/.venv/bin/python}
RUN=$CACHE/run                  # host side: config, artifacts, logs of this run
OPT=/opt/edgetune               # inside the chroot: src (copy of the checkout), venv, agent workdir, token
HEAVY="torch torch-pruning optuna ray mlflow mlflow-skinny pandas matplotlib plotly onnxscript"
MARK=$ROOTFS/.edgetune-rootfs-complete

T0=$(date +%s)
PHASES=()
PHASE_NAME=""
PHASE_T=$T0
AGENT_PID=""
CTRL_PID=""

log() { echo "==> [$(date +%H:%M:%S)] $*"; }
die() { echo "ERROR: $*" >&2; exit 1; }
phase() {  # phase NAME: close the running phase (record its duration) and start NAME
  local now; now=$(date +%s)
  [[ -n $PHASE_NAME ]] && PHASES+=("$(printf '%-50s %5d s' "$PHASE_NAME" $((now - PHASE_T)))")
  PHASE_NAME=$1
  PHASE_T=$now
  [[ -n $1 ]] && log "phase: $1"
  return 0
}

mounts_under() {  # mount points at or below $1, deepest first
  awk -v root="$1" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/self/mounts | sort -r
}

unmount_all() {
  local m
  for m in $(mounts_under "$ROOTFS"); do
    umount "$m" 2>/dev/null || umount -l "$m" || echo "warning: could not unmount $m" >&2
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $CTRL_PID ]] && kill -0 "$CTRL_PID" 2>/dev/null; then
    log "stopping the controller (pid $CTRL_PID; it stops its x86 agent)"
    kill -TERM "$CTRL_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$CTRL_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$CTRL_PID" 2>/dev/null || true
  fi
  if [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    log "stopping the aarch64 agent (process group $AGENT_PID)"
    kill -TERM -- "-$AGENT_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$AGENT_PID" 2>/dev/null || true
  fi
  [[ -d $ROOTFS ]] && unmount_all
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The chroot's environment: nothing from the host leaks in (no host PYTHONPATH, no host venv).
# Proxy variables are passed on (pip in the chroot goes out the way the host does).
in_chroot() {
  local -a pass=()
  local v
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n ${!v:-} ]] && pass+=("$v=${!v}")
  done
  chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb "${pass[@]}" \
    PATH=$OPT/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# ------------------------------------------------------------------------------------------------- checks
phase "preflight"
log "check_aarch64.sh (pid $$): repo $REPO, cache $CACHE"
[[ $EUID -eq 0 ]] || die "run as root: debootstrap, chroot and mount need it (sudo $0)."
[[ $(uname -m) == x86_64 ]] || die "this script emulates aarch64 on an x86_64 host; this host is $(uname -m)."
command -v apt-get >/dev/null || die "needs a Debian/Ubuntu host (apt-get not found)."
[[ -x $X86_PY ]] || die "no controller python at $X86_PY: run 'make install' in $REPO or set EDGETUNE_X86_PYTHON."
"$X86_PY" -c "import edgetune, torch, onnxruntime" 2>/dev/null \
  || die "$X86_PY cannot import edgetune, torch and onnxruntime: run 'make install' in $REPO."
mkdir -p "$CACHE" "$RUN"
exec 9>"$CACHE/lock"
flock -n 9 || die "another check_aarch64.sh is running (lock $CACHE/lock held); wait for it to finish."
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  die "port $PORT on 127.0.0.1 is in use: stop what listens there or set EDGETUNE_AARCH64_PORT."
fi
unmount_all  # left over by a run that was killed -9

phase "host packages (apt)"
missing=()
for p in qemu-user-static debootstrap binfmt-support; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -q || die "apt-get update failed: check the network and /etc/apt/sources.list."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
    || die "could not install ${missing[*]} with apt-get."
else
  log "qemu-user-static, debootstrap and binfmt-support are installed"
fi

phase "binfmt_misc registration of qemu-aarch64"
BINFMT=/proc/sys/fs/binfmt_misc
if [[ ! -e $BINFMT/status ]]; then
  log "mounting binfmt_misc on $BINFMT"
  mount -t binfmt_misc binfmt_misc "$BINFMT" \
    || die "binfmt_misc is not mounted and cannot be mounted here (an unprivileged container?):" \
           "run on the host, in a --privileged container, or register qemu-aarch64 on the host first."
fi
if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null; then
  log "update-binfmts --enable qemu-aarch64"
  update-binfmts --enable qemu-aarch64 || true
fi
grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null \
  || die "qemu-aarch64 is not registered with binfmt_misc and registering it failed ($BINFMT/register" \
         "not writable?). The agent execs aarch64 worker processes, so this is required. On the host:" \
         "apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-aarch64."
INTERP=$(awk '$1 == "interpreter" {print $2}' "$BINFMT/qemu-aarch64")
FLAGS=$(awk '$1 == "flags:" {print $2}' "$BINFMT/qemu-aarch64")
log "qemu-aarch64: interpreter $INTERP, flags ${FLAGS:-none} ($(qemu-aarch64-static --version | head -1))"

install_interpreter() {  # without the F flag the kernel opens the interpreter inside the chroot
  mkdir -p "$ROOTFS$(dirname "$INTERP")" "$ROOTFS/usr/bin"
  cp -f /usr/bin/qemu-aarch64-static "$ROOTFS/usr/bin/qemu-aarch64-static"
  [[ $INTERP == /usr/bin/qemu-aarch64-static ]] || ln -sf /usr/bin/qemu-aarch64-static "$ROOTFS$INTERP"
}

# ------------------------------------------------------------------------------------------------- rootfs
phase "arm64 root filesystem (debootstrap)"
if [[ ${EDGETUNE_AARCH64_REBUILD:-0} == 1 || ! -f $MARK ]]; then
  if [[ -e $ROOTFS ]]; then
    [[ -z $(mounts_under "$ROOTFS") ]] || die "something is still mounted under $ROOTFS; unmount it first."
    log "removing the incomplete (or to be rebuilt) rootfs at $ROOTFS"
    rm -rf --one-file-system "$ROOTFS"
  fi
  mkdir -p "$ROOTFS"
  log "debootstrap --foreign --arch=arm64 $SUITE $ROOTFS $MIRROR (first stage, native)"
  debootstrap --foreign --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates "$SUITE" "$ROOTFS" "$MIRROR" \
    || die "debootstrap (first stage) failed: is $MIRROR reachable? Log: $ROOTFS/debootstrap/debootstrap.log"
  install_interpreter
  log "debootstrap --second-stage inside the chroot (emulated; the slow part, ~4-10 min)"
  chroot "$ROOTFS" /debootstrap/debootstrap --second-stage \
    || die "debootstrap second stage failed; see $ROOTFS/debootstrap/debootstrap.log (rerun to start over)."
  touch "$MARK"
else
  log "reusing $ROOTFS (EDGETUNE_AARCH64_REBUILD=1 rebuilds it)"
fi
install_interpreter
arch=$(in_chroot /usr/bin/python3 -c "import platform; print(platform.machine())") \
  || die "cannot run the chroot's python3: is qemu-aarch64 registered (see above)?"
[[ $arch == aarch64 ]] || die "the chroot's python3 reports machine '$arch', expected aarch64."
log "chroot python3: $(in_chroot /usr/bin/python3 --version) on $arch"

phase "chroot mounts"
# No /sys: under qemu-user the chroot sees the host's x86 /proc/cpuinfo, and onnxruntime's cpuinfo library,
# finding /sys/devices/system/cpu/{possible,present} as well, crashes (SIGSEGV on `import onnxruntime`, QEMU
# 7.2 and 10.0 alike). Without /sys it only warns "cpuinfo_initialize failed" (MLAS still picks its kernels
# from the aarch64 HWCAPs). The fingerprint then has no governor and no DMI name (which would be the x86 host's).
mount -t proc proc "$ROOTFS/proc"
mount --rbind /dev "$ROOTFS/dev"
mount --make-rslave "$ROOTFS/dev"
cp -fL /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
log "mounted /proc and /dev under $ROOTFS (not /sys, see the comment); copied resolv.conf"
# The host's own CAs (a TLS-inspecting proxy, a company CA): pip in the chroot must trust them too.
shopt -s nullglob
local_cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
ca_changed=0
for ca in "${local_cas[@]}"; do
  cmp -s "$ca" "$ROOTFS/usr/local/share/ca-certificates/$(basename "$ca")" && continue
  mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
  cp -f "$ca" "$ROOTFS/usr/local/share/ca-certificates/"
  ca_changed=1
done
if ((ca_changed)); then
  in_chroot update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the chroot."
fi
((${#local_cas[@]})) && log "the chroot trusts the host's ${#local_cas[@]} extra CA certificate(s)" \
                             "(/usr/local/share/ca-certificates)"

# ------------------------------------------------------------------------------------------------- agent install
phase "copy of the checkout into the chroot"
rm -rf "$ROOTFS$OPT/src"
mkdir -p "$ROOTFS$OPT/src"
if git -C "$REPO" rev-parse --show-toplevel >/dev/null 2>&1; then
  # tracked and untracked-but-not-ignored files (the working tree as it is), without deleted ones
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [[ -f $f ]]; then printf '%s\0' "$f"; fi; done \
    | tar --null -T - -cf -) | tar -C "$ROOTFS$OPT/src" -xf -
else
  tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=./build -cf - . | tar -C "$ROOTFS$OPT/src" -xf -
fi
log "copied $(find "$ROOTFS$OPT/src" -type f | wc -l) files of $REPO to $OPT/src"
heavy_declared=$("$X86_PY" - "$ROOTFS$OPT/src/pyproject.toml" "$HEAVY" <<'EOF'
import re, sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = p.get("dependencies", []) + p.get("optional-dependencies", {}).get("agent", [])
names = {re.split(r"[\s\[<>=!~;]", d, 1)[0].lower().replace("_", "-") for d in deps}
print(" ".join(sorted(names & set(sys.argv[2].split()))))
EOF
)
[[ -z $heavy_declared ]] \
  || die "pyproject.toml lists '$heavy_declared' in [project].dependencies or the agent extra:" \
         "'pip install edgetune[agent]' would pull them onto the device. Move them to the controller extra."

phase "venv + pip install \"edgetune[agent]\" (emulated)"
if [[ ! -x $ROOTFS$OPT/venv/bin/python ]]; then
  log "python3 -m venv $OPT/venv"
  in_chroot /usr/bin/python3 -m venv "$OPT/venv"
fi
log "pip install \"$OPT/src[agent]\" (the agent's documented install line)"
in_chroot "$OPT/venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
  "$OPT/src[agent]" >"$RUN/pip-aarch64.log" 2>&1 \
  || { tail -30 "$RUN/pip-aarch64.log" >&2; die "pip install in the chroot failed; full log: $RUN/pip-aarch64.log"; }
grep -E "^Successfully installed|^Requirement already satisfied: (onnxruntime|numpy) " "$RUN/pip-aarch64.log" || true
log "checking that the agent venv holds none of: $HEAVY"
in_chroot "$OPT/venv/bin/python" - "$HEAVY" <<'EOF' \
  || die "the aarch64 agent venv is not torch-free (see above): the agent install must not pull controller packages."
import importlib.metadata as md, importlib.util, sys
heavy = set(sys.argv[1].split())
names = {d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}
found = sorted(heavy & names)
if importlib.util.find_spec("torch") is not None:
    found.append("torch (importable)")
try:
    import torch  # noqa: F401
except ImportError:
    print("import torch fails, as it should")
else:
    found.append("torch (imported)")
if found:
    print("installed but must not be:", ", ".join(found))
    sys.exit(1)
EOF
# (stderr kept apart: onnxruntime's cpuinfo warnings, see the chroot mounts)
VERSIONS=$(in_chroot "$OPT/venv/bin/python" -c "
import platform, numpy, onnxruntime, edgetune
print(f'python {platform.python_version()} ({platform.machine()}), onnxruntime {onnxruntime.__version__},',
      f'numpy {numpy.__version__}, edgetune {edgetune.__version__}')" 2>"$RUN/versions.stderr") \
  || { cat "$RUN/versions.stderr" >&2; die "the agent venv cannot import numpy/onnxruntime/edgetune (above)."; }
log "aarch64 agent venv: $VERSIONS"

# ------------------------------------------------------------------------------------------------- agent
phase "start the aarch64 agent (emulated)"
TOKEN_FILE=$ROOTFS$OPT/token
if [[ ! -s $TOKEN_FILE ]]; then
  "$X86_PY" -c "import secrets; print(secrets.token_urlsafe(24))" >"$TOKEN_FILE"
fi
chmod 600 "$TOKEN_FILE"
mkdir -p "$ROOTFS$OPT/agent"
rm -f "$ROOTFS$OPT/agent/ready.json"
log "edgetune agent serve --host 127.0.0.1 --port $PORT --kind local-cpu --name arm64 (log: $RUN/agent-aarch64.log)"
setsid chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=$OPT/venv/bin:/usr/bin:/bin \
  "$OPT/venv/bin/edgetune" agent serve --host 127.0.0.1 --port "$PORT" --kind local-cpu --name arm64 \
  --token-file "$OPT/token" --workdir "$OPT/agent" --ready-file "$OPT/agent/ready.json" --timeout 3600 \
  >"$RUN/agent-aarch64.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 600); do
  [[ -s $ROOTFS$OPT/agent/ready.json ]] && break
  if ! kill -0 "$AGENT_PID" 2>/dev/null; then
    tail -30 "$RUN/agent-aarch64.log" >&2
    die "the aarch64 agent exited while starting (log above)."
  fi
  sleep 1
done
[[ -s $ROOTFS$OPT/agent/ready.json ]] || die "the aarch64 agent did not start within 600 s; see $RUN/agent-aarch64.log."
log "aarch64 agent is up: $(cat "$ROOTFS$OPT/agent/ready.json")"

# ------------------------------------------------------------------------------------------------- controller
phase "x86 controller: compress, measure on both agents"
# In the background + wait, so that a signal to this script is handled at once (cleanup stops the controller).
"$X86_PY" "$REPO/scripts/_aarch64_controller.py" --arm-url "http://127.0.0.1:$PORT" \
  --arm-token-file "$TOKEN_FILE" --config "$REPO/configs/demo.yaml" --val-images "$VAL_IMAGES" \
  --workdir "$RUN" --arm-versions "$VERSIONS" &
CTRL_PID=$!
rc=0
wait "$CTRL_PID" || rc=$?
CTRL_PID=""
phase ""

echo
echo "time per phase:"
printf '  %s\n' "${PHASES[@]}"
echo "total wall time: $(( $(date +%s) - T0 )) s"
if ((rc == 0)); then
  echo "RESULT: OK: the aarch64 agent's mAP equals the x86 agent's within 1e-3 for every model."
else
  echo "RESULT: FAILED (controller exit status $rc)."
fi
exit "$rc"
