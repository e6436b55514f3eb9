package kernels

import (
	"errors"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
)

func TestLinearFromWorkload(t *testing.T) {
	m, err := hf.ImportPreset("llama-tiny", hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := ir.Tasks(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, task := range tasks {
		if task.Workload.Group[0] != "llmir.linear" {
			continue
		}
		k, err := FromWorkload(task.Workload)
		if err != nil {
			t.Fatal(err)
		}
		l := k.(Linear)
		in := task.Workload.Inputs
		if l.K != in[1].Shape[1] || l.N != in[1].Shape[0] || l.M != rows(in[0]) {
			t.Errorf("%s: kernel %s", task.Workload.Name(), l.Name())
		}
		if k.Workload().Key() != task.Workload.Key() {
			t.Errorf("%s: kernel reports another workload", task.Workload.Name())
		}
		n++
	}
	if n == 0 {
		t.Fatal("llama-tiny has no linear workloads")
	}
	bad := tasks[0].Workload
	bad.Group = []string{"llmir.no_such_op"}
	if _, err := FromWorkload(bad); !errors.Is(err, ErrNoKernel) {
		t.Errorf("unknown group: %v", err)
	}
}
