# A Debian 12 host for the package test (tests/package.rs), without pgleap: the engine tests'
# Debian image (scripts/test-images: the debootstrap base, postgresql-common, Debian's own
# postgresql-15, PostgreSQL 17 at /usr/lib/postgresql/17) plus what a person reads and types
# with: man-db and bash-completion. The test installs pgleap's .deb into a container of it.
ARG BASE
FROM ${BASE}
RUN set -eux; \
	apt-get update; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends man-db bash-completion; \
	rm -rf /var/lib/apt/lists/*; \
	test ! -e /usr/bin/pgleap
CMD ["bash"]
