"""Dovecot without root: every process as one ordinary user, no chroot, same behaviour.

The suite normally runs as root, so this test starts Dovecot as the system user `mailyard`
with the configuration mailyard renders for an unprivileged node (as `identity()` gives it
when mailyard itself is not root); run as an ordinary user, it starts Dovecot as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from mda_support import (
    DOMAIN,
    IMAPS,
    PASSWORD,
    POP3,
    START_TIMEOUT,
    make_node,
    place_message,
    short_tmp,
    tls_context,
)

from mailyard.mda import dovecot, master
from mailyard.mda.config import Identity, paths
from mailyard.services.privileges import MAIL_USER, running_as_root


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def test_dovecot_serves_without_root():
    root = short_tmp("mda-unpriv")
    home = make_node(root, users=("alice",))
    if running_as_root():
        user = pwd.getpwnam(MAIL_USER)
        ident = Identity(False, user.pw_name, user.pw_name, user.pw_name, user.pw_uid,
                         user.pw_gid)
        conf = dovecot.render(home, ident=ident)
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(root)], check=True)
        prefix = ["runuser", "-u", user.pw_name, "--"]
    else:
        user = pwd.getpwuid(os.getuid())
        conf = dovecot.render(home)
        prefix = []
    text = conf.read_text()
    assert "chroot = login" not in text and f"default_login_user = {user.pw_name}" in text
    place_message(home, f"alice@{DOMAIN}", "read without root")
    log = open(home.log_dir / "dovecot-unprivileged.log", "wb")
    proc = subprocess.Popen(prefix + [master.program("dovecot"), "-F", "-c", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(master.listening(home.port(s)) for s in ("imaps", "pop3")):
            assert proc.poll() is None and time.monotonic() < deadline, \
                (home.log_dir / "dovecot-unprivileged.log").read_text()
            time.sleep(0.05)
        client = IMAPS(home.port("imaps"), tls_context(home))
        client.login(f"alice@{DOMAIN}", PASSWORD)
        client.select()
        _, found = client.search(None, "SUBJECT", '"read without root"')
        assert len(found[0].split()) == 1
        pop = POP3(home.port("pop3"))
        pop.stls(context=tls_context(home))
        pop.user(f"alice@{DOMAIN}")
        assert pop.pass_(PASSWORD).startswith(b"+OK")
        pid = master.master_pid(paths(home).base_dir)
        assert pid is not None
        owners = {Path(f"/proc/{p}").stat().st_uid for p in [pid, *_children(pid)]}
        assert owners == {user.pw_uid}  # no process of this Dovecot runs as anyone else
        pop.quit()
        client.logout()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        finally:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            log.close()
            shutil.rmtree(root, ignore_errors=True)
