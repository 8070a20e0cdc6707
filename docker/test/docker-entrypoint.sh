#!/usr/bin/env bash
# docker-entrypoint.sh of the test postgres images (scripts/test-images), written for this
# project because the official images cannot be fetched here. It does what the official
# entrypoint does where pgleap's entrypoint and the tests depend on it, and nothing more:
#   - a first argument that is an option is one for postgres;
#   - for `postgres` as root: create PGDATA and /var/run/postgresql, give PGDATA's entries to
#     postgres as the official entrypoint does, and re-run itself as postgres;
#   - for `postgres` as any other uid (one without a passwd entry gets one from nss_wrapper):
#     initdb when PGDATA holds no PG_VERSION (POSTGRES_USER, POSTGRES_PASSWORD or
#     POSTGRES_HOST_AUTH_METHOD=trust, POSTGRES_INITDB_ARGS), then exec postgres;
#   - any other command is exec'd as is.
# Not implemented: /docker-entrypoint-initdb.d, POSTGRES_DB, the temporary setup server.
set -Eeuo pipefail

if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi

mkdir -p "$PGDATA"
chmod 00700 "$PGDATA" 2>/dev/null || :
mkdir -p /var/run/postgresql 2>/dev/null || :
chmod 03777 /var/run/postgresql 2>/dev/null || :

if [ "$(id -u)" = 0 ]; then
	find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
	chown postgres /var/run/postgresql 2>/dev/null || :
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if ! getent passwd "$(id -u)" >/dev/null; then
		for w in /usr/lib/*/libnss_wrapper.so; do
			NSS_WRAPPER_PASSWD=$(mktemp) NSS_WRAPPER_GROUP=$(mktemp)
			printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" >"$NSS_WRAPPER_PASSWD"
			printf 'postgres:x:%s:\n' "$(id -g)" >"$NSS_WRAPPER_GROUP"
			export LD_PRELOAD=$w NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
		done
	fi
	auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
	pwfile=()
	if [ -n "${POSTGRES_PASSWORD:-}" ]; then
		pw=$(mktemp)
		printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
		pwfile=(--pwfile="$pw")
	elif [ "$auth" != trust ]; then
		echo 'error: the database is uninitialized and no password was given: set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust' >&2
		exit 1
	fi
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as upstream
	initdb --username="${POSTGRES_USER:-postgres}" "${pwfile[@]}" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
	[ -z "${pw:-}" ] || rm -f "$pw"
	printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
	unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
fi
exec postgres "${@:2}"
