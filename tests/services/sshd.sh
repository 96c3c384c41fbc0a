#!/usr/bin/env bash
# Brings up Debian's OpenSSH server and client for the dropped-login test (which starts its own
# sshd on a loopback port with a throwaway key); prints nothing when they are there.
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "openssh-server is not installed and installing it needs root: apt-get install openssh-server openssh-client" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
