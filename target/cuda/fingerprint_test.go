package cuda

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseSMI(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     SMIInfo
		err      string
	}{
		{"captured H100", readTestdata(t, "nvidia-smi-h100.txt"), SMIInfo{"NVIDIA H100 80GB HBM3", "9.0", 81559, "580.65.06"}, ""},
		{"captured H200 (the GPU machine)", readTestdata(t, "nvidia-smi-h200.txt"), SMIInfo{"NVIDIA H200", "9.0", 143771, "580.159.04"}, ""},
		{"the default table, not the query", readTestdata(t, "nvidia-smi-table.txt"), SMIInfo{}, "fields"},
		{"two GPUs: the first", "NVIDIA H200, 9.0, 143771, 580.159.04\nNVIDIA H100 80GB HBM3, 9.0, 81559, 580.159.04\n", SMIInfo{"NVIDIA H200", "9.0", 143771, "580.159.04"}, ""},
		{"leading blank line", "\n  NVIDIA A100-SXM4-40GB , 8.0 , 40960 , 535.1 \n", SMIInfo{"NVIDIA A100-SXM4-40GB", "8.0", 40960, "535.1"}, ""},
		{"empty", "", SMIInfo{}, "printed no GPU"},
		{"units left in", "NVIDIA H100, 9.0, 81559 MiB, 580.65.06", SMIInfo{}, "memory.total"},
		{"missing field", "NVIDIA H100, 9.0, 81559", SMIInfo{}, "3 fields"},
		{"old driver without compute_cap", "NVIDIA H100, [N/A], 81559, 470.1", SMIInfo{}, "compute_cap"},
		{"error text", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", SMIInfo{}, "1 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSMI(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrParse) {
					t.Fatalf("err = %v, want ErrParse containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseNVCCVersion(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{readTestdata(t, "nvcc-version-13.0.txt"), "13.0.88", ""},
		{"Cuda compilation tools, release 12.4, V12.4.131\n", "12.4.131", ""},
		{"nvcc: command not found", "", "no \"release"},
		{"Cuda compilation tools, release 12.4, V13.0.1", "", "release 12.4 but version"},
	} {
		got, err := ParseNVCCVersion(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseNVCCVersion(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseNVCCVersion(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseHarnessInfoAndProbe(t *testing.T) {
	h, err := ParseHarnessInfo("info 132 52428800 84929216512 9 0 NVIDIA H100 80GB HBM3")
	if err != nil {
		t.Fatal(err)
	}
	if h.SMs != 132 || h.L2Bytes != 50<<20 || h.CC != "9.0" || h.Name != "NVIDIA H100 80GB HBM3" {
		t.Errorf("got %+v", h)
	}
	for _, bad := range []string{"", "info 132 1 2 9 0", "info x 1 2 9 0 name", "info 132 0 2 9 0 name", "ready"} {
		if _, err := ParseHarnessInfo(bad); !errors.Is(err, ErrParse) {
			t.Errorf("ParseHarnessInfo(%q) err = %v, want ErrParse", bad, err)
		}
	}
	bw, err := ParseProbe("probe 4235.125 4321.5", 1<<30)
	if err != nil || bw.CopyGBps != 4235.125 || bw.ReadGBps != 4321.5 || bw.Bytes != 1<<30 {
		t.Errorf("ParseProbe = %+v, %v", bw, err)
	}
	for _, bad := range []string{"probe 1", "probe 0 1", "probe nan 1", "cuda_error x"} {
		if _, err := ParseProbe(bad, 1); !errors.Is(err, ErrParse) {
			t.Errorf("ParseProbe(%q) err = %v, want ErrParse", bad, err)
		}
	}
}

func TestFingerprint(t *testing.T) {
	smi, err := ParseSMI(readTestdata(t, "nvidia-smi-h100.txt"))
	if err != nil {
		t.Fatal(err)
	}
	info := HarnessInfo{SMs: 132, L2Bytes: 50 << 20, MemBytes: 80 << 30, CC: "9.0", Name: smi.Name}
	fp, err := NewFingerprint(smi, "13.0.88", info, Flags("sm_90"))
	if err != nil {
		t.Fatal(err)
	}
	d := fp.Device()
	if d.Kind != "cuda" || d.Compat != "sm_90" || len(d.Hash) != 64 || !strings.Contains(d.Name, "132 SMs") {
		t.Errorf("device %+v", d)
	}
	// The hash is a function of the fingerprint: same input, same hash;
	// another driver, another hash.
	fp2, _ := NewFingerprint(smi, "13.0.88", info, Flags("sm_90"))
	if fp2.Device().Hash != d.Hash {
		t.Error("hash not stable")
	}
	smi.Driver = "590.1"
	fp3, _ := NewFingerprint(smi, "13.0.88", info, Flags("sm_90"))
	if fp3.Device().Hash == d.Hash {
		t.Error("driver change kept the hash")
	}
	info.CC = "8.0"
	if _, err := NewFingerprint(smi, "13.0.88", info, nil); err == nil {
		t.Error("compute capability mismatch accepted")
	}
	for cc, want := range map[string]string{"9.0": "sm_90", "8.6": "sm_86", "10.0": "sm_100"} {
		if got, err := ArchOf(cc); err != nil || got != want {
			t.Errorf("ArchOf(%s) = %s, %v", cc, got, err)
		}
	}
	for _, bad := range []string{"9", "x.0", ".0"} {
		if _, err := ArchOf(bad); err == nil {
			t.Errorf("ArchOf(%q) accepted", bad)
		}
	}
}
