#!/bin/sh
# docker-entrypoint.sh of the redis:7.4 stand-in (Containerfile.redis), after the official one.
set -e

# first argument is `-f` or `--some-option`, or `something.conf`: run redis-server with them
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

# started as root (no runAsUser): own /data, then run as the redis user (setpriv instead of gosu)
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# The official image is compiled with protected mode off (and binds every interface when no
# config file is given, as Debian's build does too); Debian's binary defaults to protected mode on.
# Given first, the user's own arguments still override it.
if [ "$1" = redis-server ] && [ "${2%.conf}" = "${2:-}" ]; then
	shift
	set -- redis-server --protected-mode no "$@"
fi

# set an appropriate umask (if one isn't set already)
um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"
