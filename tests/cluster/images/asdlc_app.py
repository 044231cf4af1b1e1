"""dox-asdlc orchestrator/workers stand-in: GET /healthz -> "ok", GET /metrics -> Prometheus text.

Service name and port from ASDLC_SERVICE and PORT (baked into each image by Containerfile.asdlc).
Writes nothing to disk; exits on SIGTERM.
"""
import http.server
import os
import signal
import sys
import threading
import time

SERVICE = os.environ.get("ASDLC_SERVICE", "orchestrator")
PORT = int(os.environ.get("PORT", "8080"))
STARTED = time.time()
requests: dict[str, int] = {}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        known = path in ("/metrics", "/healthz")
        with lock:
            requests[path if known else "other"] = requests.get(path if known else "other", 0) + 1
            counts = sorted(requests.items())
        if path == "/healthz":
            body, ctype, status = b"ok\n", "text/plain", 200
        elif path == "/metrics":
            lines = [
                "# HELP asdlc_up Whether the service is up.", "# TYPE asdlc_up gauge",
                f'asdlc_up{{service="{SERVICE}"}} 1',
                "# HELP asdlc_requests_total HTTP requests served, by path.",
                "# TYPE asdlc_requests_total counter",
                *[f'asdlc_requests_total{{service="{SERVICE}",path="{p}"}} {n}' for p, n in counts],
                "# HELP asdlc_start_time_seconds Start time since the Unix epoch.",
                "# TYPE asdlc_start_time_seconds gauge",
                f'asdlc_start_time_seconds{{service="{SERVICE}"}} {STARTED:.3f}',
            ]
            body, ctype, status = ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8", 200
        else:
            body, ctype, status = b"not found\n", "text/plain", 404
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: stay quiet
        pass


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 gets no default SIGTERM action
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print(f"asdlc {SERVICE} serving /metrics and /healthz on :{PORT}", flush=True)
    server.serve_forever()
