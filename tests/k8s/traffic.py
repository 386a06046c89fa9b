"""Load for rollout tests on the testbed: requests at a steady rate while tiers are replaced."""

from __future__ import annotations

import threading
import time


class SteadyTraffic:
    """Requests at a fixed rate from a background thread, for the whole of a rollout."""

    def __init__(self, settings, x, rate: float = 10.0, prefix: str = "steady", deadline_ms: int = 20000):
        from runtime.client import DeviceClient

        self.client = DeviceClient(settings, deadline_ms=deadline_ms).start()
        self.x, self.rate, self.prefix, self.closed = x, rate, prefix, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.client.send(f"{self.prefix}-{i}", self.x[i % len(self.x)])
            i += 1
            time.sleep(1 / self.rate)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def finish(self, timeout_s: float) -> dict:
        self.client.wait_all(timeout_s)
        versions: dict[str, int] = {}
        for a in self.client.answers.values():
            versions[str(a.result["model_version"])] = versions.get(str(a.result["model_version"]), 0) + 1
        out = {"sent": len(self.client.sent_ms), "answered": len(self.client.answers),
               "duplicates": sum(self.client.duplicates.values()), "versions": versions}
        self.close()
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.close()
