#!/usr/bin/env bash
# Install what flowlens needs on a Debian machine: kernel tools and a virtual environment.
# Idempotent: a second run only checks. Needs root (apt) unless the tools are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in ip:iproute2 tc:iproute2 iptables:iptables ethtool:ethtool curl:curl setpriv:util-linux \
            conntrack:conntrack ss:iproute2; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    echo "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[lab,test]'
echo "flowlens installed: $(.venv/bin/flowlens --help >/dev/null && echo ok) (.venv/bin/flowlens)"
