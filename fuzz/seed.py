#!/usr/bin/env python3
"""Builds the fuzz corpora's seeds: fuzz/corpus/<target>/ from the committed hand-written seeds
(fuzz/seeds/<target>/), the project's test samples (tests/data/) and, when present, the
recorded GT 4.0 messages (SHARED/interop-recorded/) and the GridFTP reference transcript
(SHARED/reference/gridftp-session.txt). Nothing here is committed into the corpora: they are
gitignored and rebuilt on every run (files libFuzzer added stay).

usage: seed.py REPO SHARED
"""
import hashlib
import os
import re
import sys

repo, shared = sys.argv[1], sys.argv[2]
fuzz = os.path.join(repo, "fuzz")
corpus = os.path.join(fuzz, "corpus")


def put(target, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def files(root, suffixes):
    if not os.path.isdir(root):
        return
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(suffixes):
                with open(os.path.join(dirpath, n), "rb") as f:
                    yield n, f.read()


def http_body(raw):
    i = raw.find(b"\r\n\r\n")
    return raw[i + 4:] if i >= 0 else None


# Hand-written seeds, per target.
seeds = os.path.join(fuzz, "seeds")
for target in sorted(os.listdir(seeds)) if os.path.isdir(seeds) else []:
    for _, data in files(os.path.join(seeds, target), ("",)):
        put(target, data)

# Recorded envelopes: requests and responses.
recorded = os.path.join(shared, "interop-recorded")
envelopes = []
for name, data in files(recorded, (".xml", ".http")):
    body = http_body(data) if name.endswith(".http") else data
    if body and body.lstrip().startswith(b"<"):
        envelopes.append(body)
for body in envelopes:
    put("xml", body)
    put("envelope", body)
    put("wssec", b"\x00" + body)
    put("wssec", b"\x01" + body)
    put("wssec", b"\x02" + body + b"\x00\x00\x40<\x01\x00 ")
    for q in re.findall(rb"<QueryExpression[^>]*>([^<]*)</QueryExpression>", body):
        put("xpath", q.replace(b"&lt;", b"<").replace(b"&gt;", b">").replace(b"&amp;", b"&"))

# Workspace descriptions (the test samples).
for _, data in files(os.path.join(repo, "tests", "data"), (".xml",)):
    put("description", data)
    put("xml", data)

# GridFTP replies from the reference transcript: each session's server lines, in order.
transcript = os.path.join(shared, "reference", "gridftp-session.txt")
if os.path.isfile(transcript):
    with open(transcript, "rb") as f:
        text = f.read()
    for session in re.split(rb"\n={20,}\n", text):
        lines = [l[3:] for l in session.splitlines() if l.startswith(b"S< ")]
        if lines:
            put("gridftp_reply", b"\r\n".join(lines) + b"\r\n")

# A certificate for the DER target's X.509 mode (prefix byte 3): made here with the openssl
# tool, with a proxyCertInfo and a VOMS-like extension, never committed.
try:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "ext.cnf")
        with open(conf, "w") as f:
            f.write("[req]\ndistinguished_name=dn\n[dn]\n[ext]\nbasicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "1.3.6.1.5.5.7.1.14=critical,DER:300C300A06082B06010505071501\n"
                    "1.3.6.1.4.1.8005.100.100.5=DER:3006300430020500\n")
        out = os.path.join(tmp, "c.der")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        os.path.join(tmp, "k.pem"), "-subj", "/O=Grid/OU=fuzz/CN=seed/CN=1234",
                        "-days", "1", "-config", conf, "-extensions", "ext", "-outform", "DER",
                        "-out", out], check=True, capture_output=True)
        with open(out, "rb") as f:
            der = f.read()
        put("der", b"\x03" + der)
        put("der", b"\x00" + der)
        put("proxy_chain", b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02" + der)
except (OSError, subprocess.CalledProcessError) as e:
    print("seed.py: no certificate seed (%s)" % e, file=sys.stderr)
