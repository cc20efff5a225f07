#!/usr/bin/env bash
# Make sure a real kube-apiserver 1.20.2 and etcd exist for the tests in tests/k8s.
#
# etcd (and etcdctl, openssl) come from Debian packages. kube-apiserver is built once from Debian's
# `kubernetes` source package (1.20.2, Go modules vendored: no network beyond the Debian mirror) and
# cached OUTSIDE the repository:
#     ${FLOWLENS_CACHE:-/var/cache/flowlens}/kube-apiserver-1.20.2/kube-apiserver
# The build (about 4 minutes on 2 cores, 1.5 GB of output) happens in a temporary folder under the cache
# and that folder is deleted afterwards: only the binary is kept.
#
# The source is fetched with a PRIVATE apt configuration (deb-src lines for the same mirror and suites as
# the machine's own apt sources, own lists folder): the system's apt sources and lists are left untouched.
#
# Idempotent: once everything is there a run only checks and prints the path (well under a second).
# Needs root (apt-get install) unless everything is already there. The last line of output is the path of
# the binary, so `bin=$(scripts/kube-apiserver.sh | tail -n1)` works.
set -euo pipefail

version=1.20.2
cache=${FLOWLENS_CACHE:-/var/cache/flowlens}
dest_dir="$cache/kube-apiserver-$version"
dest="$dest_dir/kube-apiserver"

log() { echo "kube-apiserver.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# command:package pairs; runtime ones are always needed, build ones only to build the binary once.
runtime_tools=(etcd:etcd-server etcdctl:etcd-client openssl:openssl)
build_tools=(go:golang-go make:make rsync:rsync dpkg-source:dpkg-dev xz:xz-utils patch:patch)

missing_packages() {
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || echo "${pair##*:}"
    done
}

have_binary() { [ -x "$dest" ] && [ -s "$dest" ]; }

# Fast path: nothing to do.
if have_binary && [ -z "$(missing_packages "${runtime_tools[@]}")" ]; then
    echo "$dest"
    exit 0
fi

# Run a command quietly: its output is shown only if it fails.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        die "failed: $*"
    fi
}

apt_updated=0
apt_install() {
    (($#)) || return 0
    [ "$(id -u)" -eq 0 ] || die "need root to install Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    if ((!apt_updated)); then
        quiet apt-get update -qq
        apt_updated=1
    fi
    log "installing Debian packages: $*"
    quiet apt-get install -y -qq --no-install-recommends "$@"
}

mapfile -t need < <(missing_packages "${runtime_tools[@]}")
apt_install "${need[@]}"

mkdir -p "$cache"
chmod 0700 "$cache"

# One build at a time (parallel CI jobs on one machine): wait for the other one, then re-check.
exec 9>"$cache/.kube-apiserver.lock"
flock 9
if have_binary; then
    echo "$dest"
    exit 0
fi

mapfile -t need < <(missing_packages "${build_tools[@]}")
apt_install "${need[@]}"

work=$(mktemp -d "$cache/build-kube-apiserver.XXXXXX")
cleanup() {
    # Go's module cache is read-only; make it writable so that rm can delete it.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- private apt configuration: deb-src lines for the machine's Debian suites --------------------------
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release: not a Debian release?"
mkdir -p "$work/apt/lists/partial" "$work/apt/sources.list.d" "$work/src"
signed_by=""
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] &&
    signed_by="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
# `apt-get indextargets` reads the system's sources in both formats (sources.list and deb822 .sources)
# and does not need downloaded lists: use every entry whose suite is this release (or its -updates,
# -security). A machine without any falls back to the default Debian mirror.
apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' 2>/dev/null |
    awk -v c="$codename" '$2 == c || $2 == c "-updates" || $2 == c "-security"' | sort -u |
    while read -r uri suite component; do
        echo "deb-src ${signed_by}${uri} ${suite} ${component}"
    done >"$work/apt/sources.list"
if [ ! -s "$work/apt/sources.list" ]; then
    echo "deb-src ${signed_by}http://deb.debian.org/debian ${codename} main" >"$work/apt/sources.list"
fi
log "private deb-src list: $(paste -sd';' "$work/apt/sources.list")"
apt_private=(
    -o "Dir::Etc::SourceList=$work/apt/sources.list"
    -o "Dir::Etc::SourceParts=$work/apt/sources.list.d"
    -o "Dir::State::Lists=$work/apt/lists"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "APT::Sandbox::User=root"
)
quiet apt-get "${apt_private[@]}" -qq update

# --- source ----------------------------------------------------------------------------------------------
log "downloading Debian's kubernetes source package"
(cd "$work/src" && quiet apt-get "${apt_private[@]}" -qq source --download-only kubernetes)
dscs=("$work"/src/kubernetes_*.dsc)
[ -e "${dscs[0]}" ] || die "no kubernetes source package in $codename"
dsc=${dscs[0]}
case "$dsc" in
*"$version"*) ;;
*) die "expected kubernetes $version, the $codename suite has $(basename "$dsc")" ;;
esac
# apt has already checked the files against the signed Sources index, hence --no-check.
(cd "$work/src" && quiet dpkg-source --no-check -x "$dsc" tree)

# --- build -----------------------------------------------------------------------------------------------
log "building kube-apiserver $version (a few minutes, about 1.5 GB in $work, deleted afterwards)"
start=$SECONDS
(
    cd "$work/src/tree"
    export GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GO111MODULE=on
    export GOPATH="$work/gopath" GOCACHE="$work/gocache" HOME="$work/home"
    mkdir -p "$HOME"
    make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
)
built="$work/src/tree/_output/bin/kube-apiserver"
[ -x "$built" ] || built=$(find "$work/src/tree/_output" -type f -name kube-apiserver -perm -u+x | head -n1)
[ -n "$built" ] && [ -x "$built" ] || die "build finished but no kube-apiserver binary in _output"
log "built in $((SECONDS - start)) s: $("$built" --version)"

mkdir -p "$dest_dir"
chmod 0700 "$dest_dir"
install -m 0755 "$built" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "$dest"
