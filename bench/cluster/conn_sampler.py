"""TCP connections to a listening port, sampled with `ss` (iproute2) every 50 ms in a thread.

    sampler = ConnSampler(8443).start()
    ...                                  # the storm
    conns = sampler.stop()               # {"distinct": ..., "peak_open": ..., "samples": ...}

``distinct`` counts the client ends (address:port) seen established at any sample, so a connection
opened and closed between two samples is missed: it is a lower bound on the connections made.
``peak_open`` is the most seen established at one sample.
"""

from __future__ import annotations

import subprocess
import threading


class ConnSampler:
    def __init__(self, port: int, interval: float = 0.05) -> None:
        self.port, self.interval = port, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peers: set[str] = set()
        self.peak_open = 0
        self.samples = 0

    def _sample(self) -> None:
        out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{self.port} )"],
                             capture_output=True, text=True).stdout
        # With a state filter, ss prints: Recv-Q Send-Q Local:Port Peer:Port
        peers = [line.split()[3] for line in out.splitlines() if len(line.split()) >= 4]
        self.peers.update(peers)
        self.peak_open = max(self.peak_open, len(peers))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> "ConnSampler":
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"distinct": len(self.peers), "peak_open": self.peak_open, "samples": self.samples}
