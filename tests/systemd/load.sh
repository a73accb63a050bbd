# shellcheck shell=bash
# A client load for the suites under systemd (run.sh, package.sh): sourced after lib.sh,
# with $PROXY set to the proxy's host:port inside the container.

# fresh_connection_load SECONDS EVENT [ARG...]: a client inside the container opening a
# fresh connection per request to $PROXY for SECONDS, sequentially (so at most one request
# is in flight at any instant), while EVENT ARG... runs in this shell 1 s in. Prints what
# EVENT printed, then "N ok, R refused, F failed [the first errors]": refused is a
# connection the kernel refused (nothing listened); failed, one that got anything but a
# 200 (a reset, a close before the response, a timeout).
fresh_connection_load() {
  local seconds=$1 out load
  shift
  out=$(mktemp)
  sd_run python3 - "$seconds" "$PROXY" >"$out" 2>&1 <<'PY' &
import socket, sys, time
end = time.monotonic() + float(sys.argv[1])
host, port = sys.argv[2].rsplit(":", 1)
ok = refused = failed = 0
errors = []
while time.monotonic() < end:
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        if data.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            failed += 1
            errors.append(repr(data[:40]))
    except ConnectionRefusedError:
        refused += 1
        time.sleep(0.01)
    except OSError as e:
        failed += 1
        errors.append(str(e))
print(f"{ok} ok, {refused} refused, {failed} failed {errors[:3]}")
PY
  load=$!
  sleep 1
  "$@"
  wait "$load" || true
  cat "$out"
  rm -f "$out"
}
