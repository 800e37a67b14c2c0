"""The grammar of the spam white and black lists (guide 6.1.2: "email addresses or domains"):
what a line may hold and the SpamAssassin globs it stands for.

A leaf module (it imports nothing of ours), so that the settings registry can validate the
global lists with the same rule as the per-user preferences use.
"""

from __future__ import annotations

import re

from .address import ATEXT, LABEL, MAX_HOSTNAME, MAX_LOCAL_PART


class SpamListError(ValueError):
    """An entry that is neither an address, a domain nor a SpamAssassin address glob."""


# SpamAssassin's address globs: atext, dots and the wildcards ? and * (domain side).
ADDRESS_GLOB = re.compile(rf"[{ATEXT}.?]{{1,{MAX_LOCAL_PART}}}@[A-Za-z0-9*?.-]{{1,{MAX_HOSTNAME}}}")
# A domain written alone in a list: a host name with at least one dot between labels.
_LIST_DOMAIN = re.compile(rf"(?=.{{1,{MAX_HOSTNAME}}}$){LABEL}(?:\.{LABEL})+")
SPAM_LIST_WORDS = ("an address (user@example.com), a domain (example.com or @example.com), "
                   "a domain and its subdomains (.example.com or *.example.com), or a "
                   "SpamAssassin pattern such as *@example.com")


def spam_list_globs(item: str) -> list[str]:
    """The SpamAssassin address globs one white/black-list item stands for (guide 6.1.2,
    "email addresses or domains"): `example.com` and `@example.com` are `*@example.com`;
    `.example.com` and `*.example.com` are that domain and its subdomains
    (`*@example.com *@*.example.com`); an address or `*@domain` glob stays as it is."""
    text = item.strip()
    if ADDRESS_GLOB.fullmatch(text) and not text.startswith("@"):
        return [text]
    bare = text.removeprefix("@")
    subdomains = text.startswith((".", "*."))
    if subdomains:
        bare = text.removeprefix("*").removeprefix(".")
    if "@" in bare or not _LIST_DOMAIN.fullmatch(bare):
        raise SpamListError(f"{item!r} is not an address, a domain or a *@domain pattern")
    domain = bare.lower()
    return [f"*@{domain}", f"*@*.{domain}"] if subdomains else [f"*@{domain}"]


def spam_list_line(line: str) -> str:
    """One line of a white/black list as SpamAssassin takes it: every item of the line (they
    may be separated by spaces) as its globs, space-separated, duplicates dropped."""
    globs: list[str] = []
    for item in line.split():
        for glob in spam_list_globs(item):
            if glob not in globs:
                globs.append(glob)
    if not globs:
        raise SpamListError("needs at least one entry")
    return " ".join(globs)


