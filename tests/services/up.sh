#!/usr/bin/env bash
# Start the services the tests use (PostgreSQL, and Slurm where this is root), install the
# programs they drive (chromium, openssh), and print the servers' environment lines, KEY=VALUE,
# one a line:
#
#   env $(tests/services/up.sh) .venv/bin/python -m pytest      # `make test` adds -n and --dist loadgroup
#   tests/services/up.sh stop
#
# A service that cannot start is reported on stderr and left out; its tests then skip, naming it
# (or fail, where $CI is set).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
action="${1:-start}"
status=0
for service in postgres slurm; do
    if ! "$here/$service.sh" "$action"; then
        echo "up.sh: $service did not $action" >&2
        status=1
    fi
done
if [ "$action" = start ]; then
    for program in chromium sshd; do
        if ! bash "$here/$program.sh"; then
            echo "up.sh: $program is not available" >&2
            status=1
        fi
    done
fi
if [ -n "${CI:-}" ]; then exit "$status"; fi
exit 0
