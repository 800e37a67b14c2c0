"""The one registry of settings: every setting's type, default, help text, service and scope.

The CLI, the JSON API, the panel's forms and the configuration renderers all read this table;
none of them restates a rule. Defaults follow the guide and qmail unless a comment says why not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import blacklist, spam_lists
from .types import (
    TLS_POLICY_LEVELS,
    Bool,
    Choice,
    Directory,
    Hostname,
    Int,
    IPAddress,
    ItemError,
    Lines,
    Number,
    SettingError,
    SettingType,
    Text,
    hostname_item,
    network_item,
    own_address_item,
    smtp_route_item,
    tls_policy_item,
)

# The rule both MTA-level blacklists follow (guide 4.5, qmail badmailfrom + qregex), in one place.
BLACKLIST_ENTRY_WORDS = "one entry per line: " + blacklist.WHAT_IS_ALLOWED
BLACKLIST_RULE = (
    "One entry per line. user@domain and @domain mean exactly that address or that domain (not "
    "its subdomains), as in qmail's badmailfrom. Any other entry is a POSIX extended regular "
    "expression, as InterWorx's qregex patch reads it: searched for anywhere in the address "
    "(without angle brackets or quotes), ignoring case; a backslash before a space stands for "
    "a space, and an entry starting with ! matches every address the rest does not match.")


def spam_list_item(line: str) -> str:
    """A line of the global spam white/black list: addresses, domains or *@domain globs."""
    try:
        return spam_lists.spam_list_line(line).lower()
    except spam_lists.SpamListError as exc:
        raise ItemError(str(exc)) from None


def blacklist_entry_item(line: str) -> str:
    try:
        return blacklist.check_entry(line)
    except blacklist.EntryError as exc:
        raise ItemError(str(exc)) from None


# The global spam lists (guide 6.1.2: "email addresses or domains").
SPAM_LIST_WORDS = "one entry per line: " + spam_lists.SPAM_LIST_WORDS
SPAM_LIST_RULE = ("example.com and @example.com mean every address at example.com; "
                  ".example.com and *.example.com also cover its subdomains; *@example.com "
                  "and other SpamAssassin patterns (* and ?) work as before. The sender "
                  "checked is the message's From: and similar headers, as SpamAssassin does.")

# Every service of a node (the contract of the foundation issue); order is the display order.
SERVICE_NAMES: tuple[str, ...] = (
    "smtp", "submission", "send", "pop3", "pop3s", "imap", "imaps",
    "spamd", "clamd", "freshclam", "panel",
    "sendmail",  # issue 19: the socket through which every local user may send
)

# Authentication modes of the two SMTP servers (guide 4.1): AUTH x TLS.
AUTH_MODES: tuple[tuple[str, str], ...] = (
    ("auth_no/tls_no", "No SMTP-AUTH, no TLS"),
    ("auth_no/tls_optional", "No SMTP-AUTH, TLS optional"),
    ("auth_optional/tls_no", "SMTP-AUTH available, no TLS"),
    ("auth_optional/tls_optional", "SMTP-AUTH available, TLS optional"),
    ("auth_withtls/tls_optional", "SMTP-AUTH only over TLS, TLS optional"),
    ("auth_required/tls_required", "SMTP-AUTH over TLS required"),
)

# DKIM key types a domain signs with (store.dkim_keys makes them) and the DMARC policies a
# domain's record may ask for (RFC 7489 6.3, tag p=).
DKIM_ALGORITHM_CHOICES: tuple[tuple[str, str], ...] = (
    ("rsa", "RSA 2048"),
    ("rsa+ed25519", "RSA 2048 and Ed25519"),
)
DMARC_POLICIES: tuple[tuple[str, str], ...] = (
    ("none", "none: only report"),
    ("quarantine", "quarantine: junk failing mail"),
    ("reject", "reject: refuse failing mail"),
)


def dkim_algorithms(value: str) -> tuple[str, ...]:
    """The key algorithms of a `dkim.algorithms` value, RSA first."""
    return tuple(value.split("+"))


@dataclass(frozen=True)
class Setting:
    key: str
    type: SettingType
    default: Any
    label: str
    help: str
    services: tuple[str, ...] = ()
    cascade: bool = True  # may be applied on every node of a cluster ("Cascade to nodes?")
    box: str = ""  # the panel box (guide's figure) it belongs to
    # Read only when its services start (a listening address or port, bound before the
    # service drops root): a change restarts them through the supervisor instead of a reload.
    at_start: bool = False
    # Set with `mailyard settings` and the API only: the guide's pages have no field for it
    # (the reason is beside its declaration). Every other setting is on a panel page.
    cli_only: bool = False

    def parse(self, text: Any) -> Any:
        value = self.type.parse(self.key, text)
        check = _EXTRA_CHECKS.get(self.key)
        if check:
            check(self.key, value)
        return value

    def format(self, value: Any) -> str:
        return self.type.format(value)


REGISTRY: dict[str, Setting] = {}


def _add(key: str, type_: SettingType, default: Any, label: str, help_: str, *,
         services: tuple[str, ...] = (), cascade: bool = True, box: str = "",
         at_start: bool = False, cli_only: bool = False) -> None:
    if key in REGISTRY:
        raise RuntimeError(f"setting {key} declared twice")
    REGISTRY[key] = Setting(key, type_, default, label, help_, services, cascade, box, at_start,
                            cli_only)


def _refuse_required_auth_on_port_25(key: str, value: str) -> None:
    if value == "auth_required/tls_required":
        raise SettingError(
            key, value,
            "the primary SMTP server on port 25 receives mail from other servers, which never "
            "log in, so it may offer SMTP-AUTH but must not require it; choose another mode",
        )


_EXTRA_CHECKS = {"smtp.auth_mode": _refuse_required_auth_on_port_25}

# Default used when the node has no hostname yet; `mailyard init` always sets one.
_HOST = "localhost"

# ---- MTA server options (guide 4.2) -----------------------------------------------------------
_add("server.hostname", Hostname(), _HOST, "Mail Server Hostname (FQDN)",
     "The name this server gives itself when it talks to other mail servers. Receivers often "
     "compare it with the reverse DNS of the sending address, so keep the two the same.",
     services=("smtp", "submission", "send"), cascade=False, box="mta_server")
_add("server.default_domain", Hostname(), _HOST, "Default Domain",
     "Added to any address written without a domain: mail from plain 'fred' goes out as "
     "fred@<this domain>.", services=("smtp", "submission", "send"), box="mta_server")

# ---- Primary SMTP (guide 4.1, 4.4, 4.5) -------------------------------------------------------
# Not the guide's first mode: AUTH over clear text would send passwords readable by anyone on
# the path, so by default AUTH is offered on port 25 only after STARTTLS (as Postfix's
# smtpd_tls_auth_only = yes); every mode of the guide stays selectable.
_add("smtp.auth_mode", Choice(AUTH_MODES), "auth_withtls/tls_optional", "Authentication Mode",
     "Whether clients of port 25 may log in (SMTP-AUTH) and use TLS. Port 25 receives mail from "
     "other servers, so logging in can be offered here but never required. The default offers "
     "logging in only once the session is encrypted with STARTTLS, so that no password crosses "
     "the network in clear text.",
     services=("smtp",), box="smtp_primary")
_add("smtp.greeting", Text(max_length=200, allow_empty=True,
                           pattern_words="one line of text (empty: the hostname)"), "",
     "SMTP Greeting",
     "The text after '220' that connecting servers see first. Empty means the mail server "
     "hostname.", services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.max_connections", Int(1, 10000), 20, "Inbound Connections (max.)",
     "How many SMTP clients each SMTP server serves at once; the next one is told 421 and may "
     "retry. With the alternate server running too, the total can be twice this.",
     services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.timeout", Int(10, 86400, "seconds"), 1200, "Timeout",
     "Seconds of silence after which the SMTP server hangs up on a client. Any data from the "
     "client starts the count again.", services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.session_lifetime", Int(10, 86400, "seconds"), 3600, "Session Lifetime",
     "Seconds a client may stay connected in all, however busy; then it is told to come back "
     "(421 4.4.2), so that a client trickling a byte now and then cannot hold a slot for "
     "ever. An hour is enough for a 20 MB message at 50 kbit/s.",
     services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.min_data_rate", Int(0, 100_000_000, "bytes/s"), 500, "Minimum Data Rate",
     "Bytes per second a client must keep up, on average, while it sends a message after its "
     "first 30 seconds of DATA; slower clients are told to try again (421 4.4.2) and the part "
     "sent is dropped. 0 turns the check off. Postfix's smtpd_min_data_rate is 500 as well.",
     services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.message_size_mb", Int(0, 2048, "MB"), 20, "Message Size",
     "Largest message accepted, attachments included, in megabytes; 0 means no limit. Large "
     "messages cost disk, memory and scanning time for everyone on the server.",
     services=("smtp", "submission", "clamd"), box="smtp_inbound")
_add("smtp.outbound_blacklist", Lines(blacklist_entry_item, BLACKLIST_ENTRY_WORDS),
     [], "MTA Level Outbound E-mail Address Blacklist",
     "Addresses that local users and logged-in senders may not send to; checked when mail is "
     "queued. " + BLACKLIST_RULE, services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.inbound_blacklist", Lines(blacklist_entry_item, BLACKLIST_ENTRY_WORDS),
     [], "MTA Level Inbound E-mail Address Blacklist",
     "Envelope senders and recipients refused at SMTP time, before anything else is done with "
     "the message; the null sender <> is never refused. " + BLACKLIST_RULE,
     services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.rbl_zones", Lines(hostname_item, "one DNS blacklist zone per line, e.g. bl.spamcop.net"),
     [], "Realtime (SBL) Blacklists",
     "DNS blacklists asked about every connecting address; a listed client is refused with the "
     "list's name. Each list adds a DNS lookup to every connection.",
     services=("smtp",), box="smtp_inbound")
_add("smtp.relay_networks", Lines(network_item, "one network per line, e.g. 192.0.2.0/24"),
     ["127.0.0.0/8", "::1/128"], "Relay Networks",
     "Client networks that may send mail to other domains without logging in. Keep this to "
     "machines you run, or the server becomes an open relay.",
     services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.listen_address", IPAddress(), "",
     "Listen Address",
     "The address the SMTP servers listen on; empty means every IPv4 and IPv6 address. A "
     "change restarts both SMTP servers, which ends the sessions open at the time.",
     services=("smtp", "submission"), cascade=False, box="mta_server", at_start=True)
_add("smtp.dns_resolver", IPAddress(with_port=True), "",
     "DNS Resolver",
     "Address of the DNS server used for blacklist and MX lookups (ADDRESS or ADDRESS@PORT); "
     "empty uses the system's resolvers.", services=("smtp", "send"), box="mta_server")

# ---- Alternate SMTP (guide 4.1) ---------------------------------------------------------------
_add("submission.port", Int(1, 65535), 587, "Alternate SMTP Port",
     "Port of the alternate SMTP server for your users' mail programs; 587 is the standard, "
     "another helps where an ISP blocks it. The node's port base is added to it. A change "
     "restarts the alternate server, which ends the sessions open at the time.",
     services=("submission",), cascade=False, box="smtp_alternate", at_start=True)
_add("submission.smtps_port", Int(1, 65535), 465, "SMTPS Port",
     "Port where the alternate server speaks TLS from the first byte (implicit TLS, RFC 8314). "
     "The node's port base is added to it. A change restarts the alternate server.",
     services=("submission",), cascade=False, box="smtp_alternate", at_start=True)
_add("submission.auth_mode", Choice(AUTH_MODES), "auth_required/tls_required",
     "Authentication Mode",
     "Whether users of the alternate server must log in and use TLS. It does not receive mail "
     "from other servers, so requiring both is safe and recommended.",
     services=("submission",), box="smtp_alternate")

# ---- Outbound (guide 4.6) --------------------------------------------------------------------
_add("send.max_connections", Int(1, 1000), 20, "Outbound Connections (max.)",
     "How many remote deliveries may run at once (qmail's concurrencyremote).",
     services=("send",), box="smtp_outbound")
_add("send.local_concurrency", Int(1, 500), 10, "Local Deliveries (max.)",
     "How many deliveries into local mailboxes may run at once (qmail's concurrencylocal).",
     services=("send",), box="smtp_outbound")
_add("send.response_timeout", Int(1, 86400, "seconds"), 1200, "Response Timeout",
     "Seconds to wait for a remote server's answer before giving up on the connection.",
     services=("send",), box="smtp_outbound")
_add("send.connect_timeout", Int(1, 3600, "seconds"), 60, "Connect Timeout",
     "Seconds to wait for a connection to a remote server to open.",
     services=("send",), box="smtp_outbound")
_add("send.queue_lifetime", Int(1, 31536000, "seconds"), 604800, "Queue Lifetime",
     "Seconds a message may wait in the queue for a deferred delivery. When it runs out the "
     "message gets one last try, and a temporary failure then counts as permanent and bounces.",
     services=("send",), box="smtp_outbound")
_add("send.smtp_routes", Lines(smtp_route_item,
                               "one route per line: DOMAIN:RELAY, DOMAIN:RELAY:PORT, DOMAIN: "
                               "(use MX), :RELAY (every domain) or .domain:RELAY (subdomains)"),
     [], "SMTP Routes",
     "Send mail for a domain to a fixed relay instead of its MX hosts. As in qmail, the line "
     "for the whole domain counts first, then the one for its longest .suffix, then the : "
     "line, whatever their order; an empty relay means look up MX as usual. Beware of routing "
     "loops between servers.",
     services=("send",), box="smtp_outbound")

# ---- Bounces (guide 4.3) ---------------------------------------------------------------------
_add("bounce.from", Text(max_length=64, pattern=r"[A-Za-z0-9._+-]+",
                         pattern_words="a user name (letters, digits, . _ + -)"),
     "mailer-daemon", "Bounce From",
     "User name that bounce messages come from.", services=("send",), box="bounce")
_add("bounce.host", Hostname(allow_empty=True), "", "Bounce Host",
     "Domain that bounce messages come from; with Bounce From it makes the sender address. "
     "Empty means the mail server hostname.", services=("send",), box="bounce")
_add("bounce.double_enabled", Bool(), True, "Double Bounce Messages",
     "When a bounce cannot be returned either, send it to the double bounce mailbox below "
     "instead of dropping it.", services=("send",), box="bounce")
_add("bounce.double_to", Text(max_length=64, pattern=r"[A-Za-z0-9._+-]+",
                              pattern_words="a user name (letters, digits, . _ + -)"),
     "postmaster", "Double Bounce To",
     "User name of the mailbox that collects bounces which could not be returned.",
     services=("send",), box="bounce")
_add("bounce.double_host", Hostname(allow_empty=True), "", "Double Bounce Host",
     "Domain of the double bounce mailbox; empty means the mail server hostname.",
     services=("send",), box="bounce")

# ---- MDAs (guide 5) ---------------------------------------------------------------------------
_MDA_LABELS = {"pop3": "POP3", "pop3s": "Secure POP3", "imap": "IMAP", "imaps": "Secure IMAP"}
for _svc, _name in _MDA_LABELS.items():
    _add(f"{_svc}.memory_limit_mb", Int(64, 65536, "MB"), 256, f"{_name} Memory Limit",
         f"Most memory, in megabytes, one {_name} process may use; a process that needs more is "
         "stopped rather than slowing the whole server.", services=(_svc,), box="mda")
    _add(f"{_svc}.max_connections", Int(1, 100000), 100 if "imap" in _svc else 50,
         f"{_name} Connections (max.)",
         f"How many {_name} clients are served at once; more are refused until one leaves.",
         services=(_svc,), box="mda")
_add("mda.auth_failure_delay", Int(0, 15, "seconds"), 2, "Failed Login Delay",
     "Seconds before a wrong POP3 or IMAP password is answered; slows down password guessing.",
     services=("pop3", "pop3s", "imap", "imaps"), box="mda")
_add("mda.plaintext_networks", Lines(network_item, "one network per line"),
     ["127.0.0.0/8", "::1/128"], "Plaintext Login Networks",
     "Networks whose clients may log in to POP3/IMAP without TLS. Everyone else must use TLS "
     "first, so passwords never cross the network in the clear.",
     services=("pop3", "imap"), box="mda")

# ---- Mail storage (issue 10: a mail root that several nodes can share) ----------------------
# Every service that reads or writes Maildirs: delivery (send, which also runs the Bayes IMAP
# training) and Dovecot's four services, whose reload re-renders mail_home.
_add("mail.root", Directory(empty_words="HOME/mail, inside the node home"), "", "Mail Root",
     "Directory holding the mailboxes, as <domain>/<user>/Maildir below it. Empty keeps them in "
     "the node home (HOME/mail). Give every node the same shared filesystem here (cascade it) "
     "and any node can deliver to and serve any mailbox. A directory that does not exist yet "
     "is created for the mail owner; an existing one must be writable by it. Changing it does "
     "not move mail already stored: copy the mailboxes over yourself, with delivery and "
     "POP3/IMAP stopped.",
     services=("send", "pop3", "pop3s", "imap", "imaps"), box="mail_storage",
     cli_only=True)  # moving every mailbox is no form field: `mailyard settings set`

# ---- SpamAssassin (guide 3.3, 6.1) ------------------------------------------------------------
_add("spam.smtp_scanning", Bool(), False, "SMTP Level Scanning",
     "Score every message with SpamAssassin while the sender is still connected and refuse those "
     "above the SMTP spam score threshold. Messages are then usually scanned twice: here and "
     "at the mailbox.", services=("smtp", "submission"), box="spam_options")
_add("spam.mailbox_scanning", Bool(), True, "Mailbox Level Scanning",
     "Score every message with SpamAssassin as it is delivered into a local mailbox, using that "
     "mailbox's own preferences and Bayes data, and file spam as the mailbox chooses.",
     services=("send",), box="spam_options")
_add("spam.smtp_threshold", Number(0, 1000), 10.0, "SMTP Spam Score Threshold",
     "Score above which SMTP-level scanning refuses a message. Keep it well above the mailbox "
     "threshold so that doubtful mail still reaches users, tagged.",
     services=("smtp", "submission"), box="spam_options")
_add("spam.threshold", Number(0, 1000), 5.0, "Spam Score Threshold",
     "Score from which a message is marked as spam at the mailbox. Lower is stricter: 5 suits "
     "most servers, 7 if legitimate mail gets caught, 4 if too much spam gets through.",
     services=("spamd",), box="spam_options")
_add("spam.rewrite_subject", Text(max_length=60, allow_empty=True), "--SPAM--",
     "Rewrite Header Subject",
     "Text put in front of the subject of messages marked as spam; empty leaves subjects alone.",
     services=("spamd",), box="spam_options")
_add("spam.reporting_method", Choice((("unchanged", "Unchanged, subject rewritten"),
                                      ("attach", "Attach Original"),
                                      ("attach_plain", "Attach as plain text"))),
     "attach", "Reporting Method",
     "How a spam message reaches the user: as it was with the subject rewritten, attached to a "
     "SpamAssassin report, or attached as plain text so no part of it can run.",
     services=("spamd",), box="spam_options")
_add("spam.auto_whitelist", Bool(), True, "Auto Whitelisting",
     "Remember the scores of each sender's past mail and pull new scores toward that average.",
     services=("spamd",), box="spam_options")
_add("spam.timeout", Int(1, 600, "seconds"), 30, "Scan Timeout",
     "Seconds to wait for SpamAssassin. When it is down or slower, mail goes on unscanned "
     "rather than being held up.", services=("smtp", "submission", "send"), box="spam_options")
_add("spam.whitelist", Lines(spam_list_item, SPAM_LIST_WORDS), [],
     "Global Whitelist", "Senders whose mail is never marked as spam, server-wide. "
     + SPAM_LIST_RULE,
     services=("spamd",), box="spam_lists")
_add("spam.blacklist", Lines(spam_list_item, SPAM_LIST_WORDS), [],
     "Global Blacklist", "Senders whose mail is always marked as spam, server-wide. "
     + SPAM_LIST_RULE,
     services=("spamd",), box="spam_lists")
_add("spam.trusted_networks", Lines(network_item, "one network per line"), [],
     "Trusted Networks",
     "Relays known not to be run by spammers, open relays or open proxies; SpamAssassin trusts "
     "the headers they add.", services=("spamd",), box="spam_lists")
_add("spam.bayes", Bool(), True, "Bayes Scanning",
     "Use the Bayes classifier, which learns from mail marked as spam or not spam.",
     services=("spamd",), box="spam_bayes")
_add("spam.bayes_auto_learn", Bool(), True, "Bayes Auto Learning",
     "Let Bayes learn by itself from messages whose score is clearly spam or clearly not.",
     services=("spamd",), box="spam_bayes")
_add("spam.bayes_imap_training", Bool(), True, "Bayes IMAP Training",
     "Give every mailbox the folders 'Learn Spam' and 'Learn Ham'; once a day their messages "
     "are learned (up to the learning limit) and the folders emptied, messages over the limit "
     "included.", services=("spamd", "imap", "imaps"), box="spam_bayes")
_add("spam.bayes_imap_limit", Int(0, 100000, "per day"), 50, "Bayes IMAP Learning Limit",
     "Most messages learned from each training folder of a mailbox per day. After the "
     "training the folders are emptied: messages over the limit are removed without being "
     "learned.",
     services=("spamd",), box="spam_bayes")
_add("spam.bayes_global", Bool(), False, "Global Bayes Database",
     "One Bayes database for the whole server instead of one per mailbox. Per mailbox catches "
     "more spam but each user must train it, and it uses more disk.",
     services=("spamd",), box="spam_bayes")

# ---- ClamAV (guide 3.4, 6.2) -----------------------------------------------------------------
_add("virus.smtp_scanning", Bool(), False, "SMTP Virus Scanning",
     "Scan every message with ClamAV while the sender is connected and refuse infected ones. "
     "If ClamAV is down, senders are told to try again later, so nothing is lost but mail waits.",
     services=("smtp", "submission"), box="virus_options")
_add("virus.timeout", Int(1, 600, "seconds"), 60, "Virus Scan Timeout",
     "Seconds to wait for ClamAV before telling the sender to try again later.",
     services=("smtp", "submission"), box="virus_options")

# ---- Mail authentication: DKIM and the DNS records to publish (RFC 6376, 7208, 7489) ---------
_add("dkim.signing", Bool(), True, "DKIM Signing",
     "Sign mail that leaves this node for another server with the key of the sender's domain, "
     "when the sender may use that domain (logged-in users and local programs). Receivers "
     "check the signature against the key published in DNS (see `mailyard dns records`).",
     services=("send",), box="mail_auth")
_add("dkim.algorithms", Choice(DKIM_ALGORITHM_CHOICES), "rsa", "DKIM Key Types",
     "The keys each domain signs with: 'rsa' (2048-bit RSA, which every receiver checks) or "
     "'rsa+ed25519' (a second, Ed25519 signature beside it, RFC 8463). Applies to domains "
     "added or rotated from now on.", services=(), box="mail_auth")
_add("dns.dmarc_policy", Choice(DMARC_POLICIES), "quarantine", "DMARC Policy to Publish",
     "What the DMARC record suggested for each domain asks receivers to do with mail that "
     "fails both SPF and DKIM alignment: none (only report), quarantine (junk it) or reject.",
     services=(), box="mail_auth")
_add("mailauth.inbound_checks", Bool(), True, "Check Incoming Mail (SPF, DKIM, DMARC)",
     "Check the SPF, DKIM and DMARC of mail that other servers send to port 25 and add an "
     "Authentication-Results header with the outcome. Clients of the relay networks and "
     "logged-in users are not checked.", services=("smtp",), box="mail_auth")
_add("dmarc.reject", Bool(), True, "Act on DMARC p=reject",
     "Refuse at the end of DATA (550 5.7.1) a message that fails the DMARC policy of its From "
     "domain when that domain asks receivers to reject such mail.", services=("smtp",),
     box="mail_auth")
_add("dmarc.quarantine", Bool(), True, "Act on DMARC p=quarantine",
     "File a message that fails a DMARC policy of quarantine (or of reject, when that is not "
     "acted on) in the recipient's Spam folder.", services=("smtp",), box="mail_auth")
_add("dmarc.exempt_domains", Lines(hostname_item, "one recipient domain per line"), [],
     "DMARC Exempt Domains",
     "Recipient domains whose mail is never refused or quarantined for DMARC (for example a "
     "domain that receives forwarded mailing-list traffic). A message for exempt and other "
     "recipients at once is split: the others are asked to come back in their own "
     "transaction (452 4.5.3).", services=("smtp",), box="mail_auth")
_add("srs.enabled", Bool(), True, "Rewrite Forwarded Senders (SRS)",
     "Give mail that an alias or forward sends on an envelope sender of this node "
     "(SRS0=…@<hostname>), so that the next server's SPF check passes; a bounce to that "
     "address is decoded and passed back to the original sender.", services=("send", "smtp"),
     box="mail_auth")
_add("arc.sealing", Bool(), True, "ARC-Seal Forwarded Mail",
     "Seal the authentication results found when a message arrived onto the copy an alias or "
     "forward sends on (ARC, RFC 8617), with the forwarding domain's DKIM key, so that the "
     "next server can trust them although forwarding broke SPF.", services=("send",),
     box="mail_auth")
_add("spf.refuse_fail", Bool(), False, "Refuse SPF Failures",
     "Refuse at RCPT (550 5.7.23) mail whose sender's domain says, through SPF, that the "
     "client may not send for it. Off by default: DMARC already uses SPF, and refusing on SPF "
     "alone loses forwarded mail that DKIM would have shown genuine (RFC 7489 10.1).",
     services=("smtp",), box="mail_auth")


# ---- Per-service controls (start on boot, auto-restart, memory limit) ------------------------
_DEFAULT_MEMORY_MB = {"spamd": 1024, "clamd": 2048, "panel": 512}
# The guide's pages show a memory limit only for spamd and clamd, auto-restart only where its
# control boxes have one, and nothing of the panel's own service (switching the panel off from
# the panel would lock the administrator out): the rest are set with `mailyard settings`.
_MEMORY_ON_PAGE = frozenset({"spamd", "clamd"})
_RESTART_ON_PAGE = frozenset({"smtp", "submission", "send", "spamd", "clamd"})
for _svc in SERVICE_NAMES:
    _add(f"service.{_svc}.start_on_boot", Bool(), True, "Start on boot-up",
         "Start this service whenever the node starts.", services=(_svc,), box=f"service.{_svc}",
         cli_only=_svc == "panel")
    _add(f"service.{_svc}.auto_restart", Bool(), _svc != "freshclam", "Auto-restart",
         "Start the service again if it stops on its own.", services=(_svc,),
         box=f"service.{_svc}", cli_only=_svc not in _RESTART_ON_PAGE)
    if _svc in _MDA_LABELS:
        continue  # Dovecot limits each of its processes: pop3.memory_limit_mb and so on
    _add(f"service.{_svc}.memory_limit_mb", Int(0, 65536, "MB"), _DEFAULT_MEMORY_MB.get(_svc, 0),
         "Memory Limit",
         "Address space the service may use, in megabytes, set before it starts as daemontools' "
         "softlimit does; 0 means no limit.", services=(_svc,), box=f"service.{_svc}",
         cli_only=_svc not in _MEMORY_ON_PAGE)

# ---- Log tools (guide 8): what xwebmail takes for the webmail ----------------------------------
_add("logtools.webmail_user", Text(max_length=32, pattern=r"[A-Za-z_][A-Za-z0-9_.-]*|[0-9]+",
                                   pattern_words="a system user name or a numeric uid"),
     "www-data", "Webmail System User",
     "The system user a webmail on this host runs as when it sends through the node's sendmail "
     "(PHP's mail(), or a webmail set to use sendmail). sendmail writes the caller's uid into "
     "the send log, and xwebmail picks the messages of this user. www-data is the web server's "
     "user on Debian.", services=(), box="logtools")
_add("logtools.webmail_clients", Lines(network_item, "one address or network per line, e.g. "
                                       "127.0.0.1"),
     [], "Webmail SMTP Clients",
     "Addresses from which a webmail hands its mail to the SMTP or submission service (a "
     "webmail set to send by SMTP, as Roundcube is by default, comes from 127.0.0.1 when it "
     "runs on this host). xwebmail also picks the messages those services accepted from these "
     "addresses. Empty: only mail sent through sendmail counts as webmail.",
     services=(), box="logtools")


# ---- Safety defaults of the SMTP servers (issue 16) ------------------------------------------
_add("server.postmaster", Text(max_length=254, allow_empty=True,
                               pattern=r"[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?",
                               pattern_words="a mailbox address of this node, user@domain "
                                             "(empty: postmaster@ the mail server hostname)"),
     "", "Postmaster Mailbox",
     "The mailbox of this node that receives mail sent to postmaster@ any of its domains when "
     "that domain has no postmaster mailbox or alias of its own; every mail server must take "
     "such mail. `mailyard init` creates it (or uses the one named with --postmaster). If it "
     "is missing or disabled, senders to postmaster are asked to try again later.",
     services=("smtp", "submission"), box="mta_server")
_add("smtp.sender_login_match", Bool(), True, "Check Sender Against Login",
     "A client that has logged in may use as envelope sender only its own address, an alias "
     "that delivers to it, and (with the next setting) addresses of its owner's domains; any "
     "other sender is refused with 553 and the refusal is logged. Mail with the empty sender "
     "(bounces) is not checked.", services=("smtp", "submission"), box="smtp_inbound")
_add("smtp.sender_owner_domains", Bool(), True, "Sender May Use Owner's Domains",
     "With the sender check on, a logged-in mailbox may also send as any address of any domain "
     "that has the same owner as its own domain (a hosting customer's other domains). Off: "
     "only its own address and its aliases.", services=("smtp", "submission"), box="smtp_inbound")
# ---- SMTP worker processes (issue 14) -------------------------------------------------------
_add("smtp.workers", Int(0, 16), 0, "SMTP Worker Processes",
     "How many processes each SMTP server runs to serve its clients; they share the port, "
     "the connection limits and the failed-login delays. 0 starts one per CPU. Takes effect "
     "when the service is restarted.", services=("smtp", "submission"), box="smtp_inbound")


# ---- Outbound safety (issue 16: loops, slow destinations, TLS per next hop) -----------------
_add("send.own_addresses", Lines(own_address_item,
                                 "one per line: ADDRESS (any port), IPv4:PORT or [IPv6]:PORT"),
     [], "Own Addresses",
     "Addresses that lead back to this server although it does not listen on them itself: a "
     "NAT or proxy address in front of it. Delivery never connects to these or to the "
     "server's own SMTP listeners, and drops MX hosts listed no better than this server.",
     services=("send",), cascade=False, box="smtp_outbound")
# Postfix's default_destination_concurrency_limit is 20 as well.
_add("send.destination_concurrency", Int(1, 1000), 20, "Deliveries per Destination (max.)",
     "How many remote deliveries to one destination (a domain, or a route's relay) may run at "
     "once, so that one slow server cannot take every outbound connection.",
     services=("send",), box="smtp_outbound")
_add("send.tls_default_policy", Choice(tuple((v, v) for v in TLS_POLICY_LEVELS)), "may",
     "Outbound TLS (default)",
     "TLS for destinations not in the TLS policy table. none: never; may: when the server "
     "offers it, certificate not checked, clear text if it fails; encrypt: TLS or wait and "
     "retry; verify: TLS with a certificate valid for the server's name, or wait and retry.",
     services=("send",), box="smtp_outbound")
_add("send.tls_policy", Lines(tls_policy_item, "one per line: NEXTHOP LEVEL, with NEXTHOP a "
                              "domain, .domain (its subdomains) or a route's relay and LEVEL "
                              "none, may, encrypt or verify"),
     [], "Outbound TLS Policy",
     "TLS per destination, overriding the default: a recipient domain (or .domain for its "
     "subdomains), or the relay of an SMTP route (then the relay's name is what counts).",
     services=("send",), box="smtp_outbound")
_add("send.tls_ca_file", Text(max_length=1024, allow_empty=True, pattern=r"/\S*",
                              pattern_words="an absolute path, or empty"), "",
     "Outbound TLS CA File",
     "PEM file of the certificate authorities trusted where the TLS policy says verify; empty "
     "uses the system's store.", services=("send",), box="smtp_outbound")
_add("send.mta_sts", Bool(), True, "Honour MTA-STS",
     "Deliver to a domain that publishes an MTA-STS policy in enforce mode (RFC 8461) only "
     "over TLS verified for one of the MX hosts its policy names; otherwise the mail waits "
     "and is retried, never sent in clear. An entry for the domain in the outbound TLS "
     "policy takes precedence.", services=("send",), box="smtp_outbound")


# ---- The panel's listener (issue 16, item 9) ---------------------------------------------------
# Loopback by default: the panel holds the keys to the whole node, and a new node should not
# offer its sign-in form to the internet before its administrator has decided who may reach it.
# Not on a page: changing it from the panel could leave the person who changed it locked out.
_add("panel.listen_address", IPAddress(allow_empty=False), "127.0.0.1", "Panel Listen Address",
     "The address the web panel and its JSON API listen on. 127.0.0.1 (the default) keeps "
     "them on this machine, to be reached through an SSH tunnel or a proxy; 0.0.0.0 (or ::) "
     "opens them on every address, as the guide's panel does, and then a firewall should "
     "decide who may connect. Nodes of a cluster call each other's API, so there it must be "
     "an address the other nodes reach. A change restarts the panel.",
     services=("panel",), cascade=False, at_start=True, cli_only=True)

def setting(key: str) -> Setting:
    try:
        return REGISTRY[key]
    except KeyError:
        raise SettingError(key, key, "an existing setting key (see `mailyard settings list`)") from None


def defaults() -> dict[str, Any]:
    return {key: s.default for key, s in REGISTRY.items()}


# ---- Outbound rate limits (issue 19, item 3) ---------------------------------------------------
# 300 an hour per sender: cPanel's default "max emails per hour" for a domain is 500, and
# shared hosts commonly allow 100 to 500 per mailbox; 300 is well above what a person writes
# and well below what a stolen password is used for. A mailbox's own limit overrides it
# (`mailyard mailbox set ADDRESS --messages-per-hour N`).
_add("limits.messages_per_hour", Int(0, 1_000_000, "messages"), 300, "Messages per Hour",
     "How many messages to other servers one sender may hand in per hour: a logged-in mailbox, "
     "a local user calling sendmail, or a relay-network address. Counted over the last hour, "
     "sliding; past it the sender is told 451 4.7.1 and tries again later. Mail to this "
     "node's own domains is not counted. 0: no limit.",
     services=("smtp", "submission"), box="smtp_outbound")
# A message to many people is one message: the recipient count catches a mailing-list blast
# of few messages. 1000 is Postfix's smtpd_recipient_limit per message, here per hour.
_add("limits.recipients_per_hour", Int(0, 10_000_000, "recipients"), 1000,
     "Recipients per Hour",
     "How many recipients at other servers one sender may address per hour, over all its "
     "messages; the recipient past it is told 451 4.7.1. 0: no limit.",
     services=("smtp", "submission"), box="smtp_outbound")
# Every mailbox of a domain together: a hosting customer's whole domain, as cPanel counts.
_add("limits.domain_messages_per_hour", Int(0, 10_000_000, "messages"), 1000,
     "Messages per Domain per Hour",
     "How many messages to other servers all the senders of one domain together may hand in "
     "per hour (a mailbox counts for its own domain; sendmail and relay-network mail for the "
     "sender address's domain when it is one of this node's). 0: no limit.",
     services=("smtp", "submission"), box="smtp_outbound")
_add("limits.hold_when_over", Bool(), False, "Hold Mail of Senders over a Limit",
     "When a sender passes a limit, also hold the mail it has queued already, for an "
     "administrator to review and release or delete (a stolen password sends fast). Off: the "
     "sender is only refused until its count has fallen.",
     services=("smtp", "submission"), box="smtp_outbound")


def value(settings: Mapping[str, Any], key: str) -> Any:
    """The value of setting `key` in `settings` (as the store loads them), or its declared
    default when `settings` lack it (a partial mapping), so that no call site restates a
    default. An unknown key is refused with SettingError, as everywhere."""
    spec = setting(key)
    return settings[key] if key in settings else spec.default
