#!/usr/bin/env bash
# Runs inside a clean Debian 12 container (tests/package.rs, docker/test/package.Dockerfile):
# installs pgleap's .deb, uses it as a person would (man, --help, bash completion), upgrades
# a real postgresql-common cluster 15 -> 17 with it, removes the package and checks that
# nothing of it is left. The first failed check exits nonzero; the last line on success is
# "package test passed".
#
# Usage: package.sh PGLEAP.deb
set -euo pipefail

deb=${1:?usage: package.sh PGLEAP.deb}

step() { printf '== %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*"
	exit 1
}
as_postgres() { runuser -u postgres -- "$@"; }

step "dpkg -i $(basename -- "$deb")"
[ ! -e /usr/bin/pgleap ] || fail "pgleap is in the image before the package is installed"
dpkg -i "$deb"
[ "$(dpkg-query -W -f '${db:Status-Status}' pgleap)" = installed ] || fail "pgleap is not installed"
mapfile -t files < <(dpkg -L pgleap)

step "man -w"
[ "$(man -w pgleap)" = /usr/share/man/man1/pgleap.1.gz ] || fail "man -w pgleap: $(man -w pgleap)"
for c in check upgrade status rollback finalize; do
	man -w "pgleap-$c" >/dev/null || fail "no man page pgleap-$c"
done
man -P cat pgleap-upgrade 2>/dev/null | grep -q PGLEAP_LEAVE_STOPPED ||
	fail "man pgleap-upgrade does not show PGLEAP_LEAVE_STOPPED"

step "pgleap --help"
pgleap --help | grep -q '^  upgrade ' || fail "pgleap --help lists no upgrade command"
pgleap --version

step "bash completion of 'pgleap up<TAB>'"
# bash-completion loads /usr/share/bash-completion/completions/pgleap on first use, as in an
# interactive shell; then the completion function answers for the words typed so far.
reply=$(bash -c '
	. /usr/share/bash-completion/bash_completion
	_completion_loader pgleap
	fn=$(complete -p pgleap | sed -n "s/.* -F \([^ ]*\) .*/\1/p")
	[ -n "$fn" ] || exit 1
	COMP_WORDS=(pgleap up) COMP_CWORD=1 COMP_LINE="pgleap up" COMP_POINT=9
	"$fn" pgleap up pgleap
	printf "%s\n" "${COMPREPLY[@]}"
') || fail "no bash completion for pgleap"
[ "$reply" = upgrade ] || fail "pgleap up<TAB> completes to '$reply', not 'upgrade'"

step "pg_createcluster 15 main"
pg_createcluster 15 main --start
as_postgres psql -q -c "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 10000) g"
sum="SELECT count(*) || ' ' || md5(string_agg(v, ',' ORDER BY g)) FROM t"
before=$(as_postgres psql -Atc "$sum")

step "pgleap upgrade --cluster 15/main"
pgleap check --cluster 15/main
pgleap upgrade --cluster 15/main
pg_lsclusters
[ "$(as_postgres psql -Atc 'SHOW server_version_num' | cut -c1-2)" = 17 ] ||
	fail "the server on the old port is not PostgreSQL 17"
after=$(as_postgres psql -Atc "$sum")
[ "$before" = "$after" ] || fail "table t differs: before $before, after $after"
[ "$(grep -v '^#' /etc/postgresql/15/main/start.conf | tr -d '[:space:]')" = manual ] ||
	fail "the old cluster still starts at boot"
pgleap status --cluster 15/main
pg_ctlcluster 17 main stop

step "dpkg -r pgleap"
dpkg -r pgleap
status=$(dpkg-query -W -f '${db:Status-Status}' pgleap 2>/dev/null || echo not-installed)
[ "$status" = not-installed ] || fail "after dpkg -r, pgleap is '$status'"
left=()
for f in "${files[@]}"; do
	# Shared directories (/usr/bin, /usr/share/man/man1, ...) stay; the package's files go.
	if [ -e "$f" ] && { [ ! -d "$f" ] || [ "$f" = /usr/share/doc/pgleap ]; }; then left+=("$f"); fi
done
[ "${#left[@]}" -eq 0 ] || fail "dpkg -r left ${left[*]}"
# Nothing else named after pgleap, outside the cluster's data (the upgrade's work directory
# and journal are the cluster's, not the package's), this test's own mounts, and man-db's
# cache of pages formatted by `man` above (man-db's daily job expires it).
stray=$(find / -xdev \( -path /proc -o -path /sys -o -path /pkg -o -path /var/lib/postgresql \
	-o -path /var/cache/man \) -prune \
	-o -name '*pgleap*' -print)
[ -z "$stray" ] || fail "left behind: $stray"
echo "package test passed"
