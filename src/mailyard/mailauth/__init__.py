"""Mail authentication: DKIM signing of mail that leaves, and the DNS records a domain needs."""
