# The count `top-domain-stats --by recipient` makes, in awk, for bench/logtools_bench.py:
# per recipient domain, the messages (once per message), deliveries started, successes,
# deferrals, failures and bytes (each message's size once per domain).  It follows each
# delivery from its start to its result, and each message from `info msg` to `end msg`.
#
#   mawk -f bench/logtools_count.awk DIR/current                 (multilog's tai64n stamps)
#   tai64nlocal < DIR/current | mawk -v local=1 -f bench/logtools_count.awk
#   ... | mawk -v local=1 -v since='2026-12-02 01:00:00' -f bench/logtools_count.awk
#
# `local=1` reads tai64nlocal's output, whose stamp is two fields (date, time); `since`
# (with local=1) skips lines stamped before that local time, as a selector would.
BEGIN { o = local ? 1 : 0 }
local && since != "" && ($1 " " $2) < since { next }
$(2+o) == "info" { m = $(4+o); sub(":", "", m); size[m] = $(6+o); next }
$(2+o) == "starting" {
  d = $(4+o); sub(":", "", d); m = $(6+o)
  n = split($(9+o), a, "@"); dom = tolower(a[n])
  at[d] = dom
  k = m SUBSEP dom
  if (!(k in seen)) { seen[k] = 1; doms[m] = doms[m] " " dom; msgs[dom]++; bytes[dom] += size[m] }
  started[dom]++
  next
}
$(2+o) == "delivery" {
  d = $(3+o); sub(":", "", d)
  if (!(d in at)) next
  dom = at[d]; delete at[d]
  r = $(4+o)
  if (r == "success:") s[dom]++; else if (r == "deferral:") f[dom]++; else if (r == "failure:") x[dom]++
  next
}
$(2+o) == "end" {
  m = $(4+o); n = split(doms[m], list, " ")
  for (i = 1; i <= n; i++) delete seen[m SUBSEP list[i]]
  delete doms[m]; delete size[m]
  next
}
END {
  for (dom in started)
    printf "%s,%d,%d,%d,%d,%d,%d\n", dom, msgs[dom], started[dom], s[dom] + 0, f[dom] + 0, x[dom] + 0, bytes[dom]
}
