"""Queue administration while the send service runs: changes are carried out by the service."""

from __future__ import annotations

from send_harness import (
    SendService,
    SmtpSink,
    inject,
    maildir_messages,
    queue_empty,
    read_send_log,
    wait_until,
)

from mailyard.home import Home
from mailyard.queue import admin
from mailyard.store.settings_store import set_setting


def _deferred(home: Home, qid: str) -> bool:
    return any(m.id == qid and m.status == "remote" for m in admin.list_messages(home)) and \
        any(": deferral: " in line for line in read_send_log(home))


def test_delete_and_purge_go_through_the_running_service(mail_home: Home,
                                                         send_service: SendService,
                                                         sink: SmtpSink) -> None:
    sink.default_rcpt_reply = "452 4.2.2 mailbox full"
    set_setting(mail_home, "send.smtp_routes", [f":{sink.host}:{sink.port}"])
    send_service.start()
    first = inject(mail_home, ["bob@far.test"])
    second = inject(mail_home, ["carl@far.test", "joe@example.test"])
    wait_until(lambda: _deferred(mail_home, first), what="the first deferral")
    result = admin.delete(mail_home, first)
    assert result == {"id": first, "via": "service", "done": True}
    assert f"end msg {first}" in read_send_log(mail_home)
    assert first not in [m.id for m in admin.list_messages(mail_home)]

    wait_until(lambda: maildir_messages(mail_home, "joe@example.test"), what="local part")
    result = admin.purge(mail_home, "remote")
    assert result["via"] == "service" and result["done"] and result["messages"] == 1
    wait_until(lambda: queue_empty(mail_home), what="queue to empty")
    log = read_send_log(mail_home)
    assert f"end msg {second}" in log
    assert sink.messages == []

    sent = admin.send_test(mail_home, "joe@example.test", "panel test", "hi")
    wait_until(lambda: len(maildir_messages(mail_home, "joe@example.test")) == 2,
               what="the test message")
    # The Maildir file comes first; the done mark and the message's removal follow it.
    # (Not waited for by its id in the log: a queue id is an inode number, and this one may
    # be that of a message removed above.)
    wait_until(lambda: queue_empty(mail_home), what="the test message to end")
    assert sent["id"]
