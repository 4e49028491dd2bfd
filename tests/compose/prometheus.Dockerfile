# Prometheus for tests/compose/e2e-monitoring.sh, packaged from Debian's `prometheus` (installed
# pinned by .ci/run): no registry is needed. Users run the official image (compose.yaml's default,
# prom/prometheus), whose layout this copies: /bin/prometheus as the entrypoint, the data in
# /prometheus, run as nobody (65534).
#
# Context (tests/compose/e2e-monitoring.sh makes it): root/ holds /bin/prometheus and the C
# library it is linked against (ldd), at their paths; data/ is empty.
FROM scratch
COPY root/ /
COPY --chown=65534:65534 data/ /prometheus/
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
