#!/usr/bin/env python3
# Random file operations alternating between two mounts of one cell, each
# followed by a read of every name through the other mount, compared with a
# model of what the files should hold (close-to-open coherence). By hand, not
# in CI: mount the cell twice, then
#   scripts/two-node-random.py MOUNT_A/dir MOUNT_B/dir SEED ROUNDS
# (MOUNT_A/dir must exist; several seeds at once load the machine). Prints
# each divergence and a summary line; docs/TESTING.md has what it found.
import os, random, sys
A, B = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]); rounds = int(sys.argv[4])
r = random.Random(seed)
names = [f"d{d}/f{i}" for d in range(3) for i in range(6)]
model = {}  # path -> bytes
for root in (A,):
    for d in range(3): os.makedirs(f"{root}/r{seed}/d{d}", exist_ok=True)
def P(node, n): return f"{node}/r{seed}/{n}"
bad = 0
for k in range(rounds):
    node, other = (A, B) if r.random() < 0.5 else (B, A)
    n = r.choice(names); op = r.choice(["write", "write", "append", "trunc", "pwrite", "rename", "unlink", "read"])
    p = P(node, n)
    try:
        if op == "write":
            data = os.urandom(r.choice([0, 1, 100, 4096, 15000, 70000]))
            with open(p, "wb") as f: f.write(data)
            model[n] = data
        elif op == "append":
            data = os.urandom(r.randrange(1, 3000))
            with open(p, "ab") as f: f.write(data)
            model[n] = model.get(n, b"") + data
        elif op == "trunc" and n in model:
            L = r.randrange(0, len(model[n]) + 5000)
            os.truncate(p, L); m = model[n]; model[n] = m[:L] + b"\0" * max(0, L - len(m))
        elif op == "pwrite" and n in model:
            off = r.randrange(0, len(model[n]) + 100); data = os.urandom(r.randrange(1, 5000))
            fd = os.open(p, os.O_WRONLY); os.pwrite(fd, data, off); os.close(fd)
            m = model[n]; m = m + b"\0" * max(0, off - len(m)); model[n] = m[:off] + data + m[off + len(data):]
        elif op == "rename" and n in model:
            t = r.choice(names)
            os.rename(p, P(node, t)); model[t] = model.pop(n)
        elif op == "unlink" and n in model:
            os.unlink(p); del model[n]
    except OSError as e:
        print(f"round {k}: {op} {n} on {node}: {e}"); bad += 1
    # close-to-open: the other node sees the model now
    for m in names:
        q = P(other, m)
        try:
            got = open(q, "rb").read()
        except FileNotFoundError:
            got = None
        if got != model.get(m):
            bad += 1
            print(f"round {k} after {op} {n} on {node}: {m} on other node: got {None if got is None else len(got)} want {None if m not in model else len(model[m])}")
    if bad > 5: break
print(f"seed {seed}: {k+1} rounds, {bad} divergences")
