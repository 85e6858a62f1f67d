#!/usr/bin/env bash
# run-cluster.sh starts a private PostgreSQL in .build/pg-cluster (initdb on
# the first run only; the data is kept between runs) and three calsync
# replicas on it, on consecutive ports: REST 8080, 8081, 8082 and gRPC 9090,
# 9091, 9092. The replicas take the rest of their configuration from the
# environment, as `make run` does (CALSYNC_POSTPRESS_AUTH_SECRETS, ...).
# Ctrl-C stops the replicas, then PostgreSQL.
#
# Settings (environment): REPLICAS (3), PG_PORT (5433), PG_BIN
# (/usr/lib/postgresql/15/bin), HTTP_PORT (8080), GRPC_PORT (9090).
set -euo pipefail

REPLICAS=${REPLICAS:-3}
PG_PORT=${PG_PORT:-5433}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
HTTP_PORT=${HTTP_PORT:-8080}
GRPC_PORT=${GRPC_PORT:-9090}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/.build/pg-cluster
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/calsync?sslmode=disable"

if [ ! -x "$PG_BIN/initdb" ]; then
	echo "run-cluster: $PG_BIN/initdb not found; install PostgreSQL: apt-get install postgresql" >&2
	exit 1
fi

# PostgreSQL refuses to run as root: as root, its commands run as the
# postgres user, which then owns the directory.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then
	chown postgres: "$DIR"
	if ! runuser -u postgres -- test -w "$DIR"; then
		echo "run-cluster: the postgres user cannot reach $DIR: every directory above it must let others through (chmod o+x)" >&2
		exit 1
	fi
fi
# A Unix socket path is limited to 107 bytes: a deep checkout puts the
# socket in /tmp instead.
SOCKET_DIR=$DIR
if [ $((${#DIR} + 20)) -gt 107 ]; then
	SOCKET_DIR=/tmp
fi
if [ ! -f "$DIR/data/PG_VERSION" ]; then
	echo "run-cluster: initdb $DIR/data"
	as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-instructions > "$DIR/initdb.log"
fi

# max_connections leaves room for each replica's pool (--db-max-conns,
# 16 by default) and its few connections of its own.
if ! as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" status > /dev/null 2>&1; then
	as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -o \
		"-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$SOCKET_DIR -c max_connections=100 -c synchronous_commit=on" start > /dev/null
fi
echo "run-cluster: PostgreSQL on 127.0.0.1:$PG_PORT and $SOCKET_DIR (data and log in $DIR)"
if [ -z "$(as_pg "$PG_BIN/psql" -h "$SOCKET_DIR" -p "$PG_PORT" -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'calsync'")" ]; then
	as_pg "$PG_BIN/createdb" -h "$SOCKET_DIR" -p "$PG_PORT" -U postgres calsync
fi

(cd "$ROOT" && go build -o .build/calsync ./cmd/calsync)

pids=()
stop() {
	trap - INT TERM EXIT
	echo "run-cluster: stopping the replicas and PostgreSQL"
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2> /dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2> /dev/null || true
	done
	as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -m fast -w stop > /dev/null || true
}
trap stop INT TERM EXIT

for ((i = 0; i < REPLICAS; i++)); do
	http=127.0.0.1:$((HTTP_PORT + i))
	grpc=127.0.0.1:$((GRPC_PORT + i))
	echo "run-cluster: replica $i on $http (REST) and $grpc (gRPC)"
	# Each replica's log lines are prefixed with its number.
	CALSYNC_DB=$DB_URL CALSYNC_HTTP_ADDR=$http CALSYNC_GRPC_ADDR=$grpc \
		"$ROOT/.build/calsync" serve > >(sed -u "s/^/[replica $i] /") 2>&1 &
	pids+=($!)
done
# Until Ctrl-C, or until a replica exits on its own.
wait -n "${pids[@]}" || true
