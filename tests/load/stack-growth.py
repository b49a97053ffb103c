# stack-growth.py: a gdb script that finds which calls grow a live Go
# process's goroutine stacks to a given size. It stops on every
# runtime.copystack that grows a stack to STACK_SIZE bytes (default 8192;
# shrinks are not counted), records the goroutine's start function, how
# far down its stack the call that needed more was (bytes in use), and the
# calls that led there (frame pointers), and prints the commonest when
# gdb is interrupted. A goroutine keeps the largest stack it grew to while
# a quarter of it (less 800 bytes) is in use, so for a goroutine that
# waits a long time the deepest call it ever made is what it costs; this
# names that call. Used for docs/performance.md ("Issue 13 eighth pass"),
# beside goroutine-stacks.py (which sums stacks by start function).
#
#   hive-load --start 3 --agents 600 ... &          # once "coordinators:" is printed:
#   STACK_SIZE=8192 timeout -s INT 45 gdb -p PID -batch \
#       -ex 'source tests/load/stack-growth.py' -ex continue -ex 'python report()'
#
# linux/amd64 only (the arguments are read from registers at the
# function's entry, Go's register ABI). The process runs slowly while gdb
# is attached (every stack copy stops it once); a few hundred agents are
# enough. Needs the binary's DWARF (plain `go build`; `make build` strips).
import os
from collections import Counter

import gdb

TARGET = int(os.environ.get("STACK_SIZE", "8192"))
hits, used = Counter(), {}
inferior = gdb.selected_inferior()
g_ptr = gdb.lookup_type("runtime.g").pointer()


def word(addr):
    return int.from_bytes(inferior.read_memory(addr, 8).tobytes(), "little")


def symbol(addr):
    try:
        s = gdb.execute("info symbol %d" % addr, to_string=True)
        return s.split(" in section")[0].split(" + ")[0].strip()
    except gdb.error:
        return hex(addr)


class CopyStack(gdb.Breakpoint):
    def stop(self):
        # runtime.copystack(gp *g, newsize uintptr): AX and BX at entry.
        if int(gdb.parse_and_eval("$rbx")) != TARGET:
            return False
        g = gdb.Value(int(gdb.parse_and_eval("$rax"))).cast(g_ptr).dereference()
        hi, lo = int(g["stack"]["hi"]), int(g["stack"]["lo"])
        if hi - lo >= TARGET:  # a shrink
            return False
        pc, sp, bp = int(g["sched"]["pc"]), int(g["sched"]["sp"]), int(g["sched"]["bp"])
        frames = [symbol(pc), symbol(word(sp))]
        for _ in range(40):
            if bp == 0:
                break
            try:
                ret, bp = word(bp + 8), word(bp)
            except gdb.MemoryError:
                break
            frames.append(symbol(ret))
        key = (symbol(int(g["startpc"])), tuple(frames[:28]))
        hits[key] += 1
        used.setdefault(key, []).append(hi - sp)
        return False


CopyStack("*'runtime.copystack'")


def report():
    print("stacks grown to %d bytes, by start function and calls" % TARGET)
    for key, n in hits.most_common(12):
        start, frames = key
        u = used[key]
        print("=== %d  started in %s  bytes in use at the growth: %d-%d" % (n, start, min(u), max(u)))
        for f in frames:
            print("     ", f)
