# A throwaway PostgreSQL cluster for the tests of the PostgreSQL store (issue 19.5).
# Sourced by .ci/run (and usable by hand: `source .ci/postgres.sh; pg_start; ...; pg_stop`).
# pg_start installs the distribution's PostgreSQL if it is missing and we are root, creates a
# cluster in a temp dir (data and socket there), listening on 127.0.0.1 on a free port, and
# exports TIDINGS_TEST_POSTGRES. PostgreSQL refuses to run as root: as root the cluster runs
# as the `postgres` user (or `nobody`). pg_stop stops it and removes the dir.

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_start() {
  PG_BIN=$(pg_bin)
  if [ -z "$PG_BIN" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(pg_bin)
  fi
  if [ -z "$PG_BIN" ]; then
    echo "PostgreSQL is not installed: the PostgreSQL store tests will say SKIPPED"
    return 0
  fi
  PG_DIR=$(mktemp -d /tmp/tidings-pg.XXXXXX)
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    local user=nobody
    id postgres >/dev/null 2>&1 && user=postgres
    chown "$user" "$PG_DIR"
    PG_AS=(runuser -u "$user" --)
  fi
  # TLS (issue 19.5, store_ca): a throwaway CA and a server certificate for 127.0.0.1, so the
  # tests can check verified TLS to the database. Without openssl the TLS test says SKIPPED.
  local tls_opts=""
  unset TIDINGS_TEST_POSTGRES_CA
  if command -v openssl >/dev/null 2>&1; then
    mkdir "$PG_DIR/tls"
    (
      cd "$PG_DIR/tls" &&
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=tidings test database CA" -keyout ca.key -out ca.pem \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext &&
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem
    ) >"$PG_DIR/tls.log" 2>&1 || { cat "$PG_DIR/tls.log"; return 1; }
    chmod 600 "$PG_DIR/tls/server.key"
    [ "$(id -u)" = 0 ] && chown -R "$user" "$PG_DIR/tls"
    tls_opts="-c ssl=on -c ssl_cert_file=$PG_DIR/tls/server.pem -c ssl_key_file=$PG_DIR/tls/server.key"
    export TIDINGS_TEST_POSTGRES_CA="$PG_DIR/tls/ca.pem"
  fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U tidings --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log"; return 1; }
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=400 -c fsync=on -c synchronous_commit=on $tls_opts" \
    start >/dev/null || { cat "$PG_DIR/server.log"; return 1; }
  export TIDINGS_TEST_POSTGRES="postgres://tidings@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $PG_DIR)"
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
  PG_DIR=
}
