"""A non-Go backend for the ambassador's tests: python's http.server, threaded, keep-alive.

Usage: python3 backend.py [DELAY_SECONDS]. It listens on a free loopback port and prints it on
the first line of standard output. GET /health answers 200; every other GET, PUT, POST and DELETE
answers 200 with "<port> <method> <path>" after DELAY_SECONDS (a slow instance).
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != "/health" and DELAY:
            time.sleep(DELAY)
        body = f"{self.server.server_port} {self.command} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = answer

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


srv = Server(("127.0.0.1", 0), Handler)
print(srv.server_port, flush=True)
srv.serve_forever()
