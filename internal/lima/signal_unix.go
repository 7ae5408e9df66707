package lima

import "syscall"

// sigZero probes a process without signalling it.
const sigZero = syscall.Signal(0)
