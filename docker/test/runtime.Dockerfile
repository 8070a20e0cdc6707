# The runtime of the test images (scripts/test-images): the debootstrap base plus what the
# PostgreSQL builds of scripts/install-postgres link against, nss_wrapper (arbitrary uids, as
# in the official images), and the official images' postgres user and group, uid and gid 999.
ARG BASE
FROM ${BASE}
RUN set -eux; \
	apt-get update; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		libicu72 libxml2 libssl3 libgssapi-krb5-2 libzstd1 liblz4-1 libstdc++6 libreadline8 \
		libuuid1 libldap-2.5-0 libxslt1.1 libnss-wrapper procps util-linux; \
	rm -rf /var/lib/apt/lists/*; \
	groupadd -r -g 999 postgres; \
	useradd -r -g postgres -u 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres; \
	install -d -o postgres -g postgres -m 0755 /var/lib/postgresql; \
	install -d -o postgres -g postgres -m 3777 /var/run/postgresql
ENV LANG=C.UTF-8
