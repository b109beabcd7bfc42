"""The per-file CPU benchmark's readers of ``strace -c`` and ``perf stat -x ';'`` output.

Its syscall counts go into the performance notes, so a misread table would be a wrong figure.
The samples are excerpts of real outputs (strace 6.1 and perf 6.1 on Debian 12).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.per_file_cpu import parse_perf_stat, parse_strace_summary

STRACE_C = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 39.05    0.131604           9     14006           write
 21.94    0.073950          36      2006           recvfrom
 12.38    0.041730           1     23515           rt_sigaction
  9.93    0.033476          16      2062        13 openat
  1.10    0.003712           1      2000      2000 ioctl
  0.00    0.000000           0         1           execve
------ ----------- ----------- --------- --------- ----------------
100.00    0.337031           5     56562      2047 total
"""

PERF_STAT = """\
# started on Sun Dec  6 19:36:45 2026

167;;context-switches;249626291;100.00;;
60391;;raw_syscalls:sys_enter;249626291;100.00;;
18;;syscalls:sys_enter_futex;249626291;100.00;;
0;;syscalls:sys_enter_getpid;249626291;100.00;;
<not counted>;;syscalls:sys_enter_flock;0;0.00;;
2062;;syscalls:sys_enter_openat;249626291;100.00;;
"""


def test_strace_summary_rows_most_calls_first_without_the_total() -> None:
    rows = parse_strace_summary(STRACE_C)
    assert rows == [
        ("rt_sigaction", 23515, 0.041730),
        ("write", 14006, 0.131604),
        ("openat", 2062, 0.033476),
        ("recvfrom", 2006, 0.073950),
        ("ioctl", 2000, 0.003712),
        ("execve", 1, 0.0),
    ]


def test_perf_stat_counts_by_syscall_name_and_uncounted_events_left_out() -> None:
    assert parse_perf_stat(PERF_STAT) == [
        ("all", 60391),
        ("openat", 2062),
        ("context-switches", 167),
        ("futex", 18),
        ("getpid", 0),
    ]


_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True).filter(
    lambda n: n not in ("total", "syscall")
)


@given(
    st.dictionaries(
        _NAMES,
        st.tuples(
            st.integers(0, 10**9),
            st.floats(0, 1e4, allow_nan=False).map(lambda x: round(x, 6)),
            st.one_of(st.none(), st.integers(1, 10**6)),
        ),
        max_size=30,
    )
)
def test_any_strace_table_reads_back(rows: dict[str, tuple[int, float, int | None]]) -> None:
    lines = [
        "% time     seconds  usecs/call     calls    errors syscall",
        "------ ----------- ----------- --------- --------- ----------------",
    ]
    for name, (calls, seconds, errors) in rows.items():
        err = "" if errors is None else str(errors)
        lines.append(f"{0.0:6.2f} {seconds:11.6f} {0:11d} {calls:9d} {err:>9} {name}")
    lines.append("------ ----------- ----------- --------- --------- ----------------")
    lines.append(f"100.00 {0.0:11.6f} {0:11d} {sum(c for c, _, _ in rows.values()):9d} total")
    parsed = parse_strace_summary("\n".join(lines) + "\n")
    assert sorted(parsed) == sorted((n, c, s) for n, (c, s, _) in rows.items())
    assert [c for _, c, _ in parsed] == sorted((c for c, _, _ in rows.values()), reverse=True)
