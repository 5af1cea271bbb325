"""Keep presidio offline: point tldextract at its bundled public-suffix snapshot.

presidio's `EmailRecognizer.validate_result` calls the module-level `tldextract.extract(...)`, which
delegates to the module global `tldextract.tldextract.TLD_EXTRACTOR`. That default extractor, on its
first call, reads a cache under ~/.cache/python-tldextract and, on a miss, fetches the public-suffix
list from publicsuffix.org (with no network: a stall until the timeout, then a logged traceback) and
writes the cache. (presidio 2.2.366's `UrlRecognizer` is a plain regex with its own TLD list and does
not call tldextract.)

`use_bundled_public_suffix_list()` swaps that global for an extractor with no URLs to fetch and no
cache directory, so the first call parses the snapshot shipped inside the tldextract wheel: no
socket, no file written. The snapshot is as old as the installed tldextract release; for telling an
email's domain from a non-domain that is plenty.
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_MARK = "_ftkit_bundled_snapshot"


def use_bundled_public_suffix_list() -> None:
    """Make `tldextract.extract` use the bundled snapshot: no network fetch, no cache writes. Idempotent."""
    import tldextract.tldextract as tx

    with _LOCK:
        if getattr(tx.TLD_EXTRACTOR, _MARK, False):
            return
        extractor = tx.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
        extractor("example.com")  # parse the snapshot now, once, rather than on the first email
        setattr(extractor, _MARK, True)
        tx.TLD_EXTRACTOR = extractor


def uses_bundled_public_suffix_list() -> bool:
    """True once `use_bundled_public_suffix_list()` has run in this process."""
    import tldextract.tldextract as tx

    return bool(getattr(tx.TLD_EXTRACTOR, _MARK, False))
