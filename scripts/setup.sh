#!/usr/bin/env bash
# Installs what the node (`run`) or the test suite (`test`) needs; quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-run}"

# Debian packages behind each part of the node (see DESIGN.md and docs/).
node_debs=(python3 python3-venv python3-dev gcc openssl
  dovecot-imapd dovecot-pop3d dovecot-sqlite dovecot-pgsql
  spamassassin spamd spamc
  clamav clamav-daemon clamav-freshclam clamdscan
  rrdtool librrd-dev pkg-config)
# Extra packages the tests drive: real clients, the benchmark peer, PostgreSQL, a browser,
# Perl's Mail::DKIM (an independent DKIM verifier), strace (the durability contract test);
# daemontools (tai64nlocal) and mawk for the log tools benchmark's awk pipelines.
test_debs=(postfix swaks isync postgresql chromium libmail-dkim-perl strace daemontools mawk)

debs=("${node_debs[@]}")
[ "$what" = test ] && debs+=("${test_debs[@]}")

missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "mailyard set-up: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "mailyard set-up: installing ${missing[*]}"
  # postfix asks questions on install; answer them for a local-only, unconfigured peer.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A system postfix must not hold port 25 or run a queue of its own: we only use its binaries.
if [ "$what" = test ] && pgrep -x master >/dev/null 2>&1 && [ -f /var/spool/postfix/pid/master.pid ]; then
  postfix stop >/dev/null 2>&1 || true
fi

# The virtualenv with the pinned Python dependencies, rebuilt only when the lock changes.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
stamp=.venv/.mailyard-lock
# setup.py and the C source: the log tools' compiled core is rebuilt when they change
want="$(sha256sum requirements.lock pyproject.toml setup.py src/mailyard/logtools/_fastcount.c | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
