# postgres:<major> for the tests (scripts/test-images): laid out as the official image is
# (/usr/lib/postgresql/<major>/bin, PGDATA, VOLUME, STOPSIGNAL SIGINT, ENTRYPOINT
# docker-entrypoint.sh, CMD postgres), with the project's own handover entrypoint in place of
# the official one, which cannot be fetched here.
ARG BASE
FROM ${BASE}
ARG PG_MAJOR
ARG PGDATA
ARG VOLUME
COPY usr /usr
ENV PG_MAJOR=${PG_MAJOR} \
	PATH=$PATH:/usr/lib/postgresql/${PG_MAJOR}/bin \
	PGDATA=${PGDATA}
RUN set -eux; \
	postgres --version | grep -q "PostgreSQL) ${PG_MAJOR}"; \
	install -d -o postgres -g postgres -m 1777 "$PGDATA"; \
	install -d -o postgres -g postgres -m 1777 "${VOLUME}"
VOLUME ${VOLUME}
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
