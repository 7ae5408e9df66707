package provision

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix8s/nix8s/internal/core"
	"github.com/nix8s/nix8s/internal/progress"
	"github.com/nix8s/nix8s/internal/remote"
	"github.com/nix8s/nix8s/internal/sshtest"
)

const (
	tokenPath      = "/var/lib/nix8s/secrets/k3s-token"
	agentTokenPath = "/var/lib/nix8s/secrets/k3s-agent-token"
)

// testCluster is the plan the core makes for cluster "t" with these servers and agents and managed tokens
// (the core's own output is tested in tests/; here it is the input).
func testCluster(n *sshtest.Net, servers, agents []string) core.Cluster {
	c := core.Cluster{Name: "t", FirstServer: servers[0], Servers: servers, Agents: agents, Members: map[string]core.Member{}}
	c.APIEndpoint = "https://" + n.Node(servers[0]).IP + ":6443"
	for _, s := range servers {
		c.Provision = append(c.Provision, []string{s})
		atf := agentTokenPath
		c.Members[s] = core.Member{Name: s, HostName: "t-" + s, Role: "server", IP: n.Node(s).IP, SSH: n.Endpoint(s),
			K3s: core.K3s{Role: "server", ClusterInit: s == servers[0], TokenFile: tokenPath, AgentTokenFile: &atf}}
	}
	if len(agents) > 0 {
		c.Provision = append(c.Provision, agents)
	}
	for _, a := range agents {
		c.Members[a] = core.Member{Name: a, HostName: "t-" + a, Role: "agent", IP: n.Node(a).IP, SSH: n.Endpoint(a),
			K3s: core.K3s{Role: "agent", TokenFile: agentTokenPath}}
	}
	return c
}

type env struct {
	net *sshtest.Net
	si  *sshtest.StandIns
	c   core.Cluster
}

func setup(t *testing.T, servers, agents []string) *env {
	n := sshtest.Start(t, append(append([]string{}, servers...), agents...)...)
	si := n.StandIns(t)
	return &env{net: n, si: si, c: testCluster(n, servers, agents)}
}

func (e *env) options(out *bytes.Buffer) Options {
	ssh := e.net.SSH()
	lines := progress.NewLines(out)
	return Options{
		Flake:        "/src/flake",
		Parallel:     2,
		Tokens:       &Tokens{Token: "server-secret", AgentToken: "agent-secret"},
		WaitTimeout:  5 * time.Second,
		WaitInterval: 50 * time.Millisecond,
		Runner:       ssh,
		Installer:    &NixosAnywhere{Program: filepath.Join(e.si.LocalBin, "nixos-anywhere"), SSH: ssh, Progress: lines, Timeout: time.Minute},
		Readiness:    SSHReadiness{Runner: ssh},
		Deliverer: &Pinned{SSH: ssh, WaitTimeout: 5 * time.Second, WaitInterval: 50 * time.Millisecond,
			KeyFrom: InstalledKeyFrom, Record: true, Log: Log(lines)},
		Progress: lines,
	}
}

// span is when the stand-in ran for a host.
type span struct{ start, end float64 }

func spans(t *testing.T, log []string) map[string]span {
	s := map[string]span{}
	for _, l := range log {
		f := strings.Fields(l)
		if len(f) != 3 || (f[0] != "start" && f[0] != "end" && f[0] != "fail") {
			continue
		}
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		sp := s[f[1]]
		if f[0] == "start" {
			sp.start = v
		} else {
			sp.end = v
		}
		s[f[1]] = sp
	}
	return s
}

func statuses(r *Report) string {
	var b []string
	for _, m := range r.Members {
		b = append(b, m.Name+"="+string(m.Status))
	}
	return strings.Join(b, " ")
}

// maxConcurrent is the most spans that overlap at one moment.
func maxConcurrent(ss []span) int {
	type ev struct {
		t float64
		d int
	}
	var evs []ev
	for _, s := range ss {
		evs = append(evs, ev{s.start, 1}, ev{s.end, -1})
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].t < evs[j].t || evs[i].t == evs[j].t && evs[i].d < evs[j].d })
	cur, max := 0, 0
	for _, e := range evs {
		cur += e.d
		if cur > max {
			max = cur
		}
	}
	return max
}

func TestInstallWavesAndTokens(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"s1", "s2", "s3"}, []string{"a1", "a2", "a3", "a4", "a5"})
	// --parallel 2: the agents' installs wait for each other in twos, so the overlap below is by construction.
	e.si.SetTogether(t, 2, "t-a1", "t-a2", "t-a3", "t-a4", "t-a5")
	extra := t.TempDir()
	os.MkdirAll(filepath.Join(extra, "t-a1", "var", "lib", "sops-nix"), 0o700)
	os.WriteFile(filepath.Join(extra, "t-a1", "var", "lib", "sops-nix", "key.txt"), []byte("AGE-SECRET-KEY-1"), 0o600)
	var progress bytes.Buffer
	o := e.options(&progress)
	o.ExtraFiles = extra
	r, err := Install(context.Background(), e.c, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	want := "s1=done s2=done s3=done a1=done a2=done a3=done a4=done a5=done"
	if got := statuses(r); got != want {
		t.Errorf("report %s, want %s", got, want)
	}
	sp := spans(t, e.si.Log(t))
	// Servers one at a time, in wave order, each finished before the next starts; agents after all servers.
	order := []string{"t-s1", "t-s2", "t-s3"}
	for i := 1; i < len(order); i++ {
		if sp[order[i]].start < sp[order[i-1]].end {
			t.Errorf("%s started before %s ended: %+v", order[i], order[i-1], sp)
		}
	}
	var agents []span
	for _, a := range e.c.Agents {
		s := sp["t-"+a]
		if s.start < sp["t-s3"].end {
			t.Errorf("agent %s started before the last server ended", a)
		}
		agents = append(agents, s)
	}
	if got := maxConcurrent(agents); got != 2 {
		t.Errorf("agents ran %d at a time, want 2 (--parallel 2)", got)
	}
	// The install carries each member's new host key (private 0600, public 0644) and a1's extra file; never
	// a token.
	hostKeys := map[string]string{}
	for _, m := range r.Members {
		hostKeys["t-"+m.Name] = m.HostKey
	}
	var files, wantFiles []string
	for _, l := range e.si.Log(t) {
		if strings.HasPrefix(l, "file ") {
			files = append(files, strings.TrimPrefix(l, "file "))
		}
	}
	for _, h := range []string{"t-a1", "t-a2", "t-a3", "t-a4", "t-a5", "t-s1", "t-s2", "t-s3"} {
		wantFiles = append(wantFiles, h+" /etc/ssh/ssh_host_ed25519_key 600 -----BEGIN OPENSSH PRIVATE KEY-----",
			h+" /etc/ssh/ssh_host_ed25519_key.pub 644 "+hostKeys[h])
		if h == "t-a1" {
			wantFiles = append(wantFiles, "t-a1 /var/lib/sops-nix/key.txt 600 AGE-SECRET-KEY-1")
		}
	}
	sort.Strings(files)
	if strings.Join(files, "\n") != strings.Join(wantFiles, "\n") {
		t.Errorf("files of the installs:\n%s\nwant:\n%s", strings.Join(files, "\n"), strings.Join(wantFiles, "\n"))
	}
	// Each node serves the key its install was given, and that key is now the node's in known_hosts.
	known, _ := os.ReadFile(e.net.KnownHostsFile)
	for _, m := range r.Members {
		node := e.net.Node(m.Name)
		if err := remote.CheckHostKey(m.HostKey); err != nil {
			t.Errorf("%s: reported host key %q: %v", m.Name, m.HostKey, err)
		}
		if got := node.HostKey(t); got != m.HostKey {
			t.Errorf("%s serves %s, the report says %s", m.Name, got, m.HostKey)
		}
		if !strings.Contains(string(known), node.IP+" "+m.HostKey+"\n") || strings.Count(string(known), node.IP+" ") != 1 {
			t.Errorf("known_hosts does not hold %s's new key alone:\n%s", m.Name, known)
		}
	}
	// The token files came after the install, over ssh pinned to that key: servers get both tokens, agents
	// only the agent token, all mode 0600 in a 0700 directory.
	for _, m := range r.Members {
		node := e.net.Node(m.Name)
		want := "600 server-secret\n600 agent-secret\n700\n"
		if m.Role == "agent" {
			want = "absent\n600 agent-secret\n700\n"
		}
		got := node.Exec(t, "if test -e "+tokenPath+"; then echo $(stat -c %a "+tokenPath+") $(cat "+tokenPath+"); else echo absent; fi; "+
			"echo $(stat -c %a "+agentTokenPath+") $(cat "+agentTokenPath+"); stat -c %a /var/lib/nix8s/secrets")
		if got != want {
			t.Errorf("%s's token files: %q, want %q", m.Name, got, want)
		}
	}
	if !strings.Contains(progress.String(), "nix8s: t-s2: waiting for ssh on "+e.net.Node("s2").IP+" with the host key its install was given ("+Fingerprint(hostKeys["t-s2"])+")\n") {
		t.Errorf("progress does not say which key the delivery waits for:\n%s", progress.String())
	}
	if got := e.net.Node("a1").Exec(t, "stat -c %a /var /var/lib /etc/ssh"); got != "755\n755\n755\n" {
		t.Errorf("install changed the modes of /var, /var/lib, /etc/ssh on the node: %q", got)
	}
	if !strings.Contains(progress.String(), "[t-a3] installing t-a3\n") {
		t.Errorf("nixos-anywhere's output is not on the progress stream with its host prefix:\n%s", progress.String())
	}
	if args := grep(e.si.Log(t), "args t-s1 "); len(args) != 1 || !strings.HasPrefix(args[0], "args t-s1 --flake /src/flake#t-s1 --extra-files ") ||
		!strings.HasSuffix(args[0], " --target-host root@"+e.net.Node("s1").IP+" -i "+e.net.KeyFile+
			" --ssh-option StrictHostKeyChecking=yes --ssh-option UserKnownHostsFile="+e.net.KnownHostsFile+" --ssh-option UpdateHostKeys=no") {
		t.Errorf("nixos-anywhere arguments for s1: %q", args)
	}

	t.Run("installed members are skipped", func(t *testing.T) {
		before := len(grep(e.si.Log(t), "start "))
		r, err := Install(context.Background(), e.c, e.options(&bytes.Buffer{}))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := statuses(r), "s1=skipped s2=skipped s3=skipped a1=skipped a2=skipped a3=skipped a4=skipped a5=skipped"; got != want {
			t.Errorf("report %s, want %s", got, want)
		}
		if after := len(grep(e.si.Log(t), "start ")); after != before {
			t.Errorf("nixos-anywhere ran %d times on installed members", after-before)
		}
	})
	t.Run("reinstall installs anyway, only the members named", func(t *testing.T) {
		o := e.options(&bytes.Buffer{})
		o.Reinstall = true
		o.Members = []string{"a2", "s2"}
		before := len(grep(e.si.Log(t), "start "))
		r, err := Install(context.Background(), e.c, o)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := statuses(r), "s2=done a2=done"; got != want {
			t.Errorf("report %s, want %s", got, want)
		}
		if got := e.si.Log(t)[0:]; len(grep(got, "start ")) != before+2 {
			t.Errorf("want 2 more installs")
		}
	})
}

func grep(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func TestInstallStopsAtFirstFailure(t *testing.T) {
	tests := []struct {
		name     string
		fail     string
		notReady string
		parallel int
		want     string
		wantErr  string
	}{
		{name: "a server fails", fail: "t-s2",
			want:    "s1=done s2=failed a1=not-started a2=not-started a3=not-started",
			wantErr: "installing t-s2: nixos-anywhere exited with code 1: nixos-anywhere stand-in: failing for t-s2 as the test asked"},
		{name: "an agent fails, no further agent starts", fail: "t-a2", parallel: 1,
			want:    "s1=done s2=done a1=done a2=failed a3=not-started",
			wantErr: "installing t-a2: nixos-anywhere exited with code 1: nixos-anywhere stand-in: failing for t-a2 as the test asked"},
		{name: "the first server's API never gets ready", notReady: "t-s1",
			want:    "s1=failed s2=not-started a1=not-started a2=not-started a3=not-started",
			wantErr: "t-s1: timed out after 4s waiting for the API to answer /readyz; last answer: t-s1: \"k3s kubectl get --raw /readyz\" exited with code 1: The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?"},
		{name: "a joining server never becomes a Ready node", notReady: "t-s2",
			want:    "s1=done s2=failed a1=not-started a2=not-started a3=not-started",
			wantErr: "t-s2: timed out after 4s waiting for it to be a Ready node; last answer: node t-s2 is not Ready (Ready=False)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each case has its own nodes
			e := setup(t, []string{"s1", "s2"}, []string{"a1", "a2", "a3"})
			if tt.fail != "" {
				e.si.SetFail(t, tt.fail)
			}
			if tt.notReady != "" {
				e.si.SetNotReady(t, tt.notReady)
			}
			var progress bytes.Buffer
			o := e.options(&progress)
			// Long enough for the members that do get ready on a loaded machine, short for the test.
			o.WaitTimeout = 4 * time.Second
			if tt.parallel > 0 {
				o.Parallel = tt.parallel
			}
			r, err := Install(context.Background(), e.c, o)
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("error:\n%v\nwant:\n%s", err, tt.wantErr)
			}
			if got := statuses(r); got != tt.want {
				t.Errorf("report %s, want %s\n%s", got, tt.want, progress.String())
			}
		})
	}
}

func TestInstallBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"s1"}, []string{"a1"})
	t.Run("unknown member", func(t *testing.T) {
		o := e.options(&bytes.Buffer{})
		o.Members = []string{"a1", "a9", "zz"}
		_, err := Install(context.Background(), e.c, o)
		want := `cluster "t" has no member "a9", "zz"; members: "a1", "s1"`
		if err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
	})
	t.Run("relative token path", func(t *testing.T) {
		c := testCluster(e.net, []string{"s1"}, []string{"a1"})
		m := c.Members["s1"]
		m.K3s.TokenFile = "secrets/k3s-token"
		c.Members["s1"] = m
		_, err := Install(context.Background(), c, e.options(&bytes.Buffer{}))
		want := `clusters.t.members.s1: token file "secrets/k3s-token" must be an absolute, clean path`
		if err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
	})
	t.Run("unreachable host", func(t *testing.T) {
		e.net.Node("s1").Stop()
		r, err := Install(context.Background(), e.c, e.options(&bytes.Buffer{}))
		want := "probing t-s1: t-s1 (" + e.net.Node("s1").IP + ") is unreachable over ssh: ssh: connect to host " + e.net.Node("s1").IP + " port 22: Connection refused"
		if err == nil || err.Error() != want {
			t.Errorf("error:\n%v\nwant:\n%s", err, want)
		}
		if got := statuses(r); got != "s1=failed a1=not-started" {
			t.Errorf("report %s", got)
		}
		if len(e.si.Log(t)) != 0 {
			t.Errorf("nixos-anywhere ran: %q", e.si.Log(t))
		}
	})
}

func TestDryRun(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"s1", "s2"}, []string{"a1"})
	o := e.options(&bytes.Buffer{})
	o.DryRun = true
	e.net.Node("s1").Stop() // a dry run touches no machine
	r, err := Install(context.Background(), e.c, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(r); got != "s1=planned s2=planned a1=planned" {
		t.Errorf("report %s", got)
	}
	ip := e.net.Node("s2").IP
	want := []string{
		"probe root@" + ip + " over ssh: skip when it already runs NixOS as t-s2",
		"generate an ed25519 host key for the installed system, /etc/ssh/ssh_host_ed25519_key",
		"nixos-anywhere --flake /src/flake#t-s2 --extra-files '<extra-files>' --target-host root@" + ip + " -i " + e.net.KeyFile +
			" --ssh-option StrictHostKeyChecking=yes --ssh-option UserKnownHostsFile=" + e.net.KnownHostsFile + " --ssh-option UpdateHostKeys=no",
		"  its ssh accepts only host keys in " + e.net.KnownHostsFile + " (StrictHostKeyChecking=yes), before kexec and after",
		"  copy /etc/ssh/ssh_host_ed25519_key (hostKey) with mode 0600",
		"  copy /etc/ssh/ssh_host_ed25519_key.pub (hostKey.pub) with mode 0644",
		"wait for ssh with the installed system's host key alone",
		"  deliver " + tokenPath + " (token) with mode 0600",
		"  deliver " + agentTokenPath + " (agentToken) with mode 0600",
		"record the installed system's host key in " + e.net.KnownHostsFile,
		"wait until t-s2 is a Ready node (at most 5s)",
	}
	if got := r.Members[1].Steps; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps of s2:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(e.si.Log(t)) != 0 {
		t.Errorf("a dry run ran nixos-anywhere: %q", e.si.Log(t))
	}
}

func TestTokenFilesWithoutAgentToken(t *testing.T) {
	// The user brought only a cluster token file: agents then join with the cluster token (k3s needs one).
	c := core.Cluster{Name: "t", Servers: []string{"s"}, Members: map[string]core.Member{
		"s": {Role: "server", K3s: core.K3s{TokenFile: "/run/secrets/token"}},
		"a": {Role: "agent", K3s: core.K3s{TokenFile: "/run/secrets/token"}},
	}}
	files, err := TokenFiles(c, "a", Tokens{Token: "x", AgentToken: "y"})
	if err != nil || len(files) != 1 || files[0].Name != "token" {
		t.Errorf("files %+v, %v", files, err)
	}
}

func TestExtraFilesRefused(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "t-a", "var", "lib", "nix8s", "secrets"), 0o700)
	os.WriteFile(filepath.Join(dir, "t-a", "var", "lib", "nix8s", "secrets", "k3s-agent-token"), []byte("x"), 0o600)
	os.Symlink("/etc/shadow", filepath.Join(dir, "t-a", "link"))
	c := core.Cluster{Name: "t", Servers: []string{"s"}, FirstServer: "s", Provision: [][]string{{"s"}, {"a"}}, Members: map[string]core.Member{
		"s": {Role: "server", HostName: "t-s", K3s: core.K3s{TokenFile: "/var/lib/nix8s/secrets/k3s-token"}},
		"a": {Role: "agent", HostName: "t-a", K3s: core.K3s{TokenFile: "/var/lib/nix8s/secrets/k3s-agent-token"}},
	}}
	_, err := Install(context.Background(), c, Options{DryRun: true, ExtraFiles: dir, Tokens: &Tokens{Token: "x", AgentToken: "y"}})
	want := dir + "/t-a/link: not a regular file; extra files are copied as plain files"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
	os.Remove(filepath.Join(dir, "t-a", "link"))
	_, err = Install(context.Background(), c, Options{DryRun: true, ExtraFiles: dir, Tokens: &Tokens{Token: "x", AgentToken: "y"}})
	want = "t-a: extra file /var/lib/nix8s/secrets/k3s-agent-token would replace the token file"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

func TestExtraFilesLayout(t *testing.T) {
	dir, err := ExtraFiles([]File{{Path: "/var/lib/nix8s/secrets/k3s-token", Value: "x"}, {Path: "/var/lib/nix8s/secrets/k3s-agent-token", Value: "y"}})
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for p, want := range map[string]os.FileMode{"": 0o755, "var": 0o755, "var/lib/nix8s": 0o755, "var/lib/nix8s/secrets": 0o700, "var/lib/nix8s/secrets/k3s-token": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %o", p, fi.Mode().Perm(), err, want)
		}
	}
}

// recorder records an install's milestones: "installing" from the Installer it wraps (refuse makes it fail
// for that member before nixos-anywhere runs), "installed", "ready" and "failed" from the events.
type recorder struct {
	Installer
	mu     sync.Mutex
	calls  []string
	refuse string
}

func (r *recorder) add(s string) { r.mu.Lock(); defer r.mu.Unlock(); r.calls = append(r.calls, s) }
func (r *recorder) Install(ctx context.Context, s Step) error {
	r.add("installing " + s.Member)
	if s.Member == r.refuse {
		return errors.New("machine is locked")
	}
	return r.Installer.Install(ctx, s)
}
func (r *recorder) Report(e progress.Event) {
	switch {
	case e.Phase == string(PhaseInstall) && e.Status == progress.Done:
		r.add("installed " + e.Member)
	case e.Phase == string(PhaseReady) && e.Status == progress.Done:
		r.add("ready " + e.Member)
	case e.Status == progress.Failed && e.Final():
		r.add("failed " + e.Member + ": " + e.Err.Error())
	}
}

// observe makes r see o's install.
func (r *recorder) observe(o *Options) {
	r.Installer = o.Installer
	o.Installer = r
	o.Progress = progress.Tee(o.Progress, r)
}

func TestEventsTellEachMemberInstalledReadyOrFailed(t *testing.T) {
	t.Parallel()
	e := setup(t, []string{"s1"}, []string{"a1", "a2", "a3"})
	e.si.SetFail(t, "t-a2")
	rec := &recorder{}
	o := e.options(&bytes.Buffer{})
	o.Parallel = 1
	base := o
	rec.observe(&o)
	if _, err := Install(context.Background(), e.c, o); err == nil {
		t.Fatal("no error")
	}
	want := []string{"installing s1", "installed s1", "ready s1", "installing a1", "installed a1", "installing a2",
		"failed a2: installing t-a2: nixos-anywhere exited with code 1: nixos-anywhere stand-in: failing for t-a2 as the test asked"}
	if strings.Join(rec.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(rec.calls, "\n"), strings.Join(want, "\n"))
	}

	// An Installer that refuses stops that member before nixos-anywhere runs.
	e.si.SetFail(t)
	rec = &recorder{refuse: "a3"}
	o = base
	rec.observe(&o)
	o.Members = []string{"a3"}
	before := len(grep(e.si.Log(t), "start "))
	r, err := Install(context.Background(), e.c, o)
	if err == nil || err.Error() != "installing t-a3: machine is locked" || statuses(r) != "a3=failed" {
		t.Errorf("refused install: %v, %s", err, statuses(r))
	}
	if after := len(grep(e.si.Log(t), "start ")); after != before {
		t.Errorf("nixos-anywhere ran on a refused member")
	}
}
