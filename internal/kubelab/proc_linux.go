package kubelab

import "syscall"

// sysProcAttr kills a lab process when the process that started it dies, so a crashed or
// killed demo leaves no API servers behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
