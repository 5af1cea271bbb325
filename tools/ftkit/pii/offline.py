"""Keep presidio offline: point tldextract at its bundled public-suffix snapshot.

presidio's email recognizer calls tldextract, whose default extractor fetches the public-suffix list on a cache miss
(with no network: a stall until the timeout) and writes a cache. `use_bundled_public_suffix_list()` swaps in an
extractor that parses the snapshot shipped in the tldextract wheel: no socket, no file written. The call chain:
docs/pii.md, "`pii/offline.py`: tldextract without the network".
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
