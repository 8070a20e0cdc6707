#!/usr/bin/env bash
# pgleap-entrypoint.sh: the entrypoint of the pgleap image. When the data directory holds a
# PostgreSQL cluster of an older major than the image's, it upgrades it with `pgleap upgrade`,
# then hands over to the image's normal entrypoint; when it holds the image's major, it hands
# over at once.
#
# Usage: pgleap-entrypoint.sh [--leave-stopped] [postgres [ARGS...] | COMMAND [ARGS...]]
#
#   --leave-stopped (or PGLEAP_LEAVE_STOPPED=true): one shot, for jobs: upgrade, analyze,
#   stop, and exit instead of handing over. Exit 0 also when there was nothing to upgrade
#   (the data is already at the image's major), 3 when no cluster was found.
#   A command other than postgres (psql, bash, ...) is handed over at once.
#
# Where the data is (README.md, "Container image", has the whole story):
#   - Versioned PGDATA (recommended): the volume at /data, PGDATA=/data/15 under the old image
#     and PGDATA=/data/17 under this one. The older cluster in /data/15 is upgraded into
#     /data/17 on the same volume, and PGDATA is handed over unchanged. Generally: PGDATA with
#     its last path component equal to the image's major replaced by an older major, or a
#     sibling of PGDATA named by an older major. /data/pg15-style names are not guessed (as
#     pgleap does not guess them on hosts); PGLEAP_OLD_DATADIR names such a cluster.
#   - PGDATA is a plain directory in the volume (the official images' advice,
#     PGDATA=/var/lib/postgresql/data/pgdata) holding an older cluster: one rename moves it to
#     its sibling named by its major (/var/lib/postgresql/data/15), and it is upgraded back
#     into PGDATA, which stays what it was. The marker .pgleap-<name>-aside beside PGDATA says
#     the rename was this entrypoint's; when pgleap refuses, the cluster is renamed back.
#   - PGDATA empty or missing: when the rules above find one older cluster, it is upgraded;
#     several, one the image cannot upgrade, an older cluster beside PGDATA under another
#     name, or a cluster in PGDATA's parent are refused (exit 3), so that the official
#     entrypoint never initializes an empty cluster beside the data. PGLEAP_INIT_EMPTY=true
#     starts empty anyway.
#   - PGDATA is a mount point holding an older cluster (the images before 18 mount their volume at
#     PGDATA=/var/lib/postgresql/data). A mount point cannot be renamed, so the cluster's
#     entries are moved into PGDATA/<old>/docker on the same filesystem, by renames, PG_VERSION
#     first; the marker file .pgleap-relocated says where a rerun stands. The cluster is then
#     upgraded into PGDATA/<new>/docker beside it (link mode works: one filesystem), and PGDATA
#     is re-pointed there for the handover, on this and every later start. When pgleap refuses
#     (exit 3: it changed nothing), the cluster is moved back, PG_VERSION last.
#   - The 18+ images' layout: PGDATA=/var/lib/postgresql/<new>/docker with the volume at
#     /var/lib/postgresql. An older cluster in that volume (/var/lib/postgresql/data, from an
#     image before 18 mounted at the parent; /var/lib/postgresql/<N>/docker; or the volume
#     root itself, which is relocated as above) is upgraded into PGDATA. A volume of its own
#     still mounted at /var/lib/postgresql/data is upgraded within, as PGDATA above.
#
# Exit codes: pgleap's (0 ok, 1 failed, 2 usage, 3 refused: nothing changed, 130 interrupted);
# 128+N when pgleap died of signal N. After a failure nothing is handed over: PostgreSQL never
# starts on an empty or half-upgraded directory. Restarting the container resumes.
#
# Environment (every path the image fixes can be overridden, for tests):
#   PGDATA                the data directory (set by the postgres image)
#   PG_MAJOR              the image's PostgreSQL major (set by the postgres image);
#                         PGLEAP_NEW_VERSION wins over it
#   PGLEAP_NEW_BINDIR     default /usr/lib/postgresql/<new>/bin
#   PGLEAP_OLD_BINDIR     default /usr/lib/postgresql/<old>/bin, <old> read from PG_VERSION
#   PGLEAP_OLD_DATADIR    the older cluster to upgrade into an empty PGDATA, instead of the
#                         one the rules find (when they find several, or none)
#   PGLEAP_INIT_EMPTY     true: an empty PGDATA is handed over (the official entrypoint
#                         initializes it) even when an older cluster was found. Default false
#   PGLEAP_VOLUME         the 18+ images' volume, default /var/lib/postgresql
#   PGLEAP_POSTGRES_USER  the user PostgreSQL runs as when the container runs as root,
#                         default postgres
#   PGLEAP_CHOWN          true: as root, give an old cluster owned by another uid to
#                         PGLEAP_POSTGRES_USER (chown -R) instead of refusing. Default false
#   PGLEAP_BIN            the pgleap binary, default pgleap
#   PGLEAP_HANDOVER       the entrypoint to hand over to, default docker-entrypoint.sh
#   PGLEAP_LEAVE_STOPPED  true: one shot (as --leave-stopped)
#   PGLEAP_*              the rest (PGLEAP_MODE, PGLEAP_JOBS, PGLEAP_NO_ANALYZE, ...) configure
#                         pgleap itself; the entrypoint chooses the data and bin directories.
set -Eeuo pipefail
shopt -s dotglob nullglob

prog=${0##*/}
readonly MARKER=.pgleap-relocated

say() { printf '%s: %s\n' "$prog" "$*" >&2; }

# die CODE MESSAGE: stop with exit code CODE.
die() {
	local code=$1
	shift
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit "$code"
}

# refuse MESSAGE: stop with exit 3 before anything was changed.
refuse() {
	printf '%s: refused: %s\nNothing was changed.\n' "$prog" "$*" >&2
	exit 3
}

# bool NAME: whether the boolean variable NAME is true (true/false, 1/0, yes/no, on/off).
bool() {
	local v=${!1:-false}
	case "${v,,}" in
	true | 1 | yes | on) return 0 ;;
	false | 0 | no | off | '') return 1 ;;
	*) die 2 "$1=$v: expected true or false" ;;
	esac
}

is_root() { [ "$(id -u)" = 0 ]; }

# fault POINT: tests kill the entrypoint here with PGLEAP_FAULT=entrypoint:POINT, as pgleap
# honours PGLEAP_FAULT=<its own points>; a rerun must converge from each.
fault() {
	if [ "${PGLEAP_FAULT:-}" = "entrypoint:$1" ]; then
		say "fault point $1: killing myself"
		kill -KILL "$$"
	fi
}

# major DIR: sets $found to the major of the cluster in DIR, empty when DIR holds no
# PG_VERSION. (A variable, not output: a refusal inside $(...) would only end the subshell.)
major() {
	found=''
	[ -f "$1/PG_VERSION" ] || return 0
	read -r found <"$1/PG_VERSION" || [ -n "$found" ] || die 1 "cannot read $1/PG_VERSION"
	case "$found" in
	'' | *[!0-9]*) refuse "$1/PG_VERSION says '$found': pgleap upgrades PostgreSQL 10 and newer only" ;;
	esac
}

# work_dir NEW_DIR OLD_MAJOR [NEW_MAJOR]: where pgleap keeps the journal of that upgrade
# (src/layout.rs).
work_dir() { printf '%s\n' "${1%/*}/.pgleap-${1##*/}-$2-to-${3:-$NEW}"; }

same_fs() { [ "$(stat -c %d -- "$1")" = "$(stat -c %d -- "$2")" ]; }

# is_mount DIR: util-linux's mountpoint, else a device change (which misses bind mounts).
is_mount() {
	if command -v mountpoint >/dev/null; then
		mountpoint -q -- "$1"
	else
		[ -d "$1" ] && ! same_fs "$1" "$1/.."
	fi
}

# unlocked WORK_DIR: no pgleap holds the lock of that upgrade (false when flock is missing).
unlocked() {
	[ ! -f "$1/lock" ] || { command -v flock >/dev/null && flock -n "$1/lock" true; }
}

old_bindir() { printf '%s\n' "${PGLEAP_OLD_BINDIR:-/usr/lib/postgresql/$1/bin}"; }
new_bindir() { printf '%s\n' "${PGLEAP_NEW_BINDIR:-/usr/lib/postgresql/$NEW/bin}"; }

# check_bindirs OLD_MAJOR DIR: this image has both servers (before anything moves).
check_bindirs() {
	local obin nbin
	obin=$(old_bindir "$1")
	nbin=$(new_bindir)
	[ -x "$obin/pg_ctl" ] || refuse "$2 holds a PostgreSQL $1 cluster, but $obin has no PostgreSQL $1: use an image built with --build-arg PG_OLD=$1 (or set PGLEAP_OLD_BINDIR)"
	[ -x "$nbin/pg_upgrade" ] || refuse "$nbin has no pg_upgrade of PostgreSQL $NEW (set PGLEAP_NEW_BINDIR)"
}

# check_owner DIR: the cluster in DIR must belong to the uid PostgreSQL runs as here: the
# image's server user when the container runs as root (pgleap then runs PostgreSQL as it),
# else the container's own uid.
check_owner() {
	local dir=$1 owner uid gid
	owner=$(stat -c %u:%g -- "$dir")
	uid=${owner%:*}
	gid=${owner#*:}
	[ "$uid" = "$server_uid" ] && return 0
	if [ -n "$chown_data" ]; then
		say "PGLEAP_CHOWN: giving $dir (uid $uid) to $PGLEAP_POSTGRES_USER (uid $server_uid, gid $server_gid)"
		chown -R -- "$server_uid:$server_gid" "$dir"
		return 0
	fi
	if is_root; then
		refuse "$dir belongs to uid $uid, but this image runs PostgreSQL as $PGLEAP_POSTGRES_USER (uid $server_uid). Give the data to uid $server_uid (chown -R $server_uid:$server_gid on the volume, or PGLEAP_CHOWN=true to let this entrypoint do it), or run the container as uid $uid (docker run --user $uid:$gid; in Kubernetes, securityContext.runAsUser: $uid)."
	fi
	refuse "$dir belongs to uid $uid, but the container runs as uid $server_uid. Run the container as uid $uid (docker run --user $uid:$gid; in Kubernetes, securityContext.runAsUser: $uid), or give the data to uid $server_uid (chown -R $server_uid:$server_gid on the volume)."
}

# readable DIR...: a directory this uid cannot read belongs to someone else: say whom.
readable() {
	local d
	for d; do
		if [ -d "$d" ] && ! { [ -r "$d" ] && [ -x "$d" ]; }; then check_owner "$d"; fi
	done
}

# own PATH: as root, PATH belongs to the owner of the directory being relocated ($owner).
own() {
	if is_root; then chown -- "$owner" "$1"; fi
}

make_dir() {
	[ -d "$1" ] || mkdir -m 0700 -- "$1"
	own "$1"
}

# write_marker DIR OLD STATE: atomically (temp file, fsync, rename, fsync the directory).
write_marker() {
	local tmp=$1/$MARKER.tmp
	printf '%s\n' \
		"# Written by pgleap-entrypoint.sh: the PostgreSQL $2 cluster that was at the root of this" \
		"# directory was moved into $2/docker, to be upgraded into <new major>/docker beside it." \
		"old=$2" "state=$3" >"$tmp"
	own "$tmp"
	sync -- "$tmp"
	mv -f -- "$tmp" "$1/$MARKER"
	sync -- "$1"
}

# marker DIR KEY: prints a value from DIR's marker (assign it: a failure must stop the script).
marker() {
	local v
	v=$(sed -n "s/^$2=//p" -- "$1/$MARKER")
	case "$2=$v" in
	old=[0-9]* | state=moving | state=moved | state=returning) printf '%s\n' "$v" ;;
	*) die 1 "$1/$MARKER is damaged ($2=$v): it should say old=<major> and state=moving, moved or returning" ;;
	esac
}

# move FROM TO: one rename; never over an existing entry.
move() {
	if [ -e "$2" ] || [ -L "$2" ]; then
		die 1 "both $1 and $2 exist; $dir/$MARKER says the cluster was being moved between them. Compare them, keep the right one, and restart"
	fi
	mv -T -- "$1" "$2"
	n=$((n + 1))
}

# Before the first rename: everything that would make the move fail or unsafe, refused while
# nothing has changed.
relocate_preflight() {
	local dir=$1 old=$2 e target
	# From inside a container, a server running in another container on the same volume
	# (a rolling update) cannot be told from one that crashed; moving files from under it
	# would corrupt it.
	if [ -e "$dir/postmaster.pid" ]; then
		refuse "$dir/postmaster.pid exists: a server is running on this data directory (perhaps in another container), or the last one did not shut down cleanly. Stop every container using the volume; after a crash, start the old image once and stop it cleanly (with a long enough stop timeout). Then start this one again"
	fi
	[ ! -e "$dir/$old" ] || refuse "$dir/$old exists inside the old cluster, where its data would move; rename it"
	if [ -n "$(ls -A -- "$dir/$NEW/docker" 2>/dev/null)" ] || { [ -e "$dir/$NEW" ] && [ ! -d "$dir/$NEW" ]; }; then
		refuse "$dir/$NEW/docker, where the upgraded cluster goes, exists inside the old cluster and is not empty: move it away"
	fi
	for e in "$dir"/*; do
		if is_mount "$e"; then
			refuse "$e is a mount point inside the old cluster and cannot be moved into $dir/$old/docker: mount it elsewhere (PostgreSQL follows symlinks such as pg_wal -> /elsewhere), or upgrade with pgleap directly"
		fi
	done
	for e in "$dir"/pg_tblspc/*; do
		target=$(readlink -- "$e") || continue
		case "$target" in "$dir"/*)
			refuse "the tablespace $e points to $target, inside the data directory; moving the cluster would break it. Move the tablespace out of the data directory first"
			;;
		esac
	done
}

# relocate DIR OLD: moves the cluster at the root of DIR into DIR/OLD/docker by renames on
# DIR's filesystem. PG_VERSION moves first, so that DIR never again looks like a data
# directory PostgreSQL could start on. Idempotent: the marker says state=moving until every
# entry has moved and the renames are on disk, then state=moved; a rerun finishes the move.
relocate() {
	local dir=$1 old=$2 dest=$1/$2/docker e name n=0
	owner=$(stat -c %u:%g -- "$dir")
	if [ ! -f "$dir/$MARKER" ]; then
		relocate_preflight "$dir" "$old"
		write_marker "$dir" "$old" moving
	fi
	say "moving the PostgreSQL $old cluster at the root of $dir into $dest (renames on one filesystem)"
	make_dir "$dir/$old"
	make_dir "$dest"
	for e in "$dir/PG_VERSION" "$dir"/*; do
		[ -e "$e" ] || [ -L "$e" ] || continue
		name=${e##*/}
		case "$name" in "$MARKER" | "$MARKER.tmp" | lost+found | "$old" | "$NEW") continue ;; esac
		move "$e" "$dest/$name"
		fault "relocate:$n"
	done
	sync -- "$dest" "$dir"
	fault relocate:synced
	write_marker "$dir" "$old" moved
}

# unrelocate DIR OLD: the way back, after pgleap refused (and so changed nothing): every
# entry of DIR/OLD/docker moves back to the root of DIR, PG_VERSION last, so that DIR looks
# like a data directory again only once it is whole. The marker says state=returning until
# then; a rerun finishes the way back.
unrelocate() {
	local dir=$1 old=$2 src=$1/$2/docker e n=0
	owner=$(stat -c %u:%g -- "$dir")
	write_marker "$dir" "$old" returning
	say "moving the PostgreSQL $old cluster in $src back to the root of $dir"
	# A rerun may find $src already gone: then only the marker is left to remove.
	if [ -d "$src" ]; then
		for e in "$src"/*; do
			[ "${e##*/}" != PG_VERSION ] || continue
			move "$e" "$dir/${e##*/}"
			fault "return:$n"
		done
		sync -- "$dir" "$src"
		if [ -e "$src/PG_VERSION" ]; then move "$src/PG_VERSION" "$dir/PG_VERSION"; fi
		rmdir -- "$src"
	fi
	if [ -d "$dir/$old" ]; then rmdir -- "$dir/$old"; fi
	sync -- "$dir"
	fault returned
	rm -f -- "$dir/$MARKER"
	sync -- "$dir"
}

# converge DIR: finishes a move that a crash interrupted (DIR has a marker).
converge() {
	local old state
	old=$(marker "$1" old)
	state=$(marker "$1" state)
	case "$state" in
	moving) relocate "$1" "$old" ;;
	returning) unrelocate "$1" "$old" ;;
	esac
}

# finish DATADIR: the data is ready in DATADIR: hand over (PGDATA=DATADIR), or, one shot, exit.
finish() {
	local root=${1%/"$NEW"/docker} hint=''
	if [ -n "$one_shot" ]; then
		# A volume whose root holds <new>/docker is in the 18+ images' layout.
		if [ "$NEW" -ge 18 ] && [ "$root" != "$1" ] && [ "$root" != "$volume" ] && is_mount "$root"; then
			hint=", or mount this volume at /var/lib/postgresql and leave PGDATA unset (the default of the $NEW image)"
		fi
		say "done: the PostgreSQL $NEW cluster is in $1 and stopped. Start PostgreSQL $NEW with PGDATA=$1$hint"
		exit 0
	fi
	export PGDATA=$1
	if [ -n "$nss_wrapped" ]; then
		rm -f -- "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
		unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
	fi
	say "handing over to $handover_cmd (PGDATA=$PGDATA)"
	exec "$handover_cmd" "${args[@]}"
}

# A uid without a passwd entry (Kubernetes, OpenShift) gets one from nss_wrapper for
# initdb and pg_upgrade, which look up their user's name, as the official image does for
# its own initdb. pgleap passes these variables on to the programs it runs.
nss_wrap() {
	local wrapper uid gid
	uid=$(id -u)
	gid=$(id -g)
	if is_root || getent passwd "$uid" >/dev/null; then return 0; fi
	for wrapper in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so /lib/*/libnss_wrapper.so; do
		[ -s "$wrapper" ] || continue
		NSS_WRAPPER_PASSWD=$(mktemp)
		NSS_WRAPPER_GROUP=$(mktemp)
		export LD_PRELOAD=$wrapper NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
		printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$uid" "$gid" "$PGDATA" >"$NSS_WRAPPER_PASSWD"
		printf 'postgres:x:%s:\n' "$gid" >"$NSS_WRAPPER_GROUP"
		nss_wrapped=1
		return 0
	done
	say "warning: uid $uid has no passwd entry and libnss_wrapper.so was not found; initdb will refuse to run"
}

# run_pgleap OLD_DIR OLD_MAJOR NEW_DIR: pgleap upgrade (a fresh one, a resume from its
# journal, or nothing when its journal says done), forwarding SIGINT and SIGTERM (a
# container's stop) so that pgleap stops at a safe point. On failure, exits with pgleap's code.
run_pgleap() {
	local old=$1 om=$2 new=$3 root=${3%/"$NEW"/docker} rc=0 work
	work=$(work_dir "$new" "$om")
	if [ -f "$work/journal.json" ]; then
		say "resuming the upgrade of $old into $new that pgleap's journal records (nothing to do if it is done)"
	else
		check_bindirs "$om" "$old"
		say "upgrading the PostgreSQL $om cluster in $old to PostgreSQL $NEW in $new"
	fi
	nss_wrap
	(
		# pgleap refuses a PGLEAP_NEW_VERSION that disagrees with --new-bindir; the flags say it all.
		unset PGLEAP_NEW_VERSION PGLEAP_OLD_DATADIR PGLEAP_NEW_DATADIR
		exec "$pgleap" upgrade --old-datadir "$old" --new-datadir "$new" \
			--old-bindir "$(old_bindir "$om")" --new-bindir "$(new_bindir)" --leave-stopped
	) &
	pgleap_pid=$!
	trap 'kill -TERM "$pgleap_pid" 2>/dev/null || :' INT TERM
	wait "$pgleap_pid" || rc=$?
	# wait returns early (128+N) when a signal arrives; wait again for pgleap's own exit.
	while kill -0 "$pgleap_pid" 2>/dev/null; do
		rc=0
		wait "$pgleap_pid" || rc=$?
	done
	trap - INT TERM
	[ "$rc" -ne 0 ] || return 0
	say "pgleap upgrade failed (exit $rc): PostgreSQL is not started."
	local state='' aside=''
	if [ "$root" != "$new" ] && [ -f "$root/$MARKER" ]; then state=$(marker "$root" state); fi
	if [ -f "$(aside_marker "$new")" ] && [ "$old" = "${new%/*}/$om" ] &&
		[ "$(sed -n 's/^old=//p' -- "$(aside_marker "$new")")" = "$om" ]; then
		aside=1
	fi
	# Refused (3): pgleap changed nothing, or undid it. Unless another pgleap holds the
	# upgrade's lock, put the cluster back where the old image expects it.
	if [ "$rc" = 3 ] && [ -n "$aside" ] && [ ! -e "$new/PG_VERSION" ] && unlocked "$work" &&
		{ [ ! -e "$new" ] || [ -z "$(ls -A -- "$new")" ]; }; then
		unaside "$new" "$old"
		say "the PostgreSQL $om cluster is back in $new, as the old image expects it; pgleap's logs are in $work. Fix the cause and start this image again."
	elif [ -n "$aside" ]; then
		say "The PostgreSQL $om cluster is in $old (renamed there from $new by this entrypoint; to start it with the old image, set PGDATA=$old). 'pgleap status --old-datadir $old --new-datadir $new' says where the upgrade stands; fix the cause and start this image again to resume, or run 'pgleap rollback' with the same options."
	elif [ "$rc" = 3 ] && [ "$state" = moved ] && [ "$old" = "$root/$om/docker" ] &&
		[ "$(marker "$root" old)" = "$om" ] && [ ! -e "$new/PG_VERSION" ] && unlocked "$work"; then
		unrelocate "$root" "$om"
		say "the PostgreSQL $om cluster is back at the root of $root, as the old image expects it; pgleap's logs are in $work. Fix the cause and start this image again."
	elif [ -n "$state" ]; then
		say "The PostgreSQL $om cluster is in $old (moved there from the root of $root by this entrypoint; to start it with the old image, set PGDATA=$old). 'pgleap status --old-datadir $old --new-datadir $new' says where the upgrade stands; fix the cause and start this image again to resume, or run 'pgleap rollback' with the same options."
	else
		say "The PostgreSQL $om cluster is in $old. 'pgleap status --old-datadir $old --new-datadir $new' says where the upgrade stands; fix the cause and start this image again to resume, or run 'pgleap rollback' with the same options."
	fi
	exit "$rc"
}

# --- Where older clusters are looked for, and the decision ---
#
# The rules, for a data directory NEW_DIR where the image's cluster belongs (PGDATA, or
# <volume>/<new>/docker after a move):
#   1. versioned: NEW_DIR with its last path component equal to the image's major replaced by
#      each older major found there: /data/15 beside PGDATA=/data/17, and
#      /var/lib/postgresql/16/docker beside the 18 images' /var/lib/postgresql/18/docker
#      (pgleap's own rule on hosts, in reverse);
#   2. the siblings of NEW_DIR named by an older major: /var/lib/postgresql/data/15 beside
#      PGDATA=/var/lib/postgresql/data/pgdata, where a cluster found in PGDATA is moved aside;
#   3. EXTRA, for the 18 layout: /var/lib/postgresql/data, where images before 18 kept it;
#   4. PGLEAP_OLD_DATADIR instead of all of these, when set.
# Other siblings of NEW_DIR holding an older cluster (/data/pg15 beside /data/pg17), and a
# cluster in NEW_DIR's parent, are not upgraded but stop an empty start (guard).

# version_of DIR: sets $found to the raw first line of DIR/PG_VERSION ('' when none),
# without judging it.
version_of() {
	found=''
	[ -f "$1/PG_VERSION" ] || return 0
	read -r found <"$1/PG_VERSION" || :
}

# older VERSION: VERSION (a PG_VERSION line) is older than the image's major. 9.6 is.
older() {
	case "$1" in
	'') return 1 ;;
	*[!0-9]*) return 0 ;;
	*) [ "$1" -lt "$NEW" ] ;;
	esac
}

# live_journal NEW_DIR OLD_MAJOR NEW_MAJOR: pgleap has a journal of that upgrade, not rolled
# back.
live_journal() {
	local j
	j=$(work_dir "$1" "$2" "$3")/journal.json
	[ -f "$j" ] && ! grep -Eq '"state": *"rolled-back"' -- "$j"
}

# aside_marker NEW_DIR: the file recording that this entrypoint renamed NEW_DIR's older
# cluster to the sibling named by its major.
aside_marker() { printf '%s\n' "${1%/*}/.pgleap-${1##*/}-aside"; }

# add_candidate DIR: DIR joins $cands (with its major in $majors) when it holds an older
# cluster and is not there yet. A PG_VERSION before 10 (9.6) is no candidate: beside an
# empty PGDATA, guard refuses it; beside an upgraded one, it must not stop the start.
add_candidate() {
	local c
	for c in "${cands[@]}"; do [ "$c" != "$1" ] || return 0; done
	version_of "$1"
	case "$found" in '' | *[!0-9]*) return 0 ;; esac
	if [ "$found" -lt "$NEW" ]; then
		cands+=("$1")
		majors+=("$found")
	fi
}

# candidates NEW_DIR [EXTRA...]: sets $cands and $majors: the older clusters the rules find
# for NEW_DIR, less those already upgraded by pgleap into another of them (/data/15 once
# /data/17 holds its upgrade, when /data/18 is next).
candidates() {
	local new=$1 q prefix suffix parent d name i j keep=() keepm=() m
	cands=()
	majors=()
	if [ -n "${PGLEAP_OLD_DATADIR:-}" ]; then
		d=${PGLEAP_OLD_DATADIR%/}
		major "$d"
		# Once the upgrade is finalized, the old directory is gone: the variable has done its job.
		if [ -z "$found" ] && [ -f "$new/PG_VERSION" ]; then return 0; fi
		[ -n "$found" ] || refuse "PGLEAP_OLD_DATADIR=$d holds no PostgreSQL cluster (no PG_VERSION): set it to the old data directory, or unset it"
		[ "$found" -lt "$NEW" ] || refuse "PGLEAP_OLD_DATADIR=$d holds PostgreSQL $found, not older than this image's PostgreSQL $NEW"
		cands=("$d")
		majors=("$found")
		return 0
	fi
	# The cluster this entrypoint moved aside out of NEW_DIR is the one, whatever else is there.
	if [ -f "$(aside_marker "$new")" ]; then
		m=$(sed -n 's/^old=//p' -- "$(aside_marker "$new")")
		case "$m" in '' | *[!0-9]*) die 1 "$(aside_marker "$new") is damaged: it should say old=<major>" ;; esac
		major "${new%/*}/$m"
		if [ "$found" = "$m" ]; then
			cands=("${new%/*}/$m")
			majors=("$m")
			return 0
		fi
	fi
	q=$new/
	prefix=${q%/"$NEW"/*}
	if [ "$prefix" != "$q" ]; then
		suffix=${q#"$prefix/$NEW"}
		suffix=${suffix%/}
		for d in "$prefix"/*; do
			name=${d##*/}
			case "$name" in '' | *[!0-9]* | "$NEW") continue ;; esac
			add_candidate "$d$suffix"
		done
	fi
	parent=${new%/*}
	for d in "$parent"/*; do
		name=${d##*/}
		case "$name" in '' | *[!0-9]* | "$NEW") continue ;; esac
		add_candidate "$d"
	done
	for d in "${@:2}"; do add_candidate "$d"; done
	for i in "${!cands[@]}"; do
		for j in "${!cands[@]}"; do
			if [ "${majors[j]}" -gt "${majors[i]}" ] && live_journal "${cands[j]}" "${majors[i]}" "${majors[j]}"; then
				say "leaving the PostgreSQL ${majors[i]} cluster in ${cands[i]} alone: pgleap upgraded it into ${cands[j]}"
				continue 2
			fi
		done
		keep+=("${cands[i]}")
		keepm+=("${majors[i]}")
	done
	cands=("${keep[@]}")
	majors=("${keepm[@]}")
}

# guard NEW_DIR: NEW_DIR is empty and the rules found nothing to upgrade. Refuses when an
# older cluster sits beside it under another name, or when its parent is a data directory:
# the normal entrypoint would initialize an empty cluster beside the data the application
# expects. PGLEAP_INIT_EMPTY=true starts empty anyway.
guard() {
	local new=$1 parent=${1%/*} d seen=() list=''
	for d in "$parent"/*; do
		if [ "$d" = "$new" ] || [ ! -d "$d" ]; then continue; fi
		version_of "$d"
		if older "$found"; then
			seen+=("$d")
			list="$list, $d (PostgreSQL $found)"
		fi
	done
	version_of "$parent"
	if [ -n "$found" ]; then
		[ -n "$init_empty" ] || refuse "PGDATA $new holds no cluster, but its parent $parent holds a PostgreSQL $found cluster: set PGDATA=$parent (this image upgrades a cluster found there), or PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL $NEW cluster inside it anyway"
		say "PGLEAP_INIT_EMPTY=true: starting an empty PostgreSQL $NEW cluster in $new, inside the PostgreSQL $found cluster in $parent"
		return 0
	fi
	[ ${#seen[@]} -gt 0 ] || return 0
	[ -n "$init_empty" ] || refuse "PGDATA $new holds no cluster, and beside it ${list#, } would not be upgraded: this image upgrades a sibling named by its major (/data/15 beside PGDATA=/data/$NEW). Set PGLEAP_OLD_DATADIR to the data directory to upgrade into $new, or PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL $NEW cluster beside it"
	say "PGLEAP_INIT_EMPTY=true: starting an empty PostgreSQL $NEW cluster in $new, leaving ${list#, } alone"
}

# upgrade_into NEW_DIR [EXTRA...]: NEW_DIR holds the image's major or nothing: resume or start
# the upgrade of the older cluster the rules find into NEW_DIR, refuse when that is not one
# clear cluster, or hand over (to start an empty cluster only when nothing older is there).
upgrade_into() {
	local new=$1 i old om list=''
	candidates "$@"
	major "$new"
	if [ -n "$found" ]; then
		for i in "${!cands[@]}"; do
			if [ -f "$(work_dir "$new" "${majors[i]}")/journal.json" ]; then
				upgrade_from "${cands[i]}" "${majors[i]}" "$new"
			fi
		done
		for i in "${!cands[@]}"; do
			say "$new already holds PostgreSQL $NEW, not upgraded by pgleap from ${cands[i]}: leaving the PostgreSQL ${majors[i]} cluster in ${cands[i]} alone (remove it when you no longer need it)"
		done
		finish "$new"
	fi
	for i in "${!cands[@]}"; do list="$list, ${cands[i]} (PostgreSQL ${majors[i]})"; done
	list=${list#, }
	# A journal of an upgrade into NEW_DIR names the cluster: a crash before initdb.
	for i in "${!cands[@]}"; do
		if live_journal "$new" "${majors[i]}" "$NEW"; then
			upgrade_from "${cands[i]}" "${majors[i]}" "$new"
		fi
	done
	if [ ${#cands[@]} -eq 0 ]; then
		if [ -n "$one_shot" ]; then
			refuse "no PostgreSQL cluster found in $PGDATA, nor an older one beside it: is the volume mounted where the old image had it?"
		fi
		guard "$new"
		# Nothing older here: the normal entrypoint initializes a new cluster.
		finish "$new"
	fi
	if [ -n "$init_empty" ] && [ -z "$one_shot" ]; then
		say "PGLEAP_INIT_EMPTY=true: starting an empty PostgreSQL $NEW cluster in $new, leaving $list alone"
		finish "$new"
	fi
	if [ ${#cands[@]} -gt 1 ]; then
		refuse "PGDATA $new holds no cluster, and several older clusters could be upgraded into it: $list. Set PGLEAP_OLD_DATADIR to the one to upgrade (or move the others off the volume), or PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL $NEW cluster beside them"
	fi
	old=${cands[0]}
	om=${majors[0]}
	if [ ! -x "$(old_bindir "$om")/pg_ctl" ]; then
		refuse "PGDATA $new holds no cluster, and $old holds a PostgreSQL $om cluster, but $(old_bindir "$om") has no PostgreSQL $om: use an image built with --build-arg PG_OLD=$om (or set PGLEAP_OLD_BINDIR), or set PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL $NEW cluster beside it"
	fi
	check_owner "$old"
	upgrade_from "$old" "$om" "$new"
}

# upgrade_from OLD_DIR OLD_MAJOR NEW_DIR: runs pgleap, then finishes in NEW_DIR.
upgrade_from() {
	run_pgleap "$1" "$2" "$3"
	say "the PostgreSQL $2 cluster stays in $1: 'pgleap finalize --old-datadir $1 --new-datadir $3' removes it once you are satisfied ('pgleap status --old-datadir $1 --new-datadir $3' says whether rollback is still possible)"
	finish "$3"
}

# upgrade_root DIR M: DIR holds a PostgreSQL M cluster at its root: relocate it and upgrade.
upgrade_root() {
	local dir=$1 m=$2
	check_owner "$dir"
	check_bindirs "$m" "$dir"
	relocate "$dir" "$m"
	fault relocated
	upgrade_into "$dir/$NEW/docker" "${@:3}"
}

# aside_preflight DIR M ASIDE: before the rename, what would make it unsafe.
aside_preflight() {
	local dir=$1 m=$2 aside=$3 e target
	if [ -e "$dir/postmaster.pid" ]; then
		refuse "$dir/postmaster.pid exists: a server is running on this data directory (perhaps in another container), or the last one did not shut down cleanly. Stop every container using the volume; after a crash, start the old image once and stop it cleanly (with a long enough stop timeout). Then start this one again"
	fi
	if [ -e "$aside" ] || [ -L "$aside" ]; then
		refuse "$aside exists, where the PostgreSQL $m cluster in $dir would be moved aside to be upgraded into $dir: move it away"
	fi
	for e in "$dir"/*; do
		if is_mount "$e"; then
			refuse "$e is a mount point inside the old cluster, which would be renamed to $aside: mount it elsewhere (PostgreSQL follows symlinks such as pg_wal -> /elsewhere), or upgrade with pgleap directly"
		fi
	done
	for e in "$dir"/pg_tblspc/*; do
		target=$(readlink -- "$e") || continue
		case "$target" in "$dir"/*)
			refuse "the tablespace $e points to $target, inside the data directory; renaming the cluster would break it. Move the tablespace out of the data directory first"
			;;
		esac
	done
}

# upgrade_aside DIR M: DIR (PGDATA, a plain directory) holds a PostgreSQL M cluster. One
# rename moves it to its sibling named by its major, DIR's parent/M, on the same filesystem;
# it is then upgraded into DIR, so PGDATA stays what it was. The marker beside DIR (written
# first) says the rename was this entrypoint's, so that a refusal can undo it.
upgrade_aside() {
	local dir=$1 m=$2 parent=${1%/*} aside=${1%/*}/$2 mark tmp
	mark=$(aside_marker "$dir")
	check_owner "$dir"
	check_bindirs "$m" "$dir"
	aside_preflight "$dir" "$m" "$aside"
	owner=$(stat -c %u:%g -- "$dir")
	tmp=$mark.tmp
	printf '%s\n' "# Written by pgleap-entrypoint.sh: the PostgreSQL $m cluster that was in $dir" \
		"# was renamed to $aside, to be upgraded into $dir." "old=$m" >"$tmp"
	own "$tmp"
	sync -- "$tmp"
	mv -f -- "$tmp" "$mark"
	sync -- "$parent"
	fault aside:marked
	say "$dir holds a PostgreSQL $m cluster: renaming it to $aside (one rename on the same filesystem) and upgrading it into $dir; PGDATA stays $dir"
	mv -T -- "$dir" "$aside"
	sync -- "$parent"
	fault aside:renamed
	upgrade_into "$dir"
}

# unaside NEW_DIR OLD_DIR: the way back after pgleap refused (and so changed nothing).
unaside() {
	local new=$1 old=$2
	if [ -d "$new" ]; then rmdir -- "$new"; fi
	mv -T -- "$old" "$new"
	sync -- "${new%/*}"
	fault unaside:renamed
	rm -f -- "$(aside_marker "$new")"
	sync -- "${new%/*}"
}

# upgrade_pgdata DIR: DIR is PGDATA, or the 18+ volume's separately mounted data directory.
upgrade_pgdata() {
	local dir=$1 m
	if [ -f "$dir/$MARKER" ]; then converge "$dir"; fi
	major "$dir"
	m=$found
	if [ -z "$m" ] && [ -f "$dir/$MARKER" ]; then
		upgrade_into "$dir/$NEW/docker"
	fi
	if [ -z "$m" ] || [ "$m" = "$NEW" ]; then
		upgrade_into "$dir"
	fi
	if [ "$m" -gt "$NEW" ]; then
		refuse "$dir holds PostgreSQL $m, newer than this image's PostgreSQL $NEW: use an image of PostgreSQL $m or newer"
	fi
	if ! is_mount "$dir"; then
		upgrade_aside "$dir" "$m"
	fi
	say "$dir holds a PostgreSQL $m cluster and is a mount point: it cannot be renamed; it moves into $dir/$m/docker and is upgraded into $dir/$NEW/docker on the same filesystem, and PGDATA becomes $dir/$NEW/docker"
	upgrade_root "$dir" "$m"
}

# --- main ---

one_shot=''
if [ "${1:-}" = --leave-stopped ]; then
	one_shot=1
	shift
fi
if bool PGLEAP_LEAVE_STOPPED; then one_shot=1; fi
if [ $# -eq 0 ]; then set -- postgres; fi
# As the official entrypoint: a first argument that is an option is one for postgres.
if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
args=("$@")
handover_cmd=${PGLEAP_HANDOVER:-docker-entrypoint.sh}
pgleap=${PGLEAP_BIN:-pgleap}
nss_wrapped=''

if [ -z "$one_shot" ]; then
	if [ "$1" != postgres ]; then exec "$handover_cmd" "$@"; fi
	for a in "$@"; do
		case "$a" in -'?' | --help | --describe-config | -V | --version) exec "$handover_cmd" "$@" ;; esac
	done
fi

[ -n "${PGDATA:-}" ] || die 2 "PGDATA is not set"
NEW=${PGLEAP_NEW_VERSION:-${PG_MAJOR:-}}
case "$NEW" in
'' | *[!0-9]*) die 2 "the image's PostgreSQL major is unknown: set PG_MAJOR or PGLEAP_NEW_VERSION (got '$NEW')" ;;
esac
readonly NEW
PGLEAP_POSTGRES_USER=${PGLEAP_POSTGRES_USER:-postgres}
chown_data=''
if bool PGLEAP_CHOWN; then chown_data=1; fi
init_empty=''
if bool PGLEAP_INIT_EMPTY; then init_empty=1; fi
if is_root; then
	server_uid=$(id -u -- "$PGLEAP_POSTGRES_USER") || die 2 "PGLEAP_POSTGRES_USER=$PGLEAP_POSTGRES_USER: no such user"
	server_gid=$(id -g -- "$PGLEAP_POSTGRES_USER")
else
	[ -z "$chown_data" ] || die 2 "PGLEAP_CHOWN=true needs the container to run as root"
	server_uid=$(id -u)
	server_gid=$(id -g)
fi
volume=${PGLEAP_VOLUME:-/var/lib/postgresql}
volume=${volume%/}
pgdata=${PGDATA%/}

if [ "$pgdata" != "$volume/$NEW/docker" ]; then
	readable "$pgdata"
	upgrade_pgdata "$pgdata"
fi

# The 18+ layout. An image before 18 mounted its volume at /var/lib/postgresql/data: when that
# is still a mount of its own, the cluster is upgraded on that volume.
readable "$volume" "$volume/data" "$pgdata"
major "$pgdata"
if [ -z "$found" ] && [ -d "$volume/data" ] && ! same_fs "$volume/data" "$volume" &&
	{ [ -f "$volume/data/PG_VERSION" ] || [ -f "$volume/data/$MARKER" ]; }; then
	say "PGDATA $pgdata is empty and $volume/data, a volume of its own (the layout of the images before 18), holds a cluster: upgrading it on that volume"
	upgrade_pgdata "$volume/data"
fi
if [ -f "$volume/$MARKER" ]; then converge "$volume"; fi
major "$volume"
m=$found
if [ -n "$m" ] && [ "$m" -lt "$NEW" ]; then
	say "the volume $volume holds a PostgreSQL $m cluster at its root (it was mounted at the old PGDATA); it moves into $volume/$m/docker and is upgraded into $pgdata"
	upgrade_root "$volume" "$m" "$volume/data"
elif [ -n "$m" ]; then
	refuse "the volume $volume holds a PostgreSQL $m cluster at its root, but PGDATA is $pgdata: set PGDATA=$volume"
fi
upgrade_into "$pgdata" "$volume/data"
