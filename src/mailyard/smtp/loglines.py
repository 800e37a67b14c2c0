"""Every line the SMTP services write to their log, in one place.

Each function returns the text of one line (the log adds the tai64n stamp). Keys are `key=value`
pairs with no spaces in a value we chose, so the log tools can split them; the session id comes
last on session lines. A rejection names its rule: the reply's table name.
"""

from __future__ import annotations

from ..logs import logsafe
from .replies import Reply


def session(text: str, session_id: str) -> str:
    return f"{text} session={session_id}"


def connect(active: int, cap: int, ip: str, port: int) -> str:
    return f"status: {active}/{cap} connect ip={ip} port={port}"


def reject(ip: str, reply: Reply, value: str, sender: str | None = None) -> str:
    """A refusal: the rule, what it was applied to and the reply; `sender` is the
    transaction's MAIL FROM, when there is one, so that a refused recipient can be found by
    its sender too (`mailyard trail`). `value` may hold spaces (our own words, or a quoted
    local part): readers anchor on the fixed fields after it, which hold none."""
    line = f"reject ip={ip} rule={reply.name or 'OTHER'} value={value or '-'} reply={reply.short()}"
    if sender is not None:
        line += f" from=<{logsafe(sender)}>"
    return line


def timeout(ip: str, seconds: float, state: str) -> str:
    return f"timeout ip={ip} after={seconds:g}s state={state}"


def too_many_errors(ip: str, errors: int) -> str:
    return f"too-many-errors ip={ip} errors={errors}"


def dropped(ip: str, exc: BaseException) -> str:
    return f"dropped ip={ip} error={type(exc).__name__}"


def internal_error(ip: str, exc: BaseException) -> str:
    return f"error ip={ip} {type(exc).__name__}: {exc}"


def end(ip: str, messages: int, seconds: float) -> str:
    return f"end ip={ip} messages={messages} seconds={seconds:.3f}"


def cut_off(ip: str, size: int | None = None) -> str:
    if size is None:
        return f"cut-off ip={ip} the client left in the middle of DATA"
    return (f"cut-off ip={ip} the client left in the middle of DATA after {size} octets; "
            "nothing was queued")


def store_error(ip: str, exc: BaseException) -> str:
    return f"store-error ip={ip} {exc}"


def tls_failed(ip: str, exc: BaseException) -> str:
    return f"tls-failed ip={ip} error={type(exc).__name__}"


def auth_ok(ip: str, user: str, mechanism: str) -> str:
    return f"auth ip={ip} user={user} mechanism={mechanism}"


def auth_failed(ip: str, user: str, failures: int, delay: float) -> str:
    return f"auth-failed ip={ip} user={user} failures={failures} delay={delay:g}s"


def queue_error(ip: str, exc: BaseException) -> str:
    return f"queue-error ip={ip} {exc}"


def filter_error(ip: str, exc: BaseException) -> str:
    return f"filter-error ip={ip} {type(exc).__name__}: {exc}"


def accepted(qid: str, size: int, sender: str, recipients: list[str], ip: str, protocol: str,
             user: str, bare_lf: int, bare_cr: int, *, tls: str = "no", helo: str = "",
             msgid: str = "", filters: str = "") -> str:
    """A message queued: the `250` was sent. Every value a client chose is logsafe'd (a space
    or control character in a quoted local part becomes `_`), so no field can be forged.

    `tls` is the protocol version (`TLSv1.3`) or `no`; `msgid` the Message-ID header without
    brackets (left out when the message has none); `filters` the SMTP-level verdicts, e.g.
    `virus:clean,spam:2.1/10` (left out when no filter ran at SMTP time)."""
    rcpts = ",".join(f"<{logsafe(r)}>" for r in recipients)
    line = (f"accepted qid={qid} size={size} from=<{logsafe(sender)}> to={rcpts} ip={ip} "
            f"protocol={protocol}")
    if user:
        line += f" user={logsafe(user)}"
    if bare_lf or bare_cr:
        line += f" bare_lf={bare_lf} bare_cr={bare_cr}"
    line += f" tls={tls or 'no'} helo={logsafe(helo) if helo else '-'}"
    if msgid:
        line += f" msgid=<{logsafe(msgid)}>"
    if filters:
        line += f" filters={filters}"
    return line


def mail_auth(ip: str, spf: str, dkim: str, dmarc: str, dmarc_policy: str, action: str) -> str:
    """The outcome of the SPF, DKIM and DMARC checks of one message (before its reply)."""
    return (f"mailauth ip={ip} spf={spf} dkim={dkim or 'none'} dmarc={dmarc} "
            f"policy={dmarc_policy} action={action}")


def mail_auth_error(ip: str, exc: BaseException) -> str:
    return f"mailauth-error ip={ip} {type(exc).__name__}: {exc}"


def session_too_long(ip: str, lifetime: float) -> str:
    return f"too-long ip={ip} lifetime={lifetime:g}s"


def rate_table_error(ip: str, exc: BaseException) -> str:
    """The outbound rate counters could not be read or written: the mail goes on uncounted."""
    return f"rate-table-error ip={ip} {type(exc).__name__}: {exc}"
