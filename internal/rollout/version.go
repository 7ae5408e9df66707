package rollout

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a k3s release: v<Major>.<Minor>.<Patch>+k3s<Rev>. Kubelets of k3s report the same string as
// their kubeletVersion.
type Version struct {
	Major, Minor, Patch, Rev int
	raw                      string
}

// ParseVersion parses `v1.31.4+k3s1`; the `v` and the `+k3sN` suffix are optional (a plain Kubernetes
// version has revision 0).
func ParseVersion(s string) (Version, error) {
	v := Version{raw: s}
	rest := strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		suffix := rest[i+1:]
		rest = rest[:i]
		n, ok := strings.CutPrefix(suffix, "k3s")
		rev, err := strconv.Atoi(n)
		if !ok || err != nil || rev < 0 {
			return Version{}, fmt.Errorf("%q is not a k3s version (like v1.31.4+k3s1)", s)
		}
		v.Rev = rev
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("%q is not a k3s version (like v1.31.4+k3s1)", s)
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return Version{}, fmt.Errorf("%q is not a k3s version (like v1.31.4+k3s1)", s)
		}
		n[i] = x
	}
	v.Major, v.Minor, v.Patch = n[0], n[1], n[2]
	return v, nil
}

func (v Version) String() string { return v.raw }

// Compare returns -1, 0 or 1 as v is older than, the same as or newer than w.
func (v Version) Compare(w Version) int {
	for _, d := range [][2]int{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}, {v.Rev, w.Rev}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// CheckUpgrade refuses a version change Kubernetes does not support: a major change, a skipped minor
// version, or (without force) a downgrade.
func CheckUpgrade(from, to Version, force bool) error {
	switch {
	case from.Major != to.Major:
		return fmt.Errorf("refusing to change k3s from %s to %s: a major version change is not supported", from, to)
	case to.Minor > from.Minor+1:
		return fmt.Errorf("refusing to upgrade k3s from %s to %s: it skips minor version%s; upgrade one minor version at a time (first to v%d.%d)",
			from, to, skipped(from, to), from.Major, from.Minor+1)
	case to.Compare(from) < 0 && !force:
		return fmt.Errorf("refusing to downgrade k3s from %s to %s; pass --force to do it anyway (etcd and API data may not go back)", from, to)
	}
	return nil
}

func skipped(from, to Version) string {
	var s []string
	for m := from.Minor + 1; m < to.Minor; m++ {
		s = append(s, fmt.Sprintf("v%d.%d", from.Major, m))
	}
	if len(s) == 1 {
		return " " + s[0]
	}
	return "s " + strings.Join(s, ", ")
}
