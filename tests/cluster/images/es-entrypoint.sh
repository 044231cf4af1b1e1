#!/bin/bash
# docker-entrypoint.sh of the Elasticsearch stand-in (Containerfile.elasticsearch). bash, not sh:
# dash drops environment variables whose names are not shell names (discovery.type=...) on exec.
# Like the official one: no argument, `eswrapper`/`elasticsearch` or -E options start Elasticsearch
# (further arguments are -Esetting=value); anything else is run as a command.
set -e
case "${1:-eswrapper}" in
	eswrapper|elasticsearch|*/elasticsearch) [ $# -gt 0 ] && shift ;;
	-*) ;;
	*) exec "$@" ;;
esac
home=${ES_HOME:-/usr/share/elasticsearch}
# Defaults first: ES_JAVA_OPTS (e.g. -Xms512m -Xmx512m) comes later on the line and wins.
# Without it the heap is half the container's memory limit, as the official image sizes it.
# shellcheck disable=SC2086  # ES_JAVA_OPTS is a list of options
exec java -XX:MaxRAMPercentage=50 -XX:+UseSerialGC -Xss1m -XX:TieredStopAtLevel=1 \
	-Djava.awt.headless=true -Dfile.encoding=UTF-8 -Dlog4j2.disable.jmx=true -Dio.netty.noUnsafe=true \
	-Des.networkaddress.cache.ttl=60 -Djava.io.tmpdir="${TMPDIR:-/tmp}" \
	${ES_JAVA_OPTS:-} \
	--module-path "$home/lib" --add-modules ALL-MODULE-PATH -cp "$home/launcher" \
	EsImageNode "$home" "$@"
