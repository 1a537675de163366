#!/usr/bin/env python3
"""Fidelity of a tree copy (issue 20): copies a tree with xfer, `rsync -a` (to a
daemon) and `tar c | nc | tar x`, all over loopback into local targets, and reports
each one's time and, property by property, how many entries of the copy differ from
the source. An independent checker: it shares no code with xfer, and looks at both
trees from outside with lstat (never following a link).

    python3 benches/fidelity.py [--source /usr/share] [--xfer target/release/xfer]
                                [--extras] [--rounds 1] [--scratch DIR]

Properties, for entries present on both sides: type; bytes (content, BLAKE2b);
mode & 0o7777; mtime in nanoseconds (directories included); owner and group; link
target; hard-link group (the other paths of the tree that share the inode); allocated
bytes of regular files (st_blocks * 512, differing by more than 4 KiB); extended attributes (names and
values). `missing`: entries of the source that did not arrive; `extra`: entries of
the copy that are not in the source (for xfer, e.g., a temporary left behind).

--extras adds a small synthetic tree beside the source's copy, made to hold what
/usr/share lacks: hard links, a sparse file, setuid/setgid/sticky modes, nanosecond
and pre-1970 times, relative, absolute and dangling links, a fifo, user xattrs,
a name that is not UTF-8 and, as root, a file owned by another user.

xfer is run as a user types it (`xfer send TREE` into `xfer recv --dir`), and again
with `-a` if its `send --help` lists `--archive`. Nothing here asserts; it prints.
"""

import argparse
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

KEY = "fidelity check key, long enough not to warn"
PROPERTIES = ["type", "bytes", "mode", "mtime_ns", "owner", "link_target",
              "hardlink_group", "blocks", "xattrs"]
BLOCK_SLACK = 4096


# ---- the checker -----------------------------------------------------------------

def content_hash(path):
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return digest.digest()
            digest.update(block)


def xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    values = {}
    for name in names:
        try:
            values[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            values[name] = None
    return values


def snapshot(root):
    """Relative path (bytes) -> lstat result, for every entry under root (root = b"")."""
    root = os.fsencode(root)
    entries = {b"": os.lstat(root)}
    for parent, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(parent, name)
            entries[os.path.relpath(path, root)] = os.lstat(path)
    return entries


def link_groups(entries):
    """Relative path -> sorted tuple of the paths sharing its inode (nlink > 1)."""
    by_inode = {}
    for rel, st in entries.items():
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(rel)
    groups = {}
    for paths in by_inode.values():
        group = tuple(sorted(paths))
        for rel in paths:
            groups[rel] = group
    return groups


def compare(source, copy):
    """Counts per property, and missing/extra entries."""
    src, dst = snapshot(source), snapshot(copy)
    src_groups, dst_groups = link_groups(src), link_groups(dst)
    counts = {name: 0 for name in PROPERTIES}
    counts["missing"] = sum(1 for rel in src if rel not in dst)
    counts["extra"] = sum(1 for rel in dst if rel not in src)
    examples = {}

    def differs(name, rel):
        counts[name] += 1
        examples.setdefault(name, rel)

    for rel, a in src.items():
        b = dst.get(rel)
        if b is None:
            continue
        pa, pb = os.path.join(os.fsencode(source), rel), os.path.join(os.fsencode(copy), rel)
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            differs("type", rel)
            continue
        if stat.S_ISREG(a.st_mode):
            if a.st_size != b.st_size or content_hash(pa) != content_hash(pb):
                differs("bytes", rel)
        if stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode) and not stat.S_ISLNK(a.st_mode):
            differs("mode", rel)
        if a.st_mtime_ns != b.st_mtime_ns:
            differs("mtime_ns", rel)
        if (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
            differs("owner", rel)
        if stat.S_ISLNK(a.st_mode) and os.readlink(pa) != os.readlink(pb):
            differs("link_target", rel)
        if src_groups.get(rel) != dst_groups.get(rel):
            differs("hardlink_group", rel)
        # Regular files only: a directory's blocks depend on its history, not the copy.
        if stat.S_ISREG(a.st_mode) and abs(a.st_blocks - b.st_blocks) * 512 > BLOCK_SLACK:
            differs("blocks", rel)
        if xattrs(pa) != xattrs(pb):
            differs("xattrs", rel)
    return counts, examples, len(src)


# ---- the synthetic extras ----------------------------------------------------------

def make_extras(root):
    """What /usr/share lacks; returns root."""
    os.makedirs(root)
    def write(name, data=b"x"):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(data)
        return path
    a = write("hard-a", b"shared inode\n")
    os.link(a, os.path.join(root, "hard-b"))
    sparse = os.path.join(root, "sparse")
    with open(sparse, "wb") as f:
        f.seek(64 << 20)
        f.write(b"data in the middle of holes")
        f.truncate(128 << 20)
    os.chmod(write("setuid", b"#!/bin/sh\n"), 0o4755)
    os.mkdir(os.path.join(root, "setgid-dir"), 0o2775)
    os.chmod(os.path.join(root, "setgid-dir"), 0o2775)
    os.mkdir(os.path.join(root, "sticky-dir"))
    os.chmod(os.path.join(root, "sticky-dir"), 0o1777)
    os.utime(write("nanoseconds"), ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    os.utime(write("before-1970"), ns=(-1_000_000_000_000_000_000, -1_000_000_000_000_000_000))
    os.symlink("hard-a", os.path.join(root, "link-relative"))
    os.symlink("/etc/hostname", os.path.join(root, "link-absolute"))
    os.symlink("nowhere/at/all", os.path.join(root, "link-dangling"))
    os.mkfifo(os.path.join(root, "fifo"))
    x = write("with-xattr", b"attributes\n")
    try:
        os.setxattr(x, "user.fidelity", b"kept?")
    except OSError as err:
        print(f"(extras: no user xattr: {err})")
    write(b"not-utf8-\xff\xfe".decode("utf-8", "surrogateescape"))
    if os.geteuid() == 0:
        os.chown(write("owned-by-1234"), 1234, 1234)
    return root


# ---- the copiers -------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, limit=10.0):
    started = time.time()
    while time.time() - started < limit:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nobody listens on {port}")


def run_xfer(xfer, sources, out, send_args):
    env = dict(os.environ, XFER_KEY=KEY)
    recv = subprocess.Popen([xfer, "recv", "--listen", "127.0.0.1:0", "--dir", out],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    port = None
    for line in recv.stderr:
        if line.startswith("listening on "):
            port = int(line.strip().rsplit(":", 1)[1])
            break
    if port is None:
        raise RuntimeError("xfer recv did not say where it listens")
    started = time.time()
    sent = subprocess.run([xfer, "send", "-q", *send_args, *sources, f"127.0.0.1:{port}"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rest = recv.stderr.read()
    recv.wait()
    seconds = time.time() - started
    note = f"send exit {sent.returncode}, recv exit {recv.returncode}"
    warnings = [l for l in (sent.stderr + rest).splitlines() if l.strip()]
    if warnings:
        note += f"; {len(warnings)} lines on stderr, first: {warnings[0][:100]}"
    return seconds, note


def run_rsync(sources, out, scratch, args):
    port = free_port()
    conf = os.path.join(scratch, "rsyncd.conf")
    with open(conf, "w") as f:
        # Without a chroot the daemon sanitizes link targets (an absolute one loses
        # its leading slash); as root it can have one, and then keeps them as they are.
        chroot = "yes" if os.geteuid() == 0 else "no"
        f.write(f"use chroot = {chroot}\nuid = {os.getuid()}\ngid = {os.getgid()}\n"
                f"munge symlinks = no\n[fidelity]\npath = {out}\nread only = no\n")
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", "--address=127.0.0.1",
                               f"--port={port}", f"--config={conf}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    started = time.time()
    client = subprocess.run(["rsync", *args, *sources, f"rsync://127.0.0.1:{port}/fidelity/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children = f"/proc/{daemon.pid}/task/{daemon.pid}/children"
    while os.path.exists(children) and open(children).read().strip():
        time.sleep(0.005)
    seconds = time.time() - started
    daemon.kill()
    daemon.wait()
    lines = [l for l in client.stderr.splitlines() if l.strip()]
    note = f"exit {client.returncode}"
    if lines:
        note += f"; {len(lines)} lines on stderr, first: {lines[0][:100]}"
    return seconds, note


def run_tar(sources, out):
    port = free_port()
    recv = subprocess.Popen(f"nc -l 127.0.0.1 {port} | tar x -C {out}", shell=True,
                            stderr=subprocess.PIPE, text=True)
    wait_for_port_listening(port)
    started = time.time()
    parts = " ".join(f"-C {os.path.dirname(s)} {os.path.basename(s)}" for s in sources)
    send = subprocess.run(f"set -o pipefail; tar c {parts} | nc -N 127.0.0.1 {port}",
                          shell=True, executable="/bin/bash",
                          stderr=subprocess.PIPE, text=True)
    _, err = recv.communicate()
    seconds = time.time() - started
    lines = [l for l in (send.stderr + err).splitlines() if l.strip()]
    note = f"exit {send.returncode}/{recv.returncode}"
    if lines:
        note += f"; {len(lines)} lines on stderr, first: {lines[0][:100]}"
    return seconds, note


def wait_for_port_listening(port, limit=10.0):
    """Like wait_for_port, without connecting (nc -l serves one connection only)."""
    started = time.time()
    needle = f":{port:04X} "
    while time.time() - started < limit:
        with open("/proc/net/tcp") as f:
            if any(needle in line and " 0A " in line for line in f):
                return
        time.sleep(0.02)
    raise RuntimeError(f"nobody listens on {port}")


# ---- main --------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--source", default="/usr/share")
    parser.add_argument("--xfer", default=os.path.join(here, "..", "target", "release", "xfer"))
    parser.add_argument("--extras", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scratch", default=None)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="xfer-fidelity-", dir=args.scratch)
    try:
        sources = [os.path.abspath(args.source)]
        if args.extras:
            sources.append(make_extras(os.path.join(scratch, "extras")))
        help_text = subprocess.run([args.xfer, "send", "--help"], capture_output=True,
                                   text=True).stdout
        tools = [("xfer", lambda out: run_xfer(args.xfer, sources, out, []))]
        if "--archive" in help_text:
            tools.append(("xfer -a", lambda out: run_xfer(args.xfer, sources, out, ["-a"])))
        if shutil.which("rsync"):
            tools.append(("rsync -a", lambda out: run_rsync(sources, out, scratch, ["-a"])))
            tools.append(("rsync -aHSX", lambda out: run_rsync(sources, out, scratch, ["-aHSX"])))
        if shutil.which("nc") and shutil.which("tar"):
            tools.append(("tar | nc | tar x", lambda out: run_tar(sources, out)))
        print(f"fidelity of a copy of {', '.join(sources)} over loopback; "
              f"{args.rounds} round(s), median time; running as uid {os.geteuid()}")
        print(f"xfer: {subprocess.run([args.xfer, '--version'], capture_output=True, text=True).stdout.strip()}")
        rows = []
        for name, copy in tools:
            times, note = [], ""
            for _ in range(args.rounds):
                out = os.path.join(scratch, "out")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                subprocess.run(["sync"])
                seconds, note = copy(out)
                times.append(seconds)
            counts, examples, total = {name: 0 for name in PROPERTIES}, {}, 0
            for source in sources:
                c, e, n = compare(source, os.path.join(out, os.path.basename(source)))
                total += n
                for key, value in c.items():
                    counts[key] = counts.get(key, 0) + value
                for key, value in e.items():
                    examples.setdefault(key, value)
            times.sort()
            rows.append((name, times[len(times) // 2], counts, examples, note, total))
            shutil.rmtree(out, ignore_errors=True)
        report(rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(rows):
    columns = ["missing", "extra"] + PROPERTIES
    print(f"\nentries in the source: {rows[0][5] if rows else 0}; "
          f"counts are entries of the copy that differ")
    print(f"{'tool':<18}{'seconds':>9}" + "".join(f"{c:>15}" for c in columns))
    for name, seconds, counts, _, _, _ in rows:
        print(f"{name:<18}{seconds:>9.2f}" + "".join(f"{counts.get(c, 0):>15}" for c in columns))
    print("\nnotes and an example path per differing property:")
    for name, _, counts, examples, note, _ in rows:
        print(f"  {name}: {note}")
        for prop, rel in examples.items():
            print(f"    {prop}: {os.fsdecode(rel)}")


if __name__ == "__main__":
    sys.exit(main())
