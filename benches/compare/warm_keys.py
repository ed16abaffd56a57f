#!/usr/bin/env python3
"""Warm /k/00000../k/NNNNN through a target over one keep-alive connection,
then re-read them and report the cache hits seen in X-Cache (nginx and Varnish
here) or Cache-Status (RFC 9211, relais), if the target sets either.
Prints: WARM port=.. keys=.. pass2_hits=..|n/a errors=..
"""
import http.client
import sys

port = int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
host = "127.0.0.1"


def was_hit(r):
    xc = r.getheader("X-Cache")
    if xc is not None:
        return xc.upper().startswith("HIT")
    cs = r.getheader("Cache-Status")
    if cs is not None:  # the last cache's entry: "relais; hit" or "relais; fwd=miss; ..."
        return "hit" in [p.strip().lower() for p in cs.split(",")[-1].split(";")[1:]]
    return None


def sweep():
    conn = http.client.HTTPConnection(host, port, timeout=10)
    hits = seen = errors = 0
    for i in range(n):
        path = "/k/%05d" % i
        for attempt in range(2):
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        else:
            errors += 1
            continue
        if r.status != 200:
            errors += 1
        hit = was_hit(r)
        if hit is not None:
            seen += 1
            hits += hit
    conn.close()
    return hits, seen, errors


sweep()
hits, seen, errors = sweep()
print("WARM port=%d keys=%d pass2_hits=%s errors=%d" % (port, n, ("%d" % hits) if seen else "n/a", errors))
