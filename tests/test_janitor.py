"""The janitor closes a session whose browser left once its grace period is over, and only then."""

from dashboard.janitor import Janitor


class FakeRuntime:
    def __init__(self):
        self.active, self.closed = set(), []

    def is_active_session(self, session_id):
        return session_id in self.active

    def close_session(self, session_id):
        self.closed.append(session_id)


def test_a_session_that_left_is_closed_after_the_grace_period_and_one_still_there_never():
    now = [0.0]
    runtime = FakeRuntime()
    janitor = Janitor(runtime, grace_s=15, clock=lambda: now[0])
    runtime.active = {"stays", "leaves"}
    janitor.note("stays")
    janitor.note("leaves")
    now[0] = 10
    assert janitor.sweep() == 0
    runtime.active = {"stays"}  # the tab closed at t=10
    now[0] = 20
    assert janitor.sweep() == 0 and runtime.closed == []  # within the grace period: a blip may reconnect
    now[0] = 26
    assert janitor.sweep() == 1 and runtime.closed == ["leaves"]
    now[0] = 100
    assert janitor.sweep() == 0 and runtime.closed == ["leaves"]  # closed once; the live session never
