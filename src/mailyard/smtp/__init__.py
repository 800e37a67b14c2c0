"""The inbound MTA: the `smtp` and `submission` services and the local `sendmail` program.

Layout (one job per module):

    replies.py   every reply code and text the servers send (one table)
    events.py    what the protocol machine reports: commands, data chunks, end of data
    lines.py     the strict CRLF line reader and the DATA dot-unstuffer (sans-io)
    (mailyard.address, below every layer, is the grammar of envelope paths and ESMTP parameters)
    protocol.py  the sans-io session state machine: bytes in, events out, replies in, bytes out
    auth.py      the SASL PLAIN and LOGIN exchanges (sans-io)
    policy.py    every accept/refuse decision as a plain function of settings, session, input
    (mailyard.blacklist, a primitive the settings validate with, holds the MTA-level address
    blacklists: qmail badmailfrom entries, qregex patterns)
    rbl.py       DNS blacklist lookups
    received.py  the Received header
    server.py    the thin asyncio driver that moves bytes between sockets, machine and queue
    service.py   the service entry points (listeners, privileges, signals, settings reload)
    sendmail.py  the sendmail-compatible local injector
"""
