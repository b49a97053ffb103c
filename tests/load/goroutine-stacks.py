# goroutine-stacks.py: a gdb script that sums a live Go process's goroutine
# stacks by the function each goroutine started in, and lists how many
# goroutines have which stack size and how much of it they use (in 512-byte
# steps). Go's own figures (/metrics: go_memstats_stack_inuse_bytes) give
# only the total. Used for docs/performance.md ("Issue 13 fifth pass").
#
#   gdb -p PID -batch -ex 'source tests/load/goroutine-stacks.py'
#
# The process stops while gdb reads it (a second or two at 13,000
# goroutines). Needs the binary's DWARF: go build keeps it unless -w
# (`make build` strips it; docs/testing.md builds with plain `go build`).
import gdb
from collections import Counter

allgs = gdb.parse_and_eval("'runtime.allgs'")
total, count, shapes = Counter(), Counter(), Counter()
for i in range(int(allgs['len'])):
    g = allgs['array'][i]
    if int(g['atomicstatus']['value']) == 6:  # _Gdead
        continue
    hi, lo, sp = int(g['stack']['hi']), int(g['stack']['lo']), int(g['sched']['sp'])
    fn = gdb.execute("info symbol %d" % int(g['startpc']), to_string=True).split(' in ')[0].strip()
    total[fn] += hi - lo
    count[fn] += 1
    shapes[(fn, hi - lo, ((hi - sp) // 512) * 512 if sp else -1)] += 1
print("stack MB  goroutines  started in")
for fn, b in total.most_common(12):
    print("%8.1f  %10d  %s" % (b / 1048576, count[fn], fn))
print("\ngoroutines  stack bytes  in use (512-byte steps)  started in")
for (fn, size, used), n in sorted(shapes.items(), key=lambda x: -x[1])[:20]:
    print("%10d  %11d  %23d  %s" % (n, size, used, fn))
