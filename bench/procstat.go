package bench

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CPUTime returns the user+system CPU time a process has used so far,
// from utime and stime in /proc/<pid>/stat (clock ticks).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses: the
	// fields we want follow the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / time.Duration(ClockTicks()), nil
}

var clockTicks = sync.OnceValue(func() int64 {
	// AT_CLKTCK (17) from the auxiliary vector: what sysconf(_SC_CLK_TCK)
	// returns, without cgo.
	b, err := os.ReadFile("/proc/self/auxv")
	if err == nil {
		for i := 0; i+16 <= len(b); i += 16 {
			k := binary.NativeEndian.Uint64(b[i:])
			v := binary.NativeEndian.Uint64(b[i+8:])
			if k == 0 {
				break
			}
			if k == 17 && v > 0 {
				return int64(v)
			}
		}
	}
	return 100
})

// ClockTicks is the kernel's USER_HZ (clock ticks per second in
// /proc/<pid>/stat), normally 100.
func ClockTicks() int64 { return clockTicks() }

// MachineBusy returns the CPU time all CPUs spent busy so far (user,
// nice, system, irq, softirq, steal from /proc/stat).
func MachineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / time.Duration(ClockTicks()), nil
}
