package rollout

import "testing"

func TestCheckUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		force          bool
		err            string
	}{
		{name: "a patch release", from: "v1.31.2+k3s1", to: "v1.31.4+k3s1"},
		{name: "a k3s revision", from: "v1.31.2+k3s1", to: "v1.31.2+k3s2"},
		{name: "the next minor version", from: "v1.30.4+k3s1", to: "v1.31.0+k3s1"},
		{name: "skipping one minor version", from: "v1.30.4+k3s1", to: "v1.32.0+k3s1",
			err: "refusing to upgrade k3s from v1.30.4+k3s1 to v1.32.0+k3s1: it skips minor version v1.31; upgrade one minor version at a time (first to v1.31)"},
		{name: "a downgrade", from: "v1.31.2+k3s2", to: "v1.31.2+k3s1",
			err: "refusing to downgrade k3s from v1.31.2+k3s2 to v1.31.2+k3s1; pass --force to do it anyway (etcd and API data may not go back)"},
		{name: "a forced downgrade", from: "v1.31.2+k3s1", to: "v1.30.4+k3s1", force: true},
		{name: "a major version", from: "v1.31.2+k3s1", to: "v2.0.0+k3s1",
			err: "refusing to change k3s from v1.31.2+k3s1 to v2.0.0+k3s1: a major version change is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, err := ParseVersion(tc.from)
			if err != nil {
				t.Fatal(err)
			}
			to, err := ParseVersion(tc.to)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckUpgrade(from, to, tc.force)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.err {
				t.Errorf("got %q, want %q", got, tc.err)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
		err  string
	}{
		{in: "v1.31.4+k3s1", want: Version{Major: 1, Minor: 31, Patch: 4, Rev: 1}},
		{in: "1.31.4", want: Version{Major: 1, Minor: 31, Patch: 4}},
		{in: "v1.31", err: `"v1.31" is not a k3s version (like v1.31.4+k3s1)`},
		{in: "v1.31.4+rke2r1", err: `"v1.31.4+rke2r1" is not a k3s version (like v1.31.4+k3s1)`},
		{in: "v1.31.x+k3s1", err: `"v1.31.x+k3s1" is not a k3s version (like v1.31.4+k3s1)`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			v, err := ParseVersion(tc.in)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Errorf("error: got %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v.raw = ""
			if v != tc.want {
				t.Errorf("got %+v, want %+v", v, tc.want)
			}
		})
	}
}
