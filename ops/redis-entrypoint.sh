#!/bin/sh
# Start redis-server with the committed redis.conf plus a password that never
# touches the command line (where `ps` and `CONFIG GET` history would show it).
#
#   REDIS_PASSWORD       the password, or
#   REDIS_PASSWORD_FILE  a file holding it (Docker / Kubernetes secret mount)
#   REDIS_CONF           config path (default /usr/local/etc/redis/redis.conf)
#   "$@"                 extra redis-server arguments, appended last
#
# Used by docker-compose.yml and, as a verbatim copy, by ops/k8s/redis.yaml.
set -eu
conf="${REDIS_CONF:-/usr/local/etc/redis/redis.conf}"
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  REDIS_PASSWORD="$(cat "$REDIS_PASSWORD_FILE")"
fi
: "${REDIS_PASSWORD:?set REDIS_PASSWORD or REDIS_PASSWORD_FILE: gpuq never runs Redis without a password}"
# Refuse the shipped placeholder and short passwords (Redis answers ~100k AUTH tries a second).
if [ "$REDIS_PASSWORD" = "changeme" ] || [ "${#REDIS_PASSWORD}" -lt 16 ]; then
  echo "redis-entrypoint: REDIS_PASSWORD is the placeholder or shorter than 16 characters; refusing to start" >&2
  exit 64
fi
umask 077
auth_dir="$(mktemp -d)"
# Quote for Redis' config parser so any character is safe in the password.
escaped="$(printf '%s' "$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')"
printf 'requirepass "%s"\n' "$escaped" > "$auth_dir/auth.conf"
unset REDIS_PASSWORD escaped
exec redis-server "$conf" --include "$auth_dir/auth.conf" "$@"
