# A Debian 12 host for the tests (scripts/test-images): systemd as PID 1, postgresql-common
# and Debian's own postgresql-15 package, and PostgreSQL 17 at /usr/lib/postgresql/17 copied
# from the test postgres:17 image (Debian 12 has no postgresql-17; PostgreSQL's apt
# repository cannot be reached here). No cluster is created by the packages: the tests make
# theirs with pg_createcluster.
ARG BASE
ARG PG17
FROM ${PG17} AS pg17
FROM ${BASE}
RUN set -eux; \
	apt-get update; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		systemd systemd-sysv dbus postgresql-common; \
	sed -ri 's/^#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
		/etc/postgresql-common/createcluster.conf; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15; \
	rm -rf /var/lib/apt/lists/*; \
	systemctl mask getty@tty1.service console-getty.service systemd-logind.service; \
	test ! -e /etc/postgresql/15/main
COPY --from=pg17 /usr/lib/postgresql/17 /usr/lib/postgresql/17
COPY --from=pg17 /usr/share/postgresql/17 /usr/share/postgresql/17
RUN /usr/lib/postgresql/17/bin/postgres --version
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
