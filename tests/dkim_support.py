"""DKIM helpers of the tests: serve the records `mailyard dns records` printed, and verify a
signature with Perl's Mail::DKIM (the verifier SpamAssassin uses), an implementation
independent of the signer's dkimpy."""

from __future__ import annotations

import subprocess

from tests.dns_support import DnsServer

VERIFIER = r"""
use strict; use warnings;
use Mail::DKIM::Verifier; use Mail::DKIM::DNS; use Net::DNS::Resolver;
my $res = Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $ARGV[0],
                                  udp_timeout => 5, tcp_timeout => 5, retry => 1);
Mail::DKIM::DNS::resolver($res);
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) { $line =~ s/\r?\n\z//; $dkim->PRINT("$line\015\012"); }
$dkim->CLOSE;
foreach my $sig ($dkim->signatures) {
    printf "%s %s %s\n", $sig->get_tag('a'), $sig->result, $sig->result_detail // '';
}
"""


def publish(dns: DnsServer, zone: str) -> None:
    """Serve every zone-file line of `zone` (as printed by `mailyard dns records`)."""
    for line in zone.splitlines():
        if not line or line.startswith(";"):
            continue
        name, _ttl, _cls, rtype, rdata = line.split(None, 4)
        dns.add(name.rstrip("."), rtype, rdata)


def verify(dns: DnsServer, message: bytes) -> list[str]:
    out = subprocess.run(["perl", "-e", VERIFIER, str(dns.port)], input=message,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().splitlines()




ARC_VERIFIER = r"""
use strict; use warnings;
use Mail::DKIM::ARC::Verifier; use Mail::DKIM::DNS; use Net::DNS::Resolver;
my $res = Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $ARGV[0],
                                  udp_timeout => 5, tcp_timeout => 5, retry => 1);
Mail::DKIM::DNS::resolver($res);
my $arc = Mail::DKIM::ARC::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) { $line =~ s/\r?\n\z//; $arc->PRINT("$line\015\012"); }
$arc->CLOSE;
printf "%s %s\n", $arc->result, $arc->result_detail // '';
"""


def verify_arc(dns: DnsServer, message: bytes) -> str:
    """Mail::DKIM::ARC's verdict on the message's ARC chain: pass, fail or none, and why."""
    out = subprocess.run(["perl", "-e", ARC_VERIFIER, str(dns.port)], input=message,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()
