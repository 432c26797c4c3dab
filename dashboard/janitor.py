"""What a closed browser session held is released within seconds, not minutes.

Streamlit keeps a disconnected session (its uploaded files, up to 8 × 50 MB, and its state) for reconnection, and
reaps it only lazily, when another session disconnects: on a quiet server the uploads of a closed tab stayed resident
for minutes (docs/reliability.md). One janitor per server process notes every session that runs the app; every
PERIOD_S seconds it closes, through the runtime's public ``close_session``, each one that has been disconnected for
more than GRACE_S (a network blip shorter than that reconnects to its state), then collects and trims the heap.
"""

import gc
import threading
import time

from residual_core.data.images import release_freed_memory

GRACE_S = 15.0  # a reconnect within this keeps its session; after it, the session's memory goes
PERIOD_S = 5.0


class Janitor:
    def __init__(self, runtime, grace_s: float = GRACE_S, clock=time.monotonic) -> None:
        self._runtime, self._grace, self._clock = runtime, grace_s, clock
        self._last_seen: dict[str, float] = {}  # session id -> when it was last seen connected
        self._lock = threading.Lock()

    def note(self, session_id: str) -> None:
        with self._lock:
            self._last_seen[session_id] = self._clock()

    def sweep(self) -> int:
        """Close the sessions disconnected for longer than the grace period; how many were closed."""
        now, closed = self._clock(), 0
        with self._lock:
            known = list(self._last_seen.items())
        for session_id, seen in known:
            if self._runtime.is_active_session(session_id):
                with self._lock:
                    self._last_seen[session_id] = now
            elif now - seen > self._grace:
                self._runtime.close_session(session_id)  # shuts it down: its uploaded files are dropped
                with self._lock:
                    self._last_seen.pop(session_id, None)
                closed += 1
        if closed:
            gc.collect()  # a session's objects sit in reference cycles: free them now, then give the pages back
            release_freed_memory()
        return closed

    def run_forever(self, period_s: float = PERIOD_S) -> None:
        while True:
            time.sleep(period_s)
            try:
                self.sweep()
            except Exception:  # a janitor never takes the server down; the next sweep tries again
                continue


def start(runtime) -> Janitor:
    janitor = Janitor(runtime)
    threading.Thread(target=janitor.run_forever, name="residual-janitor", daemon=True).start()
    return janitor
